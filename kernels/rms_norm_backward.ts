/**
 * Backward of RMS normalisation ({@linkcode rmsNormForward} in `rms_norm.ts`).
 *
 * Forward, per row t: `rstd = 1/sqrt(mean_c(x²) + eps)`, `out_c = x_c·rstd·w_c`. With
 * `d = dOut[t]`, the gradients are
 *
 *     dx_c  = rstd·w_c·d_c − x_c·rstd³·(Σ_j d_j·w_j·x_j)/C
 *     dw_c += Σ_t d_c·x_c·rstd
 *
 * (the first term is the direct path through x_c, the second the path through rstd, whose
 * derivative is ∂rstd/∂x_c = −rstd³·x_c/C).
 *
 * Dimension letters: T rows, C channels. Two dispatches:
 * 1. one workgroup per row: one barrier publishes the partial sums of x² and d·w·x, every
 *    invocation adds them in the same order (as the forward does), then writes its slice of dx and
 *    invocation 0 saves the row's rstd in a scratch tensor;
 * 2. one invocation per channel walks the rows in order and adds Σ_t d·x·rstd into dWeight, so the
 *    sum over rows is deterministic without float atomics.
 *
 * @module
 */

import { type Gpu, type KernelSpec, type Step, Tensor } from "../core/mod.ts";
import { grid1d } from "./add.ts";

const WG = 64;

/**
 * Pass 1: dx of each row, and rstd per row into `rstd`. Workgroup `(x, y)` handles row
 * `x + y * gridX`. Variant: `WG` (invocations per row), `ACC` (dx += instead of dx =).
 *
 * @example Dispatching the spec directly (prefer {@linkcode rmsNormBackward})
 * ```ts ignore
 * step.dispatch(rmsNormBackwardDxSpec, {
 *   variant: { WG: 64, ACC: false },
 *   bindings: { x, weight, dOut, dx, rstd },
 *   params: { rows: T, C, gridX: T, eps: 1e-5 },
 *   workgroups: [T],
 * });
 * ```
 */
export const rmsNormBackwardDxSpec: KernelSpec = {
  name: "rms_norm_backward_dx",
  bindings: [
    { name: "x", access: "read" }, // (T, C) forward input
    { name: "weight", access: "read" }, // (C)
    { name: "dOut", access: "read" }, // (T, C)
    { name: "dx", access: "read_write" }, // (T, C)
    { name: "rstd", access: "read_write" }, // (T) saved for pass 2
  ],
  params: [
    { name: "rows", type: "u32" },
    { name: "C", type: "u32" },
    { name: "gridX", type: "u32" },
    { name: "eps", type: "f32" },
  ],
  wgsl: () => `
var<workgroup> partSq: array<f32, WG>;
var<workgroup> partDot: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * P.gridX;
  if (row >= P.rows) { return; } // uniform: the whole workgroup leaves together
  let start = row * P.C;
  // 1. Strided partial sums of x² (as the forward) and of d·w·x.
  var sq = 0.0;
  var dot = 0.0;
  for (var c = lid; c < P.C; c += WG) {
    let v = x[start + c];
    sq += v * v;
    dot += dOut[start + c] * weight[c] * v;
  }
  partSq[lid] = sq;
  partDot[lid] = dot;
  workgroupBarrier();
  // 2. Every invocation adds the partial sums in the same order.
  var total = 0.0;
  var totalDot = 0.0;
  for (var k = 0u; k < WG; k++) {
    total += partSq[k];
    totalDot += partDot[k];
  }
  let r = 1.0 / sqrt(total / f32(P.C) + P.eps); // rstd, the same expression as the forward
  if (lid == 0u) { rstd[row] = r; }
  // 3. dx = r·w·d − x·r³·dot/C.
  let k3 = r * r * r * totalDot / f32(P.C);
  for (var c = lid; c < P.C; c += WG) {
    let g = r * weight[c] * dOut[start + c] - x[start + c] * k3;
    if (ACC) { dx[start + c] = dx[start + c] + g; } else { dx[start + c] = g; }
  }
}`,
};

/**
 * Pass 2: `dWeight[c] += Σ_t dOut[t, c]·x[t, c]·rstd[t]`, one invocation per channel summing the
 * rows in order (2-D grid as in {@linkcode grid1d}).
 *
 * @example Dispatching the spec directly (prefer {@linkcode rmsNormBackward})
 * ```ts ignore
 * const { workgroups, rowStride } = grid1d(C, 64);
 * step.dispatch(rmsNormBackwardDwSpec, {
 *   variant: { WG: 64 },
 *   bindings: { x, dOut, rstd, dWeight },
 *   params: { rows: T, C, rowStride },
 *   workgroups,
 * });
 * ```
 */
export const rmsNormBackwardDwSpec: KernelSpec = {
  name: "rms_norm_backward_dw",
  bindings: [
    { name: "x", access: "read" }, // (T, C) forward input
    { name: "dOut", access: "read" }, // (T, C)
    { name: "rstd", access: "read" }, // (T) from pass 1
    { name: "dWeight", access: "read_write" }, // (C), accumulated
  ],
  params: [
    { name: "rows", type: "u32" },
    { name: "C", type: "u32" },
    { name: "rowStride", type: "u32" },
  ],
  wgsl: () => `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x + gid.y * P.rowStride;
  if (c >= P.C) { return; }
  var acc = 0.0;
  for (var t = 0u; t < P.rows; t++) {
    let i = t * P.C + c;
    acc += dOut[i] * (x[i] * rstd[t]); // out = (x·rstd)·w, so ∂out/∂w = x·rstd
  }
  dWeight[c] = dWeight[c] + acc;
}`,
};

/** Per-device scratch for the per-row rstd, grown to the largest row count seen. */
const scratch = new WeakMap<Gpu, Tensor>();

function rstdScratch(gpu: Gpu, rows: number): Tensor {
  let t = scratch.get(gpu);
  if (!t || t.size < rows) {
    // Not destroyed when replaced: a step being recorded may still bind the old one.
    const size = Math.max(64, 2 ** Math.ceil(Math.log2(rows)));
    t = new Tensor(gpu, [size], "f32", "rms_norm_backward rstd");
    scratch.set(gpu, t);
  }
  return t;
}

/** Options of {@linkcode rmsNormBackward}. */
export interface RmsNormBackwardOptions {
  /** Add the input gradient into `dx` instead of overwriting it (default false). */
  accumulate?: boolean;
}

/**
 * Records the backward of `out = x·rstd·weight` (rstd = 1/sqrt(mean(x²) + eps), per row): writes
 * (or, with `accumulate`, adds) the input gradient into `dx`, and always adds the weight gradient
 * into `dWeight`.
 *
 * @param step the step to record into
 * @param x (T, C) the forward input
 * @param weight (C) gain
 * @param dOut (T, C) gradient of the output
 * @param dx (T, C) gradient of the input (a different tensor from `x` and `dOut`)
 * @param dWeight (C) gradient of the gain, accumulated into
 * @param eps the forward's eps
 * @param options `accumulate`: dx += instead of dx =
 *
 * @example Backward through the attention norm, adding into the residual stream's gradient
 * ```ts ignore
 * rmsNormBackward(step, x, inputNorm, dXn, dX, dInputNorm, 1e-5, { accumulate: true });
 * ```
 */
export function rmsNormBackward(
  step: Step,
  x: Tensor,
  weight: Tensor,
  dOut: Tensor,
  dx: Tensor,
  dWeight: Tensor,
  eps: number,
  options: RmsNormBackwardOptions = {},
): void {
  const C = weight.size;
  const rows = x.shape[0];
  const named = [["x", x], ["weight", weight], ["dOut", dOut], ["dx", dx], ["dWeight", dWeight]] as const;
  for (const [name, t] of named) {
    if (t.dtype !== "f32") {
      throw new TypeError(`rmsNormBackward: ${name} "${t.label}" must be f32, not ${t.dtype}`);
    }
  }
  if (x.size !== rows * C || dOut.size < rows * C || dx.size < rows * C || dWeight.size < C) {
    throw new RangeError(
      `rmsNormBackward: x "${x.label}" [${x.shape.join(", ")}], dOut [${dOut.shape.join(", ")}], ` +
        `dx [${dx.shape.join(", ")}] and dWeight [${dWeight.shape.join(", ")}] do not match a weight of ` +
        `${C} channels`,
    );
  }
  if (dx.buffer === x.buffer || dx.buffer === dOut.buffer || dx.buffer === dWeight.buffer) {
    throw new RangeError(
      `rmsNormBackward: dx "${dx.label}" must be a tensor of its own (not x, dOut or dWeight)`,
    );
  }
  if ([x, weight, dOut].some((t) => t.buffer === dWeight.buffer)) {
    throw new RangeError(`rmsNormBackward: dWeight "${dWeight.label}" must be a tensor of its own`);
  }
  if (rows === 0 || C === 0) return;
  const rstd = rstdScratch(step.gpu, rows);
  const gridX = Math.min(rows, 65535);
  step.dispatch(rmsNormBackwardDxSpec, {
    variant: { WG, ACC: options.accumulate === true },
    bindings: { x, weight, dOut, dx, rstd },
    params: { rows, C, gridX, eps },
    workgroups: [gridX, Math.ceil(rows / gridX)],
  });
  const { workgroups, rowStride } = grid1d(C, WG);
  step.dispatch(rmsNormBackwardDwSpec, {
    variant: { WG },
    bindings: { x, dOut, rstd, dWeight },
    params: { rows, C, rowStride },
    workgroups,
  });
}

/** Gradients returned by {@linkcode rmsNormBackwardReference}. */
export interface RmsNormGradients {
  /** (T, C) gradient of the input. */
  dx: Float32Array;
  /** (C) gradient of the gain. */
  dWeight: Float32Array;
}

/**
 * CPU reference: the RMSNorm backward with f64 accumulation, written from the formula (not from the
 * shader).
 *
 * @param x (T, C) forward input
 * @param weight (C) gain
 * @param dOut (T, C) gradient of the output
 * @param eps the forward's eps
 * @param dxIn initial dx to add to (accumulate), or undefined to start from zero
 * @param dWeightIn initial dWeight to add to (default zeros)
 * @returns dx and dWeight
 *
 * @example One row of two channels
 * ```ts
 * import { rmsNormBackwardReference } from "./rms_norm_backward.ts";
 * const { dx, dWeight } = rmsNormBackwardReference(
 *   new Float32Array([3, 4]), new Float32Array([1, 1]), new Float32Array([1, 0]), 0,
 * );
 * // dx ≈ [0.1810, -0.1358], dWeight ≈ [0.8485, 0]
 * ```
 */
export function rmsNormBackwardReference(
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  dOut: ArrayLike<number>,
  eps: number,
  dxIn?: ArrayLike<number>,
  dWeightIn?: ArrayLike<number>,
): RmsNormGradients {
  const C = weight.length;
  const T = x.length / C;
  const dx = new Float32Array(x.length);
  const dw = dWeightIn ? Float64Array.from(dWeightIn) : new Float64Array(C);
  for (let t = 0; t < T; t++) {
    const o = t * C;
    // rstd of the row and the projection Σ_j d_j·w_j·x_j, in f64.
    let sumSq = 0;
    let dot = 0;
    for (let c = 0; c < C; c++) {
      sumSq += x[o + c] * x[o + c];
      dot += dOut[o + c] * weight[c] * x[o + c];
    }
    const rstd = 1 / Math.sqrt(sumSq / C + eps);
    for (let c = 0; c < C; c++) {
      // Direct path through x_c, then the path through rstd (∂rstd/∂x_c = −rstd³·x_c/C).
      const g = rstd * weight[c] * dOut[o + c] - (x[o + c] * rstd * rstd * rstd * dot) / C;
      dx[o + c] = (dxIn ? dxIn[o + c] : 0) + g;
      dw[c] += dOut[o + c] * x[o + c] * rstd;
    }
  }
  return { dx, dWeight: Float32Array.from(dw) };
}
