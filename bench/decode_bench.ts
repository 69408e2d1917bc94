/**
 * Decoding throughput on stories260K (read from ../shared, converted in a temporary directory):
 * the GPU-resident greedy AR loop against a one-readback-per-token loop, and Jacobi / lookahead
 * decoding with their GPU-resident loops against one readback per iteration, all in one run,
 * with the outputs checked identical.
 *
 * @module
 */

import type { Gpu } from "../core/mod.ts";
import { decode, type Decoder, decoderLabel, type ReadbackOptions, runToEnd } from "../decode/mod.ts";
import { convertLlama2c, directoryFiles, loadPretrained } from "../model/mod.ts";

const SHARED = new URL("../../shared/models/stories260K/", import.meta.url).pathname;
const PROMPTS = ["Once upon a time", "The little dog", "One day, a girl named Sue", "Tom had a red ball"];

/** Runs the decode section; returns per-loop tokens/s and tokens per forward. */
export async function runDecodeBench(gpu: Gpu): Promise<unknown> {
  try {
    await Deno.stat(`${SHARED}stories260K.bin`);
  } catch {
    console.log(`stories260K not found at ${SHARED}; decode section skipped`);
    return { skipped: "no ../shared/models/stories260K" };
  }
  const dir = await Deno.makeTempDir();
  try {
    await convertLlama2c({
      checkpoint: `${SHARED}stories260K.bin`,
      tokenizer: `${SHARED}tok512.bin`,
      out: `${dir}/m`,
    });
    const p = await loadPretrained(gpu, directoryFiles(`${dir}/m`), { maxLength: 512 });
    const prompts = PROMPTS.map((t) => p.tokenizer.encode(t));
    const common = { maxNewTokens: 128, eosIds: [] as number[] }; // no EOS: every loop makes 128 tokens
    // Each decoder with its default (adaptive, GPU-resident) cadence and with a readback after
    // every iteration, the loop the GPU-resident design replaces.
    const perIteration: ReadbackOptions = { iterationsPerReadback: 1, iterationsBehindReadback: 0 };
    const decoders: Decoder[] = [{ kind: "ar" }, { kind: "jacobi", blockSize: 8 }, { kind: "lookahead" }];
    const loops: [string, (prompt: number[]) => ReturnType<typeof decode>][] = decoders.flatMap((d) =>
      [
        [`${decoderLabel(d)} (GPU-resident)`, (x: number[]) => decode(p.model, x, d, common)],
        [`${decoderLabel(d)} (readback per iteration)`, (x: number[]) =>
          decode(p.model, x, d, { ...common, ...perIteration })],
      ] as [string, (prompt: number[]) => ReturnType<typeof decode>][]
    );
    for (const [, loop] of loops) await runToEnd(loop(prompts[0].slice(0, 3))); // compile pipelines
    const figures: Record<
      string,
      { tokensPerSecond: number; tokensPerForward: number; iterationsPerReadback: number }
    > = {};
    let reference: number[][] | null = null;
    let identical = true;
    for (const [name, loop] of loops) {
      let tokens = 0, forwards = 0, readbacks = 0, seconds = 0;
      const outs: number[][] = [];
      for (const prompt of prompts) {
        const t0 = performance.now();
        const r = (await runToEnd(loop(prompt))).result;
        seconds += (performance.now() - t0) / 1000;
        tokens += r.tokens.length;
        forwards += r.stats.forwards;
        readbacks += r.stats.readbacks;
        outs.push(r.tokens);
      }
      reference ??= outs;
      identical &&= JSON.stringify(outs) === JSON.stringify(reference);
      figures[name] = {
        tokensPerSecond: tokens / seconds,
        tokensPerForward: tokens / forwards,
        iterationsPerReadback: forwards / readbacks,
      };
    }
    const ar = figures[loops[0][0]].tokensPerSecond;
    console.log(`stories260K, ${prompts.length} prompts x 128 new tokens`);
    for (const [name, f] of Object.entries(figures)) {
      console.log(
        `  ${name.padEnd(44)} ${f.tokensPerSecond.toFixed(1).padStart(7)} tok/s  ${
          f.tokensPerForward.toFixed(2)
        } tok/forward  ` +
          `${f.iterationsPerReadback.toFixed(1).padStart(5)} iterations/readback  ${
            (f.tokensPerSecond / ar).toFixed(2)
          }x GPU-resident AR`,
      );
    }
    console.log(`  outputs identical: ${identical ? "yes" : "NO"}`);
    p.model.destroy();
    return { figures, identical };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
