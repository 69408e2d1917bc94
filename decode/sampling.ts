/**
 * Sampling settings, their validation, and a host-side draw (the GPU one is kernels/sample.ts;
 * both use the same filtered distribution: top-k, then temperature, then top-p).
 *
 * @module
 */

import { samplingDistributionReference, type SamplingParams } from "../kernels/sample.ts";

/** Sampling settings. Temperature 0 (or absent) means greedy. */
export interface SamplingOptions {
  /** Softmax temperature (default 0 = greedy, the argmax). */
  temperature?: number;
  /** Keep the k most likely tokens, k ≥ 1 (absent: all). Ties at the cut are kept. */
  topK?: number;
  /** Keep the smallest set, in logit order, whose probability reaches p, p in (0, 1] (default 1 = all). */
  topP?: number;
  /** Seed of the draws (default: the decode options' seed). */
  seed?: number;
}

/**
 * Checks sampling settings and returns the kernels' form, or null for greedy (temperature 0 or
 * absent). Bad values are RangeErrors that name the setting and the accepted range.
 *
 * @example
 * ```ts
 * import { samplingParams } from "./sampling.ts";
 * samplingParams({ temperature: 0.7, topP: 0.9 }); // { temperature: 0.7, topK: 0, topP: 0.9 }
 * samplingParams({}); // null (greedy)
 * ```
 */
export function samplingParams(options: SamplingOptions | undefined): SamplingParams | null {
  const t = options?.temperature ?? 0;
  if (!Number.isFinite(t) || t < 0) {
    throw new RangeError(`temperature must be a finite number ≥ 0 (0 = greedy), not ${t}`);
  }
  const k = options?.topK;
  if (k !== undefined && (!Number.isInteger(k) || k < 1)) {
    throw new RangeError(`top-k must be an integer ≥ 1, not ${k} (leave it out to keep every token)`);
  }
  const p = options?.topP ?? 1;
  if (!(p > 0 && p <= 1)) throw new RangeError(`top-p must be in (0, 1], not ${p} (1 keeps every token)`);
  if (t === 0) return null;
  return { temperature: t, topK: k ?? 0, topP: p };
}

/**
 * Draws a token id from logits on the host with the kernels' distribution. Temperature 0 is the
 * argmax (ties to the lowest id).
 *
 * @example Greedy and sampled draws
 * ```ts
 * import { sampleToken } from "./sampling.ts";
 * const logits = new Float32Array([0, 3, 1]);
 * sampleToken(logits, { temperature: 0 }, Math.random); // 1
 * ```
 */
export function sampleToken(logits: Float32Array, options: SamplingOptions, random: () => number): number {
  const params = samplingParams(options);
  if (!params) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  const p = samplingDistributionReference(logits, params);
  let r = random();
  let last = 0;
  for (let i = 0; i < p.length; i++) {
    if (p[i] === 0) continue;
    last = i;
    r -= p[i];
    if (r < 0) return i;
  }
  return last;
}
