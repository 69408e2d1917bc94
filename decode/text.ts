/**
 * Text in, text out: encodes a prompt, runs a decoder, and streams the text as it is decoded.
 *
 * @module
 */

import type { Pretrained } from "../model/mod.ts";
import { generateGreedy, generateSampled } from "./ar.ts";
import type { GenerationResult } from "./generation.ts";
import type { JacobiGuesses } from "../kernels/jacobi_accept.ts";
import { generateJacobi, type JacobiResult } from "./jacobi.ts";
import { generateLookahead, type LookaheadResult } from "./lookahead.ts";
import type { SamplingOptions } from "./sampling.ts";

/** Options of {@linkcode generateText}. */
export interface TextOptions extends SamplingOptions {
  /** New-token budget. */
  maxNewTokens: number;
  /** Decoder (default "ar"). Jacobi and lookahead decoding are greedy. */
  decoder?: "ar" | "jacobi" | "lookahead";
  /** Forwards per readback for GPU-resident greedy loops, fixed (default: adaptive; decode/cadence.ts). */
  forwardsPerReadback?: number;
  /** Jacobi block size n. */
  blockSize?: number;
  /** Jacobi with a sliding window (see JacobiOptions.sliding). */
  sliding?: boolean;
  /** Where new Jacobi guesses come from (see JacobiOptions.guesses). */
  jacobiGuesses?: JacobiGuesses;
  /** Lookahead n-gram size N. */
  ngram?: number;
  /** Lookahead window W. */
  window?: number;
  /** Lookahead candidates G. */
  guesses?: number;
}

/** The final result of a text generation; Jacobi results carry their trajectory and statistics. */
export type TextResult = (GenerationResult | JacobiResult | LookaheadResult) & { text: string };

/** A generation in progress: text pieces as they come, then the final result. */
export interface TextGeneration {
  /** Text pieces, in order; their concatenation is the decoded text of all new tokens. */
  pieces: AsyncIterable<string>;
  /** Resolves when generation ends (after `pieces` is exhausted). */
  result: Promise<TextResult>;
}

/**
 * Generates from already-tokenised prompt ids; greedy when temperature is 0 or absent.
 *
 * @example Streaming text
 * ```ts ignore
 * const gen = generateFromIds(pretrained, ids, { maxNewTokens: 50 });
 * for await (const piece of gen.pieces) console.log(piece);
 * console.log((await gen.result).stats);
 * ```
 */
export function generateFromIds(p: Pretrained, ids: readonly number[], options: TextOptions): TextGeneration {
  const greedy = options.temperature === undefined || options.temperature <= 0;
  if (options.decoder && options.decoder !== "ar" && !greedy) {
    throw new RangeError(`${options.decoder} decoding is greedy; drop --temperature or use --decoder ar`);
  }
  const tokens: AsyncGenerator<number[], GenerationResult | JacobiResult | LookaheadResult> =
    options.decoder === "lookahead"
      ? generateLookahead(p.model, ids, {
        maxNewTokens: options.maxNewTokens,
        eosIds: p.eosIds,
        ngram: options.ngram,
        window: options.window,
        guesses: options.guesses,
        seed: options.seed,
        iterationsPerReadback: options.forwardsPerReadback,
      })
      : options.decoder === "jacobi"
      ? generateJacobi(p.model, ids, {
        maxNewTokens: options.maxNewTokens,
        eosIds: p.eosIds,
        blockSize: options.blockSize,
        seed: options.seed,
        iterationsPerReadback: options.forwardsPerReadback,
        sliding: options.sliding,
        guesses: options.jacobiGuesses,
      })
      : greedy
      ? generateGreedy(p.model, ids, {
        maxNewTokens: options.maxNewTokens,
        eosIds: p.eosIds,
        forwardsPerReadback: options.forwardsPerReadback,
      })
      : generateSampled(p.model, ids, { ...options, eosIds: p.eosIds });
  let resolve!: (r: TextResult) => void;
  let reject!: (e: unknown) => void;
  const result = new Promise<TextResult>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  result.catch(() => {}); // the error also reaches whoever iterates `pieces`
  async function* pieces(): AsyncGenerator<string> {
    const decoder = p.tokenizer.createStreamDecoder();
    let text = "";
    try {
      for (;;) {
        const r = await tokens.next();
        if (r.done) {
          const tail = decoder.flush();
          text += tail;
          if (tail) yield tail;
          resolve({ ...r.value, text });
          return;
        }
        let piece = "";
        for (const id of r.value) piece += decoder.push(id);
        text += piece;
        if (piece) yield piece;
      }
    } catch (e) {
      reject(e);
      throw e;
    }
  }
  return { pieces: pieces(), result };
}

/**
 * Encodes `prompt` (BOS as the tokenizer's config says) and generates.
 *
 * @example Text generation
 * ```ts ignore
 * const gen = generateText(pretrained, "Once upon a time", { maxNewTokens: 50 });
 * for await (const piece of gen.pieces) await Deno.stdout.write(new TextEncoder().encode(piece));
 * ```
 */
export function generateText(p: Pretrained, prompt: string, options: TextOptions): TextGeneration {
  return generateFromIds(p, p.tokenizer.encode(prompt), options);
}
