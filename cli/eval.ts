/**
 * `cllm eval gsm8k`: greedy solve rate on GSM8K-format JSONL (the real test set or generated
 * held-out problems), with any decoder; prints accuracy and the decoder's speed, and
 * writes a per-item JSONL log.
 *
 * @module
 */

import { decoderLabel } from "../decode/decoder.ts";
import { type EvalItemResult, evaluateGsm8k, readGsm8k } from "../train/gsm8k_eval.ts";
import { CliError, numberOption, parse, required } from "./args.ts";
import { DECODER_FLAGS, DECODER_HELP, decoderFromFlags } from "./decoder_flags.ts";
import { writeTextAtomic } from "./files.ts";
import { closeModel, LOAD_FLAGS, LOAD_HELP, loadFlags, loadModelDir } from "./load.ts";
import { Progress } from "./progress.ts";

const HELP = `Usage: deno task cllm eval gsm8k --model DIR --data FILE [options]

Greedy GSM8K accuracy: each question in the GSM8K prompt format, the answer is the number after
the last "####" of the generation (cut at a following "Question"), compared as a number with the
number after the last "####" of the item's answer.

Options:
  --data FILE            JSONL with "question" and "answer" fields (GSM8K test.jsonl layout)
${DECODER_HELP}
  --limit K              evaluate the first K items (default all)
${LOAD_HELP}
  --max-new-tokens M     budget per item (default 256)
  --log FILE.jsonl       per-item results: id, question, gold, predicted, correct, tokens,
                         forwards, tokensPerForward, seconds, stopReason, output`;

/** Rewrites the log atomically every this many items, so a long run that dies keeps its results. */
const _LOG_EVERY = 20;

function _jsonl(results: readonly EvalItemResult[]): string {
  return results.map((r) => JSON.stringify(r)).join("\n") + (results.length ? "\n" : "");
}

/** Runs `eval`. */
export async function evalCommand(args: string[]): Promise<void> {
  const [what, ...rest] = args;
  if (what === "--help" || what === "-h" || what === undefined) return console.log(HELP);
  if (what !== "gsm8k") throw new CliError(`eval: unknown benchmark "${what}"; use "eval gsm8k"`);
  const v = parse("eval gsm8k", rest, {
    model: { type: "string" },
    data: { type: "string" },
    ...DECODER_FLAGS,
    limit: { type: "string" },
    "max-new-tokens": { type: "string" },
    log: { type: "string" },
    ...LOAD_FLAGS,
  });
  if (v.help) return console.log(HELP);
  const dir = required(v, "model", "eval gsm8k");
  const dataPath = required(v, "data", "eval gsm8k");
  const { decoder } = decoderFromFlags("eval gsm8k", v);
  const label = decoderLabel(decoder);
  const limit = numberOption(v, "limit", Infinity, { min: 1 });
  if (limit !== Infinity && !Number.isInteger(limit)) {
    throw new CliError(`--limit must be an integer, not ${limit}`);
  }
  const maxNewTokens = numberOption(v, "max-new-tokens", 256, { integer: true, min: 1 });
  const logPath = v.log as string | undefined;

  const items = (await readGsm8k(dataPath)).slice(0, limit);
  const p = await loadModelDir(dir, loadFlags(v));
  try {
    const progress = new Progress(`eval gsm8k (${label})`, items.length, "items");
    let correct = 0;
    const done: EvalItemResult[] = [];
    const { summary } = await evaluateGsm8k(p, items, {
      decoder,
      maxNewTokens,
      onItem: async (r, n) => {
        done.push(r);
        if (r.correct) correct++;
        progress.update(n, `acc ${correct}/${n}`);
        if (logPath && n % _LOG_EVERY === 0) await writeTextAtomic(logPath, _jsonl(done));
      },
    });
    progress.done();
    if (logPath) await writeTextAtomic(logPath, _jsonl(done));

    const pct = (100 * summary.accuracy).toFixed(1);
    console.log(`model ${dir}, data ${dataPath}, adapter ${p.gpu.adapter.description}`);
    console.log(`accuracy: ${summary.correct}/${summary.items} correct (${pct}%)`);
    const notes = [
      summary.missingPrediction ? `${summary.missingPrediction} generation(s) without a "####" number` : "",
      summary.missingGold ? `${summary.missingGold} item(s) without a gold number` : "",
      done.some((r) => r.stopReason === "context")
        ? `${done.filter((r) => r.stopReason === "context").length} prompt(s) too long for the context`
        : "",
    ].filter((s) => s);
    if (notes.length) console.log(`  (${notes.join("; ")})`);
    const tps = summary.tokensPerSecond.toFixed(1);
    const tpf = summary.tokensPerForward.toFixed(3);
    console.log(
      `decoder ${label}: ${summary.tokens} tokens in ${summary.seconds.toFixed(1)} s, ` +
        `${tps} tokens/s, ${tpf} tokens per forward ` +
        `(mean over items ${summary.meanItemTokensPerForward.toFixed(3)})`,
    );
    if (logPath) console.log(`wrote ${logPath}`);
  } finally {
    await closeModel(p);
  }
}
