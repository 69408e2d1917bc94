/**
 * Backward of the rotary position embedding ({@linkcode ropeForward} in `rope.ts`, Hugging Face
 * "rotate half"). The forward rotates each pair (x[i], x[i + half]) by the angle
 * `(pos/scale)·theta^(-2i/D)`:
 *
 *     out[i]        = x[i]·cos − x[i+half]·sin
 *     out[i + half] = x[i+half]·cos + x[i]·sin
 *
 * A rotation is orthogonal, so its backward is its transpose, the rotation by minus the angle:
 *
 *     dx[i]        =  dOut[i]·cos + dOut[i+half]·sin
 *     dx[i + half] = −dOut[i]·sin + dOut[i+half]·cos
 *
 * Dimension letters: T rows, H heads, D head size. Row t sits at position `base + t` with
 * `base = state[baseSlot]` read on the GPU, as in the forward. There is no kernel of its own: the
 * backward records the forward's kernel with its `INV` variant (rope.ts), so forward and backward
 * rotate by exactly the same f32 angle.
 *
 * @module
 */

import type { Step, Tensor } from "../core/mod.ts";
import { recordRope, type RopeOptions, ropeReference, type RopeReferenceOptions } from "./rope.ts";

/** Options of {@linkcode ropeBackward}: those of the forward it undoes (without the cache). */
export type RopeBackwardOptions = Omit<RopeOptions, "toCache" | "inverse">;

/**
 * Records the backward of {@linkcode ropeForward} (without `toCache`): writes `dx`, the gradient of
 * the rotation's input, for `rows` rows of `heads` head vectors at positions `base + t` (or
 * `base + relPositions[t]`), `base = state[baseSlot]`. Overwrites `dx` (no accumulate).
 *
 * @param step the step to record into
 * @param dOut (T, H, D) gradient of the rotated output
 * @param dx (T, H, D) gradient of the input (a different tensor from `dOut`)
 * @param state u32 tensor holding base at `baseSlot`
 * @param options positions, sizes and frequencies, as given to the forward
 *
 * @example Backward through the query rotation
 * ```ts ignore
 * ropeBackward(step, dQRot, dQ, state, { baseSlot: 0, theta: 10000, rows: T, heads: H, headDim: D });
 * ```
 */
export function ropeBackward(
  step: Step,
  dOut: Tensor,
  dx: Tensor,
  state: Tensor,
  options: RopeBackwardOptions,
): void {
  recordRope("ropeBackward", step, dOut, dx, state, { ...options, inverse: true });
}

/** Arguments of {@linkcode ropeBackwardReference}: those of the forward's reference. */
export type RopeBackwardReferenceOptions = Omit<RopeReferenceOptions, "inverse">;

/**
 * CPU reference: the transposed rotate-half rotation (the forward's reference by minus the angle),
 * angles and sin/cos in f64.
 *
 * @param dOut (T, H, D) gradient of the rotated output
 * @param options sizes and positions
 * @returns (T, H, D) gradient of the input
 *
 * @example One head of size 2 at position 1 (angle 1 rad): rotates back by −1 rad
 * ```ts
 * import { ropeBackwardReference } from "./rope_backward.ts";
 * ropeBackwardReference(new Float32Array([1, 0]), { heads: 1, headDim: 2, theta: 10000, base: 1 }); // ≈ [0.5403, -0.8415]
 * ```
 */
export function ropeBackwardReference(
  dOut: ArrayLike<number>,
  options: RopeBackwardReferenceOptions,
): Float32Array {
  return ropeReference(Float32Array.from(dOut), { ...options, inverse: true });
}
