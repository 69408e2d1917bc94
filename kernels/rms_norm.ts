/**
 * RMS normalisation (Llama): `out = x / sqrt(mean(x²) + eps) * weight`, per row.
 *
 * Dimension letters: T rows, C channels. One workgroup per row: each invocation sums the squares
 * of a strided slice in f32, one barrier publishes the partial sums, and every invocation adds them
 * in the same order (so all agree bit for bit) before it scales its slice. One barrier per row is
 * the cheapest reduction on llvmpipe, where barriers are expensive (docs/webgpu.md §3).
 *
 * @module
 */

import type { Gpu, KernelSpec, Step, Tensor } from "../core/mod.ts";

/**
 * Invocations per row: on software adapters (llvmpipe) one SIMD chunk of 8 lanes, because a
 * storage load costs the same per SIMD instruction however many lanes share a row, and the merge
 * and barrier get cheaper with fewer lanes (measured 2-3x faster than 64 or 256 lanes); on GPUs a
 * wide workgroup.
 */
function _workgroupSize(gpu: Gpu): number {
  return gpu.adapter.isFallbackAdapter ? 8 : 256;
}

/**
 * Row-wise RMSNorm. Workgroup `(x, y)` handles row `x + y * gridX`; `rows`, `C`, `eps` are
 * parameters; the variant sets `WG` (invocations per row) and `V4` (elements are vec4s and C
 * counts vec4s; used when C is a multiple of 4).
 *
 * @example Dispatching the spec directly (prefer {@linkcode rmsNormForward})
 * ```ts ignore
 * step.dispatch(rmsNormSpec, {
 *   variant: { WG: 8, V4: true },
 *   bindings: { x, weight, out },
 *   params: { rows: T, C: C / 4, gridX: T, eps: 1e-5, channels: C },
 *   workgroups: [T],
 * });
 * ```
 */
export const rmsNormSpec: KernelSpec = {
  name: "rms_norm",
  bindings: (variant) => [
    { name: "x", access: "read", type: variant.V4 ? "vec4<f32>" : "f32" }, // (T, C)
    { name: "weight", access: "read", type: variant.V4 ? "vec4<f32>" : "f32" }, // (C)
    { name: "out", access: "read_write", type: variant.V4 ? "vec4<f32>" : "f32" }, // (T, C)
  ],
  params: [
    { name: "rows", type: "u32" },
    { name: "C", type: "u32" }, // row length in elements of the variant
    { name: "gridX", type: "u32" },
    { name: "eps", type: "f32" },
    { name: "channels", type: "f32" }, // C as a float, for the mean
  ],
  wgsl: (variant) => `
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * P.gridX;
  if (row >= P.rows) { return; } // uniform: the whole workgroup leaves together
  let start = row * P.C;
  // 1. Strided sum of squares, in f32.
  var s = 0.0;
  for (var c = lid; c < P.C; c += WG) {
    let v = x[start + c];
    s += ${variant.V4 ? "dot(v, v)" : "v * v"};
  }
  partial[lid] = s;
  workgroupBarrier();
  // 2. Every invocation adds the partial sums in the same order.
  var total = 0.0;
  for (var k = 0u; k < WG; k++) { total += partial[k]; }
  let inv = 1.0 / sqrt(total / P.channels + P.eps);
  // 3. Scale: (x * inv) * weight, the order Hugging Face's LlamaRMSNorm uses.
  for (var c = lid; c < P.C; c += WG) {
    out[start + c] = (x[start + c] * inv) * weight[c];
  }
}`,
};

/**
 * Records `out[t] = x[t] / sqrt(mean(x[t]²) + eps) * weight` for every row of `x`.
 *
 * @param step the step to record into
 * @param x (T, C) input
 * @param weight (C) gain
 * @param out (T, C) output (a different tensor from `x`)
 * @param eps added to the mean square (Llama uses 1e-5 or 1e-6)
 *
 * @example Normalising the residual stream before attention
 * ```ts ignore
 * const step = new Step(gpu, "norm");
 * rmsNormForward(step, x, inputNorm, xn, 1e-5);
 * step.submit();
 * ```
 */
export function rmsNormForward(step: Step, x: Tensor, weight: Tensor, out: Tensor, eps: number): void {
  const C = weight.size;
  const rows = C > 0 ? x.size / C : 0;
  for (const [name, t] of [["x", x], ["weight", weight], ["out", out]] as const) {
    if (t.dtype !== "f32") {
      throw new TypeError(`rmsNormForward: ${name} "${t.label}" must be f32, not ${t.dtype}`);
    }
  }
  if (!Number.isInteger(rows) || out.size < x.size) {
    throw new RangeError(
      `rmsNormForward: x "${x.label}" [${x.shape.join(", ")}] and out "${out.label}" ` +
        `[${out.shape.join(", ")}] do not match a weight of ${C} channels`,
    );
  }
  if (rows === 0 || C === 0) return;
  const gridX = Math.min(rows, 65535);
  const v4 = C % 4 === 0;
  step.dispatch(rmsNormSpec, {
    variant: { WG: _workgroupSize(step.gpu), V4: v4 },
    bindings: { x, weight, out },
    params: { rows, C: v4 ? C / 4 : C, gridX, eps, channels: C },
    workgroups: [gridX, Math.ceil(rows / gridX)],
  });
}

/**
 * CPU reference: RMSNorm with f64 accumulation.
 *
 * @param x (T, C) input
 * @param weight (C) gain
 * @param eps added to the mean square
 * @returns (T, C) output
 *
 * @example One row
 * ```ts
 * import { rmsNormReference } from "./rms_norm.ts";
 * rmsNormReference(new Float32Array([3, 4]), new Float32Array([1, 1]), 0); // ≈ [0.8485, 1.1314]
 * ```
 */
export function rmsNormReference(x: Float32Array, weight: Float32Array, eps: number): Float32Array {
  const C = weight.length;
  const T = x.length / C;
  const out = new Float32Array(x.length);
  for (let t = 0; t < T; t++) {
    let sumSq = 0;
    for (let c = 0; c < C; c++) sumSq += x[t * C + c] * x[t * C + c];
    const inv = 1 / Math.sqrt(sumSq / C + eps);
    for (let c = 0; c < C; c++) out[t * C + c] = x[t * C + c] * inv * weight[c];
  }
  return out;
}
