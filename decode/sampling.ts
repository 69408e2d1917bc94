/**
 * Sampling from logits on the host: temperature, top-k, top-p (nucleus), with a PRNG passed in.
 *
 * @module
 */

/** Sampling settings. Temperature 0 means greedy. */
export interface SamplingOptions {
  /** Softmax temperature (default 1; 0 = argmax). */
  temperature?: number;
  /** Keep the k most likely tokens (0 = all). */
  topK?: number;
  /** Keep the smallest set whose probability reaches p (1 = all). */
  topP?: number;
  /** PRNG seed. */
  seed?: number;
}

/**
 * Draws a token id from logits. Ties in the greedy case go to the lowest id.
 *
 * @example Greedy and sampled draws
 * ```ts
 * import { sampleToken } from "./sampling.ts";
 * const logits = new Float32Array([0, 3, 1]);
 * sampleToken(logits, { temperature: 0 }, Math.random); // 1
 * ```
 */
export function sampleToken(logits: Float32Array, options: SamplingOptions, random: () => number): number {
  const temperature = options.temperature ?? 1;
  if (temperature <= 0) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  // Candidates sorted by logit, cut by top-k, then softmax at the temperature, then top-p.
  let ids = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a] || a - b);
  const k = options.topK ?? 0;
  if (k > 0 && k < ids.length) ids = ids.slice(0, k);
  const max = logits[ids[0]];
  let probs = ids.map((i) => Math.exp((logits[i] - max) / temperature));
  let total = probs.reduce((a, b) => a + b, 0);
  probs = probs.map((p) => p / total);
  const topP = options.topP ?? 1;
  if (topP < 1) {
    let cum = 0;
    let keep = ids.length;
    for (let i = 0; i < ids.length; i++) {
      cum += probs[i];
      if (cum >= topP) {
        keep = i + 1;
        break;
      }
    }
    ids = ids.slice(0, keep);
    probs = probs.slice(0, keep);
    total = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((p) => p / total);
  }
  let r = random();
  for (let i = 0; i < ids.length; i++) {
    r -= probs[i];
    if (r < 0) return ids[i];
  }
  return ids[ids.length - 1];
}
