/**
 * `cllm generate`: streams a completion of a prompt to stdout.
 *
 * @module
 */

import {
  generateFromIds,
  type GenerationStats,
  type JacobiStats,
  type LookaheadStats,
} from "../decode/mod.ts";
import { renderChat } from "../model/mod.ts";
import { CliError, numberOption, parse, required } from "./args.ts";
import { DECODER_FLAGS, DECODER_HELP, decoderFromFlags } from "./decoder_flags.ts";
import { closeModel, LOAD_FLAGS, LOAD_HELP, loadFlags, loadModelDir } from "./load.ts";
import { renderJacobi } from "./show_jacobi.ts";

const HELP = `Usage: deno task cllm generate --model DIR (--prompt TEXT | --prompt-file F) [options]

Options:
  --model DIR|ORG/NAME[@REV]
                            Hugging Face-layout model directory, or a Hub model (fetched into the HF cache)
  --prompt TEXT             the prompt
  --prompt-file F           read the prompt from a file
  --chat                    wrap the prompt as a user turn with the model's chat template
  --max-new-tokens N        new-token budget (default 128)
${DECODER_HELP}
  --show-jacobi             draw each block's Jacobi iterations after the text
${LOAD_HELP}
  --stats                   print statistics after the text
  --json                    print one JSON object {text, tokens, stats} instead of streaming`;

/** Prints statistics as an aligned table. */
export function formatStats(stats: GenerationStats | JacobiStats | LookaheadStats): string {
  const rows: [string, string][] = [
    ["decoder", stats.decoder],
    ["prompt tokens", `${stats.promptTokens}`],
    ["new tokens", `${stats.tokens}`],
    ["forward passes", `${stats.forwards}`],
    ["tokens per forward", stats.tokensPerForward.toFixed(2)],
    ["readbacks", `${stats.readbacks}`],
    ["iterations per readback", stats.iterationsPerReadback.toFixed(1)],
    ["prefill seconds", stats.prefillSeconds.toFixed(3)],
    ["decode seconds", stats.decodeSeconds.toFixed(3)],
    ["tokens/s", stats.tokensPerSecond.toFixed(1)],
    ["decode tokens/s", stats.decodeTokensPerSecond.toFixed(1)],
  ];
  if ("acceptedFromPool" in stats) {
    rows.push(
      ["n-gram / window / cand.", `${stats.ngram} / ${stats.window} / ${stats.candidates}`],
      ["rows per forward", `${stats.rows}`],
      ["tokens from the pool", `${stats.acceptedFromPool}`],
    );
  }
  if ("blockSize" in stats) {
    rows.push(
      ["block size", `${stats.blockSize}`],
      ["blocks in flight", `${stats.blocksInFlight}`],
      ["blocks", `${stats.blocks}`],
      ["fast-forward / iter", stats.fastForward.toFixed(2)],
      ["stationary tokens", `${stats.stationary}`],
    );
    if (stats.recycleHits > 0 || stats.decoder.includes("recycle")) {
      rows.push(
        ["recycled tokens", `${stats.recycledTokens}`],
        ["recycling wins", `${stats.recycleHits}`],
      );
    }
  }
  return rows.map(([k, v]) => `${k.padEnd(22)} ${v}`).join("\n");
}

/** Runs `generate`. */
export async function generateCommand(args: string[]): Promise<void> {
  const v = parse("generate", args, {
    model: { type: "string" },
    prompt: { type: "string" },
    "prompt-file": { type: "string" },
    chat: { type: "boolean" },
    "max-new-tokens": { type: "string" },
    ...DECODER_FLAGS,
    "show-jacobi": { type: "boolean" },
    stats: { type: "boolean" },
    ...LOAD_FLAGS,
    json: { type: "boolean" },
  });
  if (v.help) return console.log(HELP);
  const modelDir = required(v, "model", "generate");
  let prompt = v.prompt as string | undefined;
  if (v["prompt-file"]) {
    if (prompt !== undefined) throw new CliError("generate: give --prompt or --prompt-file, not both");
    prompt = await Deno.readTextFile(v["prompt-file"] as string);
  }
  if (prompt === undefined) throw new CliError("generate: --prompt TEXT or --prompt-file F is required");
  const maxNewTokens = numberOption(v, "max-new-tokens", 128, { integer: true, min: 1 });
  const { decoder, seed, readback } = decoderFromFlags("generate", v);
  if (v["show-jacobi"] && decoder.kind !== "jacobi") {
    throw new CliError("generate: --show-jacobi needs --decoder jacobi");
  }

  const p = await loadModelDir(modelDir, loadFlags(v));
  try {
    let ids: number[];
    if (v.chat) {
      const template = p.tokenizer.chatTemplate;
      if (!template) {
        throw new CliError(
          `generate: ${modelDir}/tokenizer_config.json has no chat_template; drop --chat and format the prompt yourself`,
        );
      }
      const text = renderChat(template, [{ role: "user", content: prompt }], {
        addGenerationPrompt: true,
        bosToken: p.tokenizer.bosToken,
        eosToken: p.tokenizer.eosToken,
      });
      // Templates write BOS themselves when they want it.
      ids = p.tokenizer.encode(text, { addBos: false });
    } else {
      ids = p.tokenizer.encode(prompt);
    }
    if (ids.length + maxNewTokens + 1 > p.model.maxLength) {
      throw new RangeError(
        `The prompt has ${ids.length} tokens; with --max-new-tokens ${maxNewTokens} it needs ` +
          `${ids.length + maxNewTokens + 1} positions, but the model's context is ${p.model.maxLength}; ` +
          `shorten the prompt or lower --max-new-tokens`,
      );
    }
    const gen = generateFromIds(p, ids, { maxNewTokens, decoder, seed, ...readback });
    const out = Deno.stdout;
    const enc = new TextEncoder();
    for await (const piece of gen.pieces) if (!v.json) await out.write(enc.encode(piece));
    const result = await gen.result;
    if (v.json) {
      console.log(
        JSON.stringify({
          text: result.text,
          tokens: result.tokens,
          stopReason: result.stopReason,
          stats: result.stats,
        }),
      );
    } else {
      await out.write(enc.encode("\n"));
      if (v["show-jacobi"] && "trajectory" in result) {
        const color = Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR");
        console.log(`\n${renderJacobi(result.trajectory, p.tokenizer, color).join("\n")}`);
      }
      if (v.stats) console.log(`\n${formatStats(result.stats)}`);
    }
  } finally {
    await closeModel(p);
  }
}
