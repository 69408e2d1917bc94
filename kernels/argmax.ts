/**
 * Per-row argmax: `out[outOffset + t] = argmax_v logits[t, v]`, the greedy pick, kept on the GPU
 * so decoding loops need no readback per token.
 *
 * Ties go to the LOWEST index, like a CPU loop that keeps the first maximum (and like
 * `torch.argmax` / `numpy.argmax`), so greedy GPU decoding reproduces a CPU reference exactly.
 * NaN logits are unspecified (WGSL lets implementations assume there are none).
 *
 * Dimension letters: T rows, V vocabulary. One workgroup per row: each invocation scans a strided
 * slice in increasing order keeping its first maximum, one barrier publishes the (value, index)
 * pairs, and invocation 0 merges them with the same tie rule.
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
 * Row-wise argmax with lowest-index ties. Workgroup `(x, y)` handles row `x + y * gridX`.
 * Variant: `WG` (invocations per row), `V4` (logits read as vec4s, V counts vec4s; used when V is
 * a multiple of 4; the components of a vec4 are compared in index order).
 *
 * @example Dispatching the spec directly (prefer {@linkcode argmaxForward})
 * ```ts ignore
 * step.dispatch(argmaxSpec, {
 *   variant: { WG: 64, V4: true },
 *   bindings: { logits, out },
 *   params: { rows: T, V: V / 4, gridX: T, outOffset: 0 },
 *   workgroups: [T],
 * });
 * ```
 */
export const argmaxSpec: KernelSpec = {
  name: "argmax",
  bindings: (variant) => [
    { name: "logits", access: "read", type: variant.V4 ? "vec4<f32>" : "f32" }, // (T, V)
    { name: "out", access: "read_write", type: "u32" }, // (outOffset + T)
  ],
  params: [
    { name: "rows", type: "u32" },
    { name: "V", type: "u32" }, // row length in elements of the variant
    { name: "gridX", type: "u32" },
    { name: "outOffset", type: "u32" },
  ],
  wgsl: (variant) => `
const NONE: u32 = 0xffffffffu;
var<workgroup> bestValue: array<f32, WG>;
var<workgroup> bestIndex: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * P.gridX;
  if (row >= P.rows) { return; } // uniform: the whole workgroup leaves together
  let start = row * P.V;
  // 1. Strided scan in increasing index order; strict > keeps the first (lowest) maximum.
  var best = 0.0;
  var index = NONE;
  for (var v = lid; v < P.V; v += WG) {
    let value = logits[start + v];
${
    variant.V4
      ? [0, 1, 2, 3].map((c) => {
        const comp = "xyzw"[c];
        return `    if (index == NONE || value.${comp} > best) {
      best = value.${comp};
      index = 4u * v + ${c}u;
    }`;
      }).join("\n")
      : `    if (index == NONE || value > best) {
      best = value;
      index = v;
    }`
  }
  }
  bestValue[lid] = best;
  bestIndex[lid] = index;
  workgroupBarrier();
  // 2. Merge: a larger value wins; an equal value wins only with a lower index.
  if (lid == 0u) {
    var b = bestValue[0];
    var i = bestIndex[0];
    for (var k = 1u; k < WG; k++) {
      let ki = bestIndex[k];
      if (ki == NONE) { continue; }
      let kv = bestValue[k];
      if (i == NONE || kv > b || (kv == b && ki < i)) {
        b = kv;
        i = ki;
      }
    }
    out[P.outOffset + row] = i;
  }
}`,
};

/** Options of {@linkcode argmaxForward}. */
export interface ArgmaxOptions {
  /** Index in `out` written for row 0 (default 0). */
  outOffset?: number;
}

/**
 * Records `out[outOffset + t] = argmax(logits[t])` for every row; ties give the lowest index.
 *
 * @param step the step to record into
 * @param logits (T, V) f32 scores
 * @param out u32 output with at least `outOffset + T` elements
 * @param options where to write row 0
 *
 * @example Greedy tokens of a Jacobi block, written after the context in a token buffer
 * ```ts ignore
 * const step = new Step(gpu, "greedy");
 * argmaxForward(step, logits, tokens, { outOffset: 128 });
 * step.submit();
 * ```
 */
export function argmaxForward(step: Step, logits: Tensor, out: Tensor, options: ArgmaxOptions = {}): void {
  const V = logits.shape[logits.shape.length - 1];
  const rows = V > 0 ? logits.size / V : 0;
  const outOffset = options.outOffset ?? 0;
  if (logits.dtype !== "f32") {
    throw new TypeError(`argmaxForward: logits "${logits.label}" must be f32, not ${logits.dtype}`);
  }
  if (out.dtype !== "u32") {
    throw new TypeError(`argmaxForward: out "${out.label}" must be u32, not ${out.dtype}`);
  }
  if (!Number.isInteger(outOffset) || outOffset < 0 || outOffset + rows > out.size) {
    throw new RangeError(
      `argmaxForward: writing ${rows} indices at ${outOffset} overruns "${out.label}" of ${out.size} elements`,
    );
  }
  if (rows === 0) return;
  const gridX = Math.min(rows, 65535);
  const v4 = V % 4 === 0;
  step.dispatch(argmaxSpec, {
    variant: { WG: _workgroupSize(step.gpu), V4: v4 },
    bindings: { logits, out },
    params: { rows, V: v4 ? V / 4 : V, gridX, outOffset },
    workgroups: [gridX, Math.ceil(rows / gridX)],
  });
}

/**
 * CPU reference: index of the first maximum of each row.
 *
 * @param logits (T, V) values
 * @param V columns
 * @returns T indices
 *
 * @example Ties give the lowest index
 * ```ts
 * import { argmaxReference } from "./argmax.ts";
 * argmaxReference(new Float32Array([1, 3, 3, 0]), 4); // Uint32Array [1]
 * ```
 */
export function argmaxReference(logits: Float32Array, V: number): Uint32Array {
  const T = logits.length / V;
  const out = new Uint32Array(T);
  for (let t = 0; t < T; t++) {
    let best = 0;
    for (let v = 1; v < V; v++) {
      if (logits[t * V + v] > logits[t * V + best]) best = v;
    }
    out[t] = best;
  }
  return out;
}
