/**
 * Text in, text out: encodes a prompt, runs a decoder, and streams the text as it is decoded.
 *
 * @module
 */

import type { Pretrained } from "../model/pretrained.ts";
import { decode, type DecodeResult } from "./decode.ts";
import type { Decoder } from "./decoder.ts";
import type { ReadbackOptions } from "./cadence.ts";
import type { PrefixCache } from "./generation.ts";

/** Options of {@linkcode generateText}. */
export interface TextOptions extends ReadbackOptions {
  /** New-token budget. */
  maxNewTokens: number;
  /** The decoder and its settings (default greedy AR: `{ kind: "ar" }`). */
  decoder?: Decoder;
  /** Seed of the decoder's PRNG (default 0). */
  seed?: number;
  /** A KV cache kept across generations: only the prompt past its common prefix is prefilled. */
  prefixCache?: PrefixCache;
}

/** The final result of a text generation; Jacobi results carry their trajectory and statistics. */
export type TextResult = DecodeResult & { text: string };

/** `TextGeneration.result` rejects with this when its consumer stopped reading `pieces` early. */
export class GenerationCancelled extends Error {
  constructor() {
    super("the generation was cancelled before it ended");
    this.name = "GenerationCancelled";
  }
}

/** A generation in progress: text pieces as they come, then the final result. */
export interface TextGeneration {
  /** Text pieces, in order; their concatenation is the decoded text of all new tokens. */
  pieces: AsyncIterable<string>;
  /** Resolves when generation ends (after `pieces` is exhausted). */
  result: Promise<TextResult>;
  /** New tokens read so far (what a consumer that stopped early was given, tokenwise). */
  tokensSoFar: () => number;
}

/**
 * Generates from already-tokenised prompt ids with the described decoder.
 *
 * @example Streaming text, Jacobi decoding
 * ```ts ignore
 * const gen = generateFromIds(pretrained, ids, { maxNewTokens: 50, decoder: { kind: "jacobi", blockSize: 8 } });
 * for await (const piece of gen.pieces) console.log(piece);
 * console.log((await gen.result).stats);
 * ```
 */
export function generateFromIds(p: Pretrained, ids: readonly number[], options: TextOptions): TextGeneration {
  const decoder = options.decoder ?? { kind: "ar" };
  const tokens = decode(p.model, ids, decoder, {
    maxNewTokens: options.maxNewTokens,
    eosIds: p.eosIds,
    seed: options.seed,
    prefixCache: options.prefixCache,
    iterationsPerReadback: options.iterationsPerReadback,
    iterationsBehindReadback: options.iterationsBehindReadback,
  });
  let resolve!: (r: TextResult) => void;
  let reject!: (e: unknown) => void;
  const result = new Promise<TextResult>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  result.catch(() => {}); // the error also reaches whoever iterates `pieces`
  let count = 0;
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
        count += r.value.length;
        for (const id of r.value) piece += decoder.push(id);
        text += piece;
        if (piece) yield piece;
      }
    } catch (e) {
      reject(e);
      throw e;
    } finally {
      // A consumer that stops early (a client gone, a stop string met) ends the generation: its GPU
      // session is closed now, and `result` says it was cancelled.
      await tokens.return(undefined as never);
      reject(new GenerationCancelled());
    }
  }
  return { pieces: pieces(), result, tokensSoFar: () => count };
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
