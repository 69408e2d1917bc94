/**
 * `decode`: runs any decoder from its description (decode/decoder.ts).
 *
 * @module
 */

import { generateGreedy, generateSampled } from "./ar.ts";
import { type DecodeOptions, type Decoder, isSampled } from "./decoder.ts";
import type { CausalLM, GenerationResult } from "./generation.ts";
import { generateJacobi, type JacobiResult } from "./jacobi.ts";
import { generateLookahead, type LookaheadResult } from "./lookahead.ts";

/** The result of {@linkcode decode}: Jacobi and lookahead results carry their own statistics. */
export type DecodeResult = GenerationResult | JacobiResult | LookaheadResult;

/**
 * Runs the described decoder on prompt ids: yields new tokens as they are known, returns the
 * result. Jacobi and lookahead are greedy; a sampled description is refused for them.
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
  switch (decoder.kind) {
    case "ar":
      return isSampled(decoder)
        ? generateSampled(model, prompt, {
          ...options,
          ...decoder.sampling,
          seed: decoder.sampling?.seed ?? options.seed,
        })
        : generateGreedy(model, prompt, options);
    case "jacobi":
      return generateJacobi(model, prompt, { ...options, ...decoder });
    case "lookahead":
      return generateLookahead(model, prompt, { ...options, ...decoder });
  }
}
