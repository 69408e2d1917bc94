/**
 * `decode`: runs any decoder from its description (decode/decoder.ts).
 *
 * @module
 */

import { arPlan } from "./ar.ts";
import type { DecodeOptions, Decoder } from "./decoder.ts";
import type { CausalLM, GenerationResult } from "./generation.ts";
import { type GpuDecoderPlan, runGpuDecoder } from "./gpu_loop.ts";
import { jacobiPlan, type JacobiResult } from "./jacobi.ts";
import { lookaheadPlan, type LookaheadResult } from "./lookahead.ts";

/** The result of {@linkcode decode}: Jacobi and lookahead results carry their own statistics. */
export type DecodeResult = GenerationResult | JacobiResult | LookaheadResult;

/**
 * Runs the described decoder on prompt ids: yields new tokens as they are known, returns the
 * result. With `decoder.sampling` at a temperature above 0 every decoder samples, and its text has
 * sampled AR's distribution.
 *
 * @example Jacobi decoding, sliding window
 * ```ts ignore
 * const gen = decode(model, ids, { kind: "jacobi", blockSize: 8, sliding: true }, { maxNewTokens: 64, eosIds: [2] });
 * const { result } = await runToEnd(gen);
 * console.log(result.stats.decoder, result.stats.tokensPerForward); // "jacobi sliding n=8", 3.1
 * ```
 */
export function decode(
  model: CausalLM,
  prompt: readonly number[],
  decoder: Decoder,
  options: DecodeOptions,
): AsyncGenerator<number[], DecodeResult> {
  const seeded = { ...options, seed: decoder.sampling?.seed ?? options.seed };
  return runGpuDecoder(model, prompt, seeded, decoderPlan(model, prompt, decoder, seeded));
}

/**
 * The GPU-loop plan of a described decoder (what `decode` runs; `sampleMany` runs it many times).
 * @internal
 */
export function decoderPlan(
  model: CausalLM,
  prompt: readonly number[],
  decoder: Decoder,
  options: DecodeOptions,
): GpuDecoderPlan<DecodeResult> {
  const sampling = decoder.sampling;
  switch (decoder.kind) {
    case "ar":
      return arPlan(model, { ...options, sampling });
    case "jacobi":
      return jacobiPlan(model, { ...options, ...decoder, sampling });
    case "lookahead":
      return lookaheadPlan(model, prompt, { ...options, ...decoder, sampling });
  }
}
