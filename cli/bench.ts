/**
 * `cllm bench decode`: AR, Jacobi (and their per-readback baselines) on the same prompts in one
 * run; checks that the greedy outputs are identical; prints tokens/s, accepted tokens per forward
 * and the speedup over the fastest AR path; writes JSON and an SVG bar chart.
 *
 * @module
 */

import { decode } from "../decode/decode.ts";
import { type Decoder, decoderLabel, parseDecoder } from "../decode/decoder.ts";
import { type GenerationResult, runToEnd } from "../decode/generation.ts";
import type { ReadbackOptions } from "../decode/cadence.ts";
import { formatPrompt } from "../model/mod.ts";
import { CliError, numberOption, parse, required } from "./args.ts";
import { readPrompts, writeTextAtomic } from "./files.ts";
import { closeModel, LOAD_FLAGS, LOAD_HELP, loadFlags, loadModelDir } from "./load.ts";
import { Progress } from "./progress.ts";
import { barChart } from "./svg_chart.ts";

const DEFAULT_DECODERS = "ar;jacobi:n=16;jacobi:n=16,sliding;lookahead";

const HELP = `Usage: deno task cllm bench decode --model DIR --prompts FILE [options]

Options:
  --prompts FILE         JSONL ("question", "prompt" or "turns" field) or one prompt per line
  --limit K              use the first K prompts (default all)
  --max-new-tokens M     budget per prompt (default 128)
  --format NAME          wrap prompts in a built-in format: gsm8k, vicuna (default: as they are)
  --decoders LIST        decoders in their text form, separated by ";" (default ${DEFAULT_DECODERS});
                         e.g. "ar;jacobi:n=8,sliding;jacobi:n=16,guesses=context;lookahead:N=4,W=5,G=5"
  --readback-baselines   also run each decoder with a readback after every iteration
${LOAD_HELP}
  --out FILE.json        write the figures there, and the chart beside it as FILE.svg`;

/** One row of the bench: a decoder and its readback cadence. */
interface Row {
  /** The row's name: the decoder's label, and the cadence when not the default. */
  name: string;
  decoder: Decoder;
  readback: ReadbackOptions;
}

/** Per-row totals. */
export interface DecoderFigures {
  decoder: string;
  tokens: number;
  forwards: number;
  seconds: number;
  readbacks: number;
  tokensPerSecond: number;
  tokensPerForward: number;
  iterationsPerReadback: number;
  speedupOverFastestAr: number;
}

/** Runs `bench`. */
export async function benchCommand(args: string[]): Promise<void> {
  const [what, ...rest] = args;
  if (what === "--help" || what === "-h" || what === undefined) return console.log(HELP);
  if (what !== "decode") throw new CliError(`bench: unknown benchmark "${what}"; use "bench decode"`);
  const v = parse("bench decode", rest, {
    model: { type: "string" },
    prompts: { type: "string" },
    limit: { type: "string" },
    "max-new-tokens": { type: "string" },
    format: { type: "string" },
    decoders: { type: "string" },
    "readback-baselines": { type: "boolean" },
    out: { type: "string" },
    ...LOAD_FLAGS,
  });
  if (v.help) return console.log(HELP);
  const dir = required(v, "model", "bench decode");
  const promptsPath = required(v, "prompts", "bench decode");
  const limit = numberOption(v, "limit", Infinity, { integer: false, min: 1 });
  const maxNewTokens = numberOption(v, "max-new-tokens", 128, { integer: true, min: 1 });
  const format = v.format as string | undefined;
  const rows: Row[] = [];
  for (
    const text of ((v.decoders as string | undefined) ?? DEFAULT_DECODERS).split(";").filter((t) => t.trim())
  ) {
    let decoder: Decoder;
    try {
      decoder = parseDecoder(text);
    } catch (e) {
      throw new CliError(`bench decode: --decoders: ${(e as Error).message}`);
    }
    rows.push({ name: decoderLabel(decoder), decoder, readback: {} });
    if (v["readback-baselines"]) {
      rows.push({
        name: `${decoderLabel(decoder)}, readback every iteration`,
        decoder,
        readback: { iterationsPerReadback: 1, iterationsBehindReadback: 0 },
      });
    }
  }
  let texts = (await readPrompts(promptsPath)).slice(0, limit);
  if (format) texts = texts.map((q) => formatPrompt(format, { question: q }));

  const p = await loadModelDir(dir, loadFlags(v));
  try {
    const prompts = texts.map((t) => p.tokenizer.encode(t));
    const run = async (row: Row, prompt: number[]): Promise<GenerationResult> =>
      (await runToEnd(
        decode(p.model, prompt, row.decoder, { maxNewTokens, eosIds: p.eosIds, ...row.readback }),
      ))
        .result;
    // Warm-up: compile every pipeline outside the timed runs.
    for (const row of rows) await run(row, prompts[0].slice(0, 8));

    const outputs = new Map<string, number[][]>();
    const figures: DecoderFigures[] = [];
    const progress = new Progress("bench decode", rows.length * prompts.length, "runs");
    let done = 0;
    for (const row of rows) {
      const f = { decoder: row.name, tokens: 0, forwards: 0, seconds: 0, readbacks: 0 };
      const outs: number[][] = [];
      for (const prompt of prompts) {
        const t0 = performance.now();
        const r = await run(row, prompt);
        f.seconds += (performance.now() - t0) / 1000;
        f.tokens += r.tokens.length;
        f.forwards += r.stats.forwards;
        f.readbacks += r.stats.readbacks;
        outs.push(r.tokens);
        progress.update(++done, row.name);
      }
      outputs.set(row.name, outs);
      figures.push({
        ...f,
        tokensPerSecond: f.tokens / f.seconds,
        tokensPerForward: f.tokens / f.forwards,
        iterationsPerReadback: f.readbacks ? f.forwards / f.readbacks : 0,
        speedupOverFastestAr: 0,
      });
    }
    progress.done();
    // Greedy outputs must agree token for token.
    const greedy = rows.filter((r) =>
      !(r.decoder.kind === "ar" && (r.decoder.sampling?.temperature ?? 0) > 0)
    );
    const reference = outputs.get(greedy[0]?.name ?? "")!;
    const mismatches: string[] = [];
    for (const row of greedy) {
      outputs.get(row.name)!.forEach((out, i) => {
        if (JSON.stringify(out) !== JSON.stringify(reference[i])) {
          mismatches.push(`${row.name} on prompt ${i}`);
        }
      });
    }
    const arSpeeds = figures.filter((_, i) => rows[i].decoder.kind === "ar").map((f) => f.tokensPerSecond);
    const fastestAr = arSpeeds.length ? Math.max(...arSpeeds) : NaN;
    for (const f of figures) f.speedupOverFastestAr = f.tokensPerSecond / fastestAr;

    const width = Math.max(16, ...rows.map((r) => r.name.length));
    console.log(
      `model ${dir}, ${prompts.length} prompts, max ${maxNewTokens} new tokens, ` +
        `adapter ${p.gpu.adapter.description}`,
    );
    console.log(
      `${"decoder".padEnd(width)} ${"tokens/s".padStart(9)} ${"tok/forward".padStart(11)} ` +
        `${"iter/readback".padStart(13)} ${"speedup".padStart(8)}`,
    );
    for (const f of figures) {
      console.log(
        `${f.decoder.padEnd(width)} ${f.tokensPerSecond.toFixed(1).padStart(9)} ${
          f.tokensPerForward.toFixed(3).padStart(11)
        } ` +
          `${f.iterationsPerReadback.toFixed(1).padStart(13)} ${
            (Number.isFinite(f.speedupOverFastestAr) ? f.speedupOverFastestAr.toFixed(2) + "x" : "-")
              .padStart(8)
          }`,
      );
    }
    console.log(
      mismatches.length === 0 ? "outputs identical: yes" : `outputs identical: NO (${mismatches.join(", ")})`,
    );
    const out = v.out as string | undefined;
    if (out) {
      const summary = {
        model: dir,
        adapter: p.gpu.adapter.description,
        prompts: prompts.length,
        maxNewTokens,
        identical: mismatches.length === 0,
        decoders: figures,
      };
      await writeTextAtomic(out, JSON.stringify(summary, null, 2) + "\n");
      const svg = barChart(
        `decoding tokens/s (${p.gpu.adapter.description})`,
        figures.map((f) => ({
          label: f.decoder,
          value: f.tokensPerSecond,
          note: `${f.tokensPerSecond.toFixed(1)} tok/s, ${f.tokensPerForward.toFixed(2)} tok/fwd`,
        })),
      );
      await writeTextAtomic(out.replace(/\.json$/, "") + ".svg", svg);
      console.log(`wrote ${out}`);
    }
    if (mismatches.length > 0) throw new RangeError("Decoders disagree on greedy outputs; see above");
  } finally {
    await closeModel(p);
  }
}
