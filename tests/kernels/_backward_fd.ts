/**
 * Finite-difference helpers for the backward kernels' CPU references.
 *
 * The forward references return f32 arrays, so a scalar built from their output carries f32
 * rounding (~6e-8 relative per element). To keep that noise small against the step, inputs are
 * quantised so that `x ± h` is exact in f32 for power-of-two steps, the steps are large, and one
 * Richardson step cancels the h² truncation term of the central difference.
 *
 * @module
 */

import { rng } from "../_assert.ts";

/**
 * Central difference of `f` along `x[i]` with one Richardson step,
 * `(4·D(h/2) − D(h)) / 3` where `D(s) = (f(x + s·e_i) − f(x − s·e_i)) / 2s`; the error is O(h⁴).
 * All arithmetic is f64; `x` is restored before returning.
 */
export function centralDifference(
  f: (x: Float64Array) => number,
  x: Float64Array,
  i: number,
  h: number,
): number {
  const diff = (s: number) => {
    const saved = x[i];
    x[i] = saved + s;
    const plus = f(x);
    x[i] = saved - s;
    const minus = f(x);
    x[i] = saved;
    return (plus - minus) / (2 * s);
  };
  return (4 * diff(h / 2) - diff(h)) / 3;
}

/** The numerical gradient of `f` at `x`, one {@linkcode centralDifference} per element. */
export function numericGradient(
  f: (x: Float64Array) => number,
  x: ArrayLike<number>,
  h: number,
): Float64Array {
  const at = Float64Array.from(x);
  const grad = new Float64Array(at.length);
  for (let i = 0; i < at.length; i++) grad[i] = centralDifference(f, at, i, h);
  return grad;
}

/** Σ_i r_i·out_i in f64: the scalar whose gradient with respect to `out` is `r`. */
export function dot(r: ArrayLike<number>, out: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < r.length; i++) s += r[i] * out[i];
  return s;
}

/**
 * Uniform values in [-scale, scale) rounded to multiples of 2^-bits, so that `x ± 2^-k` (k ≤ bits)
 * is exact in f32 while |x| < 2^(23 − bits).
 */
export function quantisedArray(n: number, seed: number, scale = 1, bits = 10): Float32Array {
  const r = rng(seed);
  const q = 2 ** bits;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.round((r() * 2 - 1) * scale * q) / q;
  return out;
}
