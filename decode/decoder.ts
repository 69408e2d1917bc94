/**
 * One typed description of a decoder, used everywhere a decoder is chosen: the API
 * (`decode`, decode/decode.ts), the CLI flags, statistics labels, benches, evaluation and the demo.
 *
 * Every decoder samples when `sampling.temperature > 0` (lossless: the text has AR sampling's
 * distribution; kernels/jacobi_sampled.ts) and is greedy otherwise; the label then ends in
 * `sampled t=… top-k=… top-p=…`.
 *
 * | kind | settings | label |
 * | --- | --- | --- |
 * | `ar` | none | `ar`, `ar sampled t=0.7 top-p=0.9` |
 * | `jacobi` | `blockSize`, `sliding`, `blocks`, `recycle`, `recycleLength`, `guessSource` | `jacobi n=16`, `jacobi sliding n=8`, `jacobi n=16 blocks=2 recycle=2`, `jacobi n=16 guesses=context` |
 * | `lookahead` | `ngram`, `window`, `candidates` | `lookahead N=4 W=5 G=5` |
 *
 * The text form (`parseDecoder`) is the label's own words joined by `:` and `,`:
 * `ar`, `jacobi:n=16,sliding`, `jacobi:n=16,blocks=2`, `jacobi:n=16,guesses=context`, `lookahead:N=4,W=5,G=5`.
 *
 * @module
 */

import type { ReadbackOptions } from "./cadence.ts";
import type { PrefixCache } from "./generation.ts";
import type { BlockTrajectory } from "./jacobi_stats.ts";
import type { SamplingOptions } from "./sampling.ts";

/** What every decoder description has: its sampling settings. */
export interface DecoderSampling {
  /** Sampling settings; absent or temperature 0 is greedy. */
  sampling?: SamplingOptions;
}

/** Autoregressive decoding. */
export interface ArDecoder extends DecoderSampling {
  /** Discriminant. */
  kind: "ar";
}

/** Jacobi decoding of n-token blocks (CLLM's decoder). */
export interface JacobiDecoder extends DecoderSampling {
  /** Discriminant. */
  kind: "jacobi";
  /** Block size n (default 16). */
  blockSize?: number;
  /** Refill the block to n tokens after a partial acceptance (default false). */
  sliding?: boolean;
  /**
   * Blocks in flight K (multiblock decoding, default 1): each forward runs K·n rows, the first
   * block verified against the committed text, the later ones iterating on the unverified blocks
   * before them; a new block of n guesses enters whenever n places are free. Not with `sliding`.
   */
  blocks?: number;
  /**
   * Rejection recycling (greedy only): G branches verified beside the window in every forward,
   * each the next token followed by a continuation the model predicted at an earlier iteration
   * (kernels/jacobi_recycle.ts); the longest verified path is committed. Default 0 (off).
   */
  recycle?: number;
  /** Tokens per recycled branch C (2..n·blocks; default n). */
  recycleLength?: number;
  /** Where new guesses come from: random context tokens (default) or copied spans. */
  guessSource?: "random" | "context";
}

/** Lookahead decoding (Jacobi window + n-gram pool). */
export interface LookaheadDecoder extends DecoderSampling {
  /** Discriminant. */
  kind: "lookahead";
  /** N-gram size N ≥ 3 (default 4). */
  ngram?: number;
  /** Window width W (default 5). */
  window?: number;
  /** Candidate n-grams verified per step G (default 5). */
  candidates?: number;
}

/**
 * A decoder and its settings. Every decoder's greedy output equals greedy AR's token for token, and
 * its sampled output has sampled AR's distribution.
 *
 * @example
 * ```ts
 * import { decoderLabel, type Decoder } from "./decoder.ts";
 * const d: Decoder = { kind: "jacobi", blockSize: 8, sliding: true };
 * console.log(decoderLabel(d)); // jacobi sliding n=8
 * ```
 */
export type Decoder = ArDecoder | JacobiDecoder | LookaheadDecoder;

/** Options of `decode` (decode/decode.ts), common to every decoder. */
export interface DecodeOptions extends ReadbackOptions {
  /** Maximum number of new tokens (generation stops at exactly this many). */
  maxNewTokens: number;
  /** Token ids that end generation; the first one is kept in the output and nothing after it. */
  eosIds?: readonly number[];
  /** Seed of every random draw (sampled tokens, Jacobi guesses, lookahead's window; default 0). */
  seed?: number;
  /** A KV cache kept across generations (decode/generation.ts): only new prompt tokens are prefilled. */
  prefixCache?: PrefixCache;
  /** Jacobi only: every block's states so far, after each readback (a live view; see decode/jacobi.ts). */
  onTrajectory?: (trajectory: BlockTrajectory[]) => void;
}

const DEFAULTS = {
  blockSize: 16,
  ngram: 4,
  window: 5,
  candidates: 5,
};

/** True when the decoder samples (temperature > 0). */
export function isSampled(d: DecoderSampling): boolean {
  return (d.sampling?.temperature ?? 0) > 0;
}

/** The label's sampling words (`sampled t=0.7 top-k=40 top-p=0.9`), empty when greedy. */
function samplingWords(d: DecoderSampling): string {
  if (!isSampled(d)) return "";
  const s = d.sampling!;
  return [
    `sampled t=${s.temperature}`,
    s.topK ? `top-k=${s.topK}` : "",
    s.topP !== undefined && s.topP < 1 ? `top-p=${s.topP}` : "",
  ].filter(Boolean).join(" ");
}

/**
 * The decoder's label: the name statistics, benches, tables and the CLI use.
 *
 * @example
 * ```ts
 * import { decoderLabel } from "./decoder.ts";
 * console.log(decoderLabel({ kind: "lookahead" })); // lookahead N=4 W=5 G=5
 * console.log(decoderLabel({ kind: "ar", sampling: { temperature: 0.7 } })); // ar sampled t=0.7
 * ```
 */
export function decoderLabel(d: Decoder): string {
  return [baseLabel(d), samplingWords(d)].filter(Boolean).join(" ");
}

function baseLabel(d: Decoder): string {
  switch (d.kind) {
    case "ar":
      return "ar";
    case "jacobi":
      return [
        "jacobi",
        d.sliding ? "sliding" : "",
        `n=${d.blockSize ?? DEFAULTS.blockSize}`,
        (d.blocks ?? 1) > 1 ? `blocks=${d.blocks}` : "",
        (d.recycle ?? 0) > 0
          ? `recycle=${d.recycle}${
            d.recycleLength && d.recycleLength !== (d.blockSize ?? DEFAULTS.blockSize)
              ? `x${d.recycleLength}`
              : ""
          }`
          : "",
        d.guessSource && d.guessSource !== "random" ? `guesses=${d.guessSource}` : "",
      ].filter(Boolean).join(" ");
    case "lookahead":
      return `lookahead N=${d.ngram ?? DEFAULTS.ngram} W=${d.window ?? DEFAULTS.window} G=${
        d.candidates ?? DEFAULTS.candidates
      }`;
  }
}

function intSetting(text: string, key: string, value: string | undefined): number {
  const n = Number(value);
  if (value === undefined || !Number.isInteger(n) || n < 1) {
    throw new RangeError(
      `Decoder "${text}": ${key} needs a positive integer (e.g. ${key}=8), not "${value ?? ""}"`,
    );
  }
  return n;
}

/**
 * Parses a decoder's text form (`ar`, `jacobi`, `jacobi:n=16,sliding`, `jacobi:guesses=context`,
 * `lookahead:N=4,W=5,G=5`); the label, with spaces, is accepted too. Unknown kinds or settings are
 * RangeErrors that list what is accepted.
 *
 * @example
 * ```ts
 * import { parseDecoder } from "./decoder.ts";
 * console.log(parseDecoder("jacobi:n=8,sliding")); // { kind: "jacobi", blockSize: 8, sliding: true }
 * ```
 */
export function parseDecoder(text: string): Decoder {
  const [kind, rest = ""] = text.trim().split(/[:\s](.*)/s, 2) as [string, string?];
  const settings = rest.split(/[,\s]+/).filter(Boolean).map((s) => {
    const eq = s.indexOf("=");
    return eq < 0 ? [s, undefined] as const : [s.slice(0, eq), s.slice(eq + 1)] as const;
  });
  const unknown = (key: string, allowed: string) =>
    new RangeError(`Decoder "${text}": unknown setting "${key}"; ${kind} takes ${allowed}`);
  switch (kind) {
    case "ar": {
      if (settings.length) throw unknown(settings[0][0], "no settings (sampling is given apart)");
      return { kind: "ar" };
    }
    case "jacobi": {
      const d: JacobiDecoder = { kind: "jacobi" };
      for (const [key, value] of settings) {
        if (key === "n") d.blockSize = intSetting(text, key, value);
        else if (key === "sliding" && value === undefined) d.sliding = true;
        else if (key === "blocks") d.blocks = intSetting(text, key, value);
        else if (key === "recycle") {
          const [g, c] = (value ?? "").split("x");
          d.recycle = intSetting(text, key, g);
          if (c !== undefined) d.recycleLength = intSetting(text, "recycle length", c);
        } else if (key === "guesses" && (value === "random" || value === "context")) d.guessSource = value;
        else throw unknown(key, "n=N, sliding, blocks=K, recycle=G (or GxC) and guesses=random|context");
      }
      return d;
    }
    case "lookahead": {
      const d: LookaheadDecoder = { kind: "lookahead" };
      for (const [key, value] of settings) {
        if (key === "N") d.ngram = intSetting(text, key, value);
        else if (key === "W") d.window = intSetting(text, key, value);
        else if (key === "G") d.candidates = intSetting(text, key, value);
        else throw unknown(key, "N=ngram, W=window and G=candidates");
      }
      return d;
    }
    default:
      throw new RangeError(`Unknown decoder "${kind}" in "${text}"; choose ar, jacobi or lookahead`);
  }
}
