/**
 * The same work in Deno and in a browser tab, so the two can be compared token for token: greedy AR
 * and Jacobi (n = 16) on each prompt of a loaded model, timed. The browser check (web/check.ts) and
 * its test (tests/web/browser_test.ts) use it on both sides.
 *
 * @module
 */

import { decode } from "../decode/decode.ts";
import type { Decoder } from "../decode/decoder.ts";
import { runToEnd } from "../decode/generation.ts";
import type { Pretrained } from "../model/mod.ts";

/** One decoder's outputs and speed over the prompts. */
export interface WorkloadRun {
  /** The decoder's label. */
  decoder: string;
  /** New tokens per prompt. */
  tokens: number[][];
  /** New tokens in all / wall seconds. */
  tokensPerSecond: number;
  /** Tokens per forward over all prompts. */
  tokensPerForward: number;
  /** Readbacks per token, over all prompts. */
  readbacksPerToken: number;
  /** Compute dispatches per token (prefill and iterations run past the end included). */
  dispatchesPerToken: number;
}

/**
 * The decoders compared: greedy AR, Jacobi n = 16 (the CLLM's training block) and sliding n = 8 (the
 * embedded CLLM's fastest setting in Deno, and the only one clearly ahead of AR in SwiftShader).
 */
export const WORKLOAD_DECODERS: readonly Decoder[] = [
  { kind: "ar" },
  { kind: "jacobi", blockSize: 16 },
  { kind: "jacobi", blockSize: 8, sliding: true },
];

/** Runs each decoder on each prompt (after one warm-up generation that compiles the pipelines). */
export async function runWorkload(
  p: Pretrained,
  prompts: readonly number[][],
  maxNewTokens: number,
): Promise<WorkloadRun[]> {
  const runs: WorkloadRun[] = [];
  for (const d of WORKLOAD_DECODERS) {
    await runToEnd(decode(p.model, prompts[0], d, { maxNewTokens: 4, eosIds: p.eosIds }));
    const tokens: number[][] = [];
    let count = 0, forwards = 0, readbacks = 0;
    const dispatches0 = p.model.gpu.counters.dispatches;
    const t0 = performance.now();
    let label = "";
    for (const prompt of prompts) {
      const { result } = await runToEnd(decode(p.model, prompt, d, { maxNewTokens, eosIds: p.eosIds }));
      tokens.push(result.tokens);
      count += result.tokens.length;
      forwards += result.stats.forwards;
      readbacks += result.stats.readbacks;
      label = result.stats.decoder;
    }
    const seconds = (performance.now() - t0) / 1000;
    runs.push({
      decoder: label,
      tokens,
      tokensPerSecond: count / seconds,
      tokensPerForward: count / forwards,
      readbacksPerToken: readbacks / count,
      dispatchesPerToken: (p.model.gpu.counters.dispatches - dispatches0) / count,
    });
  }
  return runs;
}
