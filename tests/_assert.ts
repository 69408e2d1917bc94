import { seededRandom } from "../core/random.ts";

/**
 * The one numeric comparison helper of the test suite.
 *
 * @module
 */

/** Tolerances: |actual - expected| <= atol + rtol * |expected|. */
export interface Tolerance {
  /** Absolute tolerance. */
  atol: number;
  /** Relative tolerance. */
  rtol: number;
}

/** f32 kernels against f64-accumulated CPU references. */
export const F32: Tolerance = { atol: 1e-5, rtol: 1e-4 };

/**
 * Checks the length, then every element. Reports the max error, the first bad index and a few
 * pairs. NaN is never close.
 */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: Tolerance = F32,
  what = "values",
): void {
  if (actual.length !== expected.length) {
    throw new Error(`${what}: length ${actual.length} differs from expected ${expected.length}`);
  }
  let maxErr = 0;
  let firstBad = -1;
  let bad = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    const err = Math.abs(a - e);
    const ok = Number.isFinite(a) === Number.isFinite(e) && !Number.isNaN(a) && !Number.isNaN(e) &&
      (err <= tol.atol + tol.rtol * Math.abs(e) || a === e);
    if (!Number.isNaN(err)) maxErr = Math.max(maxErr, err);
    if (!ok) {
      bad++;
      if (firstBad < 0) firstBad = i;
    }
  }
  if (bad > 0) {
    const pairs = [];
    for (let i = firstBad; i < Math.min(actual.length, firstBad + 4); i++) {
      pairs.push(`[${i}] ${actual[i]} vs ${expected[i]}`);
    }
    throw new Error(
      `${what}: ${bad} of ${actual.length} differ beyond atol ${tol.atol} + rtol ${tol.rtol}; ` +
        `max error ${maxErr}; first bad index ${firstBad}: ${pairs.join(", ")}`,
    );
  }
}

/** A seeded PRNG so failures reproduce (the project's mulberry32). */
export const rng = seededRandom;

/** Uniform random values in [-scale, scale). */
export function randomArray(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 2 - 1) * scale;
  return out;
}
