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
 * `base = state[baseSlot]` read on the GPU, as in the forward. The angle is reduced exactly as the
 * forward does it (the same split-frequency table from {@linkcode ropeTable}, the same f32
 * operations), so forward and backward rotate by the same f32 angle.
 *
 * @module
 */

import type { KernelSpec, Step, Tensor } from "../core/mod.ts";
import { grid1d } from "./add.ts";
import { checkRopeArgs, ropeTable } from "./rope.ts";

const WG = 64;

/**
 * Transposed rotary embedding of `rows × heads` head vectors, one invocation per rotated pair
 * (t, h, i) over a 2-D grid (`rowStride` as in {@linkcode grid1d}).
 *
 * @example Dispatching the spec directly (prefer {@linkcode ropeBackward})
 * ```ts ignore
 * const n = T * H * (D / 2);
 * const { workgroups, rowStride } = grid1d(n, 64);
 * step.dispatch(ropeBackwardSpec, {
 *   variant: { WG: 64 },
 *   bindings: { dOut, dx, state, table: ropeTable(gpu, D, 10000, 1) },
 *   params: { n, rowStride, heads: H, half: D / 2, baseSlot: 0 },
 *   workgroups,
 * });
 * ```
 */
export const ropeBackwardSpec: KernelSpec = {
  name: "rope_backward",
  bindings: [
    { name: "dOut", access: "read" }, // (T, H, D)
    { name: "dx", access: "read_write" }, // (T, H, D)
    { name: "state", access: "read", type: "u32" }, // state[baseSlot] = base
    { name: "table", access: "read", type: "vec4<f32>" }, // (D/2) of (g1, g2, g3, 0)
  ],
  params: [
    { name: "n", type: "u32" }, // rows * heads * half
    { name: "rowStride", type: "u32" },
    { name: "heads", type: "u32" },
    { name: "half", type: "u32" },
    { name: "baseSlot", type: "u32" },
  ],
  wgsl: () => `
const TWO_PI: f32 = 6.283185307179586;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let idx = gid.x + gid.y * P.rowStride;
  if (idx >= P.n) { return; }
  // idx = (t * heads + h) * half + i
  let i = idx % P.half;
  let th = idx / P.half;
  let t = th / P.heads;
  let pos = state[P.baseSlot] + t;
  // The forward's angle, reduced the same way (in turns, exact fract of the split products).
  let p = f32(pos);
  let g = table[i];
  var turns = fract(p * g.x) + fract(p * g.y) + p * g.z;
  turns = turns - round(turns); // [-0.5, 0.5]
  let angle = turns * TWO_PI;
  let c = cos(angle);
  let s = sin(angle);
  let src = th * 2u * P.half + i;
  let d0 = dOut[src];
  let d1 = dOut[src + P.half];
  // Transpose of the forward rotation.
  dx[src] = d0 * c + d1 * s;
  dx[src + P.half] = d1 * c - d0 * s;
}`,
};

/** Options of {@linkcode ropeBackward} (those of the forward it undoes). */
export interface RopeBackwardOptions {
  /** Index in `state` of base, the position of row 0. */
  baseSlot: number;
  /** Rope base theta. */
  theta: number;
  /** Linear scaling factor: positions are divided by it (default 1). */
  scale?: number;
  /** Rows (default `dOut.shape[0]`). */
  rows?: number;
  /** Heads per row. */
  heads: number;
  /** Head size D (even). */
  headDim: number;
}

/**
 * Records the backward of {@linkcode ropeForward} (without `relPositions` or `toCache`): writes
 * `dx`, the gradient of the rotation's input, for `rows` rows of `heads` head vectors at positions
 * `base + t`, `base = state[baseSlot]`. Overwrites `dx` (no accumulate).
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
  const { baseSlot, theta, heads, headDim } = options;
  const scale = options.scale ?? 1;
  const rows = options.rows ?? dOut.shape[0];
  const rowSize = heads * headDim;
  checkRopeArgs("ropeBackward", headDim, theta, scale, state, baseSlot);
  if (dOut.dtype !== "f32" || dx.dtype !== "f32") {
    throw new TypeError(`ropeBackward: dOut "${dOut.label}" and dx "${dx.label}" must be f32`);
  }
  if (!Number.isInteger(rows) || rows < 0 || dOut.size < rows * rowSize || dx.size < rows * rowSize) {
    throw new RangeError(
      `ropeBackward: dOut "${dOut.label}" [${dOut.shape.join(", ")}] and dx "${dx.label}" ` +
        `[${dx.shape.join(", ")}] do not hold ${rows} rows of ${heads} heads × ${headDim}`,
    );
  }
  if (dx.buffer === dOut.buffer) {
    throw new RangeError(`ropeBackward: dx "${dx.label}" must be a different tensor from dOut`);
  }
  if (rows === 0 || heads === 0) return;
  const half = headDim / 2;
  const n = rows * heads * half;
  const { workgroups, rowStride } = grid1d(n, WG);
  const table = ropeTable(step.gpu, headDim, theta, scale);
  step.dispatch(ropeBackwardSpec, {
    variant: { WG },
    bindings: { dOut, dx, state, table },
    params: { n, rowStride, heads, half, baseSlot },
    workgroups,
  });
}

/** Arguments of {@linkcode ropeBackwardReference}. */
export interface RopeBackwardReferenceOptions {
  /** Heads per row. */
  heads: number;
  /** Head size D. */
  headDim: number;
  /** Rope base theta. */
  theta: number;
  /** Linear scaling factor (default 1). */
  scale?: number;
  /** Position of row 0; row t is at base + t. */
  base: number;
}

/**
 * CPU reference: the transposed rotate-half rotation, angles and sin/cos in f64.
 *
 * @param dOut (T, H, D) gradient of the rotated output
 * @param options sizes and positions
 * @returns (T, H, D) gradient of the input
 *
 * @example One head of size 2 at position 1 (angle 1 rad): rotates back by −1 rad
 * ```ts
 * import { ropeBackwardReference } from "./rope_backward.ts";
 * ropeBackwardReference(new Float32Array([1, 0]), { heads: 1, headDim: 2, theta: 10000, base: 1 });
 * // ≈ [cos 1, −sin 1]
 * ```
 */
export function ropeBackwardReference(
  dOut: ArrayLike<number>,
  options: RopeBackwardReferenceOptions,
): Float32Array {
  const { heads, headDim: D, theta, base } = options;
  const scale = options.scale ?? 1;
  const half = D / 2;
  const T = dOut.length / (heads * D);
  const dx = new Float32Array(dOut.length);
  for (let t = 0; t < T; t++) {
    const pos = base + t;
    for (let h = 0; h < heads; h++) {
      const o = (t * heads + h) * D;
      for (let i = 0; i < half; i++) {
        const angle = (pos / scale) * Math.pow(theta, (-2 * i) / D);
        const c = Math.cos(angle);
        const s = Math.sin(angle);
        // Row i of Rᵀ: (cos, sin); row i + half: (−sin, cos).
        dx[o + i] = dOut[o + i] * c + dOut[o + i + half] * s;
        dx[o + i + half] = dOut[o + i + half] * c - dOut[o + i] * s;
      }
    }
  }
  return dx;
}
