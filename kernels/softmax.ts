/**
 * Row softmax: `out[t, v] = exp(x[t, v] - max_t) / Σ_u exp(x[t, u] - max_t)`.
 *
 * Dimension letters: T rows, V columns (any V ≥ 1, e.g. a vocabulary). One workgroup per row:
 * each invocation keeps a running (max, sum of exp) over a strided slice (online softmax), one
 * barrier publishes the pairs, every invocation merges them in the same order, then writes its
 * slice. Subtracting the row max keeps exp in range for any finite input.
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
 * Row-wise softmax. Workgroup `(x, y)` handles row `x + y * gridX`. Variant: `WG` (invocations
 * per row), `V4` (elements are vec4s and V counts vec4s; used when V is a multiple of 4).
 *
 * @example Dispatching the spec directly (prefer {@linkcode softmaxForward})
 * ```ts ignore
 * step.dispatch(softmaxSpec, {
 *   variant: { WG: 8, V4: true },
 *   bindings: { x, out },
 *   params: { rows: T, V: V / 4, gridX: T },
 *   workgroups: [T],
 * });
 * ```
 */
export const softmaxSpec: KernelSpec = {
  name: "softmax",
  bindings: (variant) => [
    { name: "x", access: "read", type: variant.V4 ? "vec4<f32>" : "f32" }, // (T, V)
    { name: "out", access: "read_write", type: variant.V4 ? "vec4<f32>" : "f32" }, // (T, V)
  ],
  params: [
    { name: "rows", type: "u32" },
    { name: "V", type: "u32" }, // row length in elements of the variant
    { name: "gridX", type: "u32" },
  ],
  wgsl: (variant) => `
const LOWEST: f32 = -3.4028234e38; // -FLT_MAX; Tint refuses the decimal -3.4028235e38 as out of range
var<workgroup> partMax: array<f32, WG>;
var<workgroup> partSum: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * P.gridX;
  if (row >= P.rows) { return; } // uniform: the whole workgroup leaves together
  let start = row * P.V;
  // 1. Online (max, sum) over a strided slice: sum is kept relative to the running max.
  var m = LOWEST;
  var s = 0.0;
  for (var v = lid; v < P.V; v += WG) {
    let value = x[start + v];
${
    variant.V4
      ? `    let mNew = max(m, max(max(value.x, value.y), max(value.z, value.w)));
    s = s * exp(m - mNew) + dot(exp(value - mNew), vec4<f32>(1.0));`
      : `    let mNew = max(m, value);
    s = s * exp(m - mNew) + exp(value - mNew);`
  }
    m = mNew;
  }
  partMax[lid] = m;
  partSum[lid] = s;
  workgroupBarrier();
  // 2. Merge the pairs (same order in every invocation). Empty slices have s = 0.
  var rowMax = LOWEST;
  for (var k = 0u; k < WG; k++) { rowMax = max(rowMax, partMax[k]); }
  var total = 0.0;
  for (var k = 0u; k < WG; k++) { total += partSum[k] * exp(partMax[k] - rowMax); }
  let inv = 1.0 / total;
  // 3. Normalise.
  for (var v = lid; v < P.V; v += WG) {
    out[start + v] = exp(x[start + v] - rowMax) * inv;
  }
}`,
};

/**
 * Records a numerically stable softmax over each row of `x`.
 *
 * @param step the step to record into
 * @param x (T, V) input
 * @param out (T, V) output (a different tensor from `x`)
 *
 * @example Token probabilities from logits
 * ```ts ignore
 * const step = new Step(gpu, "probs");
 * softmaxForward(step, logits, probs);
 * step.submit();
 * ```
 */
export function softmaxForward(step: Step, x: Tensor, out: Tensor): void {
  const V = x.shape[x.shape.length - 1];
  const rows = V > 0 ? x.size / V : 0;
  if (x.dtype !== "f32" || out.dtype !== "f32") {
    throw new TypeError(`softmaxForward: x "${x.label}" and out "${out.label}" must be f32`);
  }
  if (out.size < x.size) {
    throw new RangeError(
      `softmaxForward: out "${out.label}" [${out.shape.join(", ")}] is smaller than x [${
        x.shape.join(", ")
      }]`,
    );
  }
  if (rows === 0) return;
  const gridX = Math.min(rows, 65535);
  const v4 = V % 4 === 0;
  step.dispatch(softmaxSpec, {
    variant: { WG: _workgroupSize(step.gpu), V4: v4 },
    bindings: { x, out },
    params: { rows, V: v4 ? V / 4 : V, gridX },
    workgroups: [gridX, Math.ceil(rows / gridX)],
  });
}

/**
 * CPU reference: softmax of each row of a (T, V) array, in f64.
 *
 * @param x (T, V) values
 * @param V columns
 * @returns (T, V) probabilities
 *
 * @example
 * ```ts
 * import { softmaxReference } from "./softmax.ts";
 * softmaxReference(new Float32Array([0, Math.log(3)]), 2); // ≈ [0.25, 0.75]
 * ```
 */
export function softmaxReference(x: Float32Array, V: number): Float32Array {
  const T = x.length / V;
  const out = new Float32Array(x.length);
  for (let t = 0; t < T; t++) {
    let max = -Infinity;
    for (let v = 0; v < V; v++) max = Math.max(max, x[t * V + v]);
    let sum = 0;
    for (let v = 0; v < V; v++) sum += Math.exp(x[t * V + v] - max);
    for (let v = 0; v < V; v++) out[t * V + v] = Math.exp(x[t * V + v] - max) / sum;
  }
  return out;
}
