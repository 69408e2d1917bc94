/**
 * Row store at a GPU-resident offset: `dst[base + t] = src[t]`, with `base = state[baseSlot]`.
 * Writes a block's values into the KV cache at rows base..base+T-1 without the host knowing base.
 *
 * Dimension letters: T rows stored, S rows of the destination, W values per row (KVH·D for a
 * value cache). Rows that would land at or past S are dropped, never written out of bounds.
 *
 * @module
 */

import type { KernelSpec, Step, Tensor } from "../core/mod.ts";
import { grid1d } from "./add.ts";

const WG = 64;

/**
 * dst[(base + t)*W + w] = src[t*W + w] for t < rows, one invocation per element over a 2-D grid
 * (`rowStride` as in {@linkcode grid1d}). With variant `V4` the elements are vec4s (W and n count
 * vec4s; used when W is a multiple of 4).
 *
 * @example Dispatching the spec directly (prefer {@linkcode storeRowsForward})
 * ```ts ignore
 * const { workgroups, rowStride } = grid1d((T * W) / 4, 64);
 * step.dispatch(storeRowsSpec, {
 *   variant: { WG: 64, V4: true },
 *   bindings: { src, dst, state },
 *   params: { n: (T * W) / 4, rowStride, W: W / 4, dstRows: S, baseSlot: 0 },
 *   workgroups,
 * });
 * ```
 */
export const storeRowsSpec: KernelSpec = {
  name: "store_rows",
  bindings: (variant) => [
    // Copied as u32 bits: exact for f32 too (no float load/store may touch NaN payloads).
    { name: "src", access: "read", type: variant.V4 ? "vec4<u32>" : "u32" }, // (T, W)
    { name: "dst", access: "read_write", type: variant.V4 ? "vec4<u32>" : "u32" }, // (S, W)
    { name: "state", access: "read", type: "u32" }, // state[baseSlot] = base
  ],
  params: [
    { name: "n", type: "u32" }, // rows * W
    { name: "rowStride", type: "u32" },
    { name: "W", type: "u32" },
    { name: "dstRows", type: "u32" },
    { name: "baseSlot", type: "u32" },
  ],
  wgsl: () => `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * P.rowStride;
  if (i >= P.n) { return; }
  let t = i / P.W;
  let row = state[P.baseSlot] + t;
  if (row >= P.dstRows) { return; } // past the end of dst: dropped
  dst[row * P.W + (i - t * P.W)] = src[i];
}`,
};

/** Options of {@linkcode storeRowsForward}. */
export interface StoreRowsOptions {
  /** Index in `state` of the first destination row. */
  baseSlot: number;
  /** Rows of `src` to store (default `src.shape[0]`). */
  rows?: number;
}

/**
 * Records `dst[base + t] = src[t]` for t < rows, where `base = state[baseSlot]` on the GPU.
 *
 * @param step the step to record into
 * @param src (T, W) rows to store (W = the product of the trailing dimensions of `dst`)
 * @param dst (S, ...) destination, e.g. a (S, KVH, D) value cache
 * @param state u32 tensor holding base at `baseSlot`
 * @param options slot of base, number of rows
 *
 * @example Appending a block's values to the cache at the GPU-resident position
 * ```ts ignore
 * storeRowsForward(step, v, cache.v[layer], state, { baseSlot: 0, rows: T });
 * ```
 */
export function storeRowsForward(
  step: Step,
  src: Tensor,
  dst: Tensor,
  state: Tensor,
  options: StoreRowsOptions,
): void {
  const S = dst.shape[0];
  const W = S > 0 ? dst.size / S : 0;
  const rows = options.rows ?? src.shape[0];
  const baseSlot = options.baseSlot;
  if (src.dtype !== dst.dtype || (src.dtype !== "f32" && src.dtype !== "u32" && src.dtype !== "i32")) {
    throw new TypeError(
      `storeRowsForward: src "${src.label}" (${src.dtype}) and dst "${dst.label}" (${dst.dtype}) must share a ` +
        `32-bit dtype`,
    );
  }
  if (src.size < rows * W) {
    throw new RangeError(
      `storeRowsForward: src "${src.label}" [${
        src.shape.join(", ")
      }] has fewer than ${rows} rows of ${W} values`,
    );
  }
  if (state.dtype !== "u32" || !Number.isInteger(baseSlot) || baseSlot < 0 || baseSlot >= state.size) {
    throw new RangeError(
      `storeRowsForward: baseSlot ${baseSlot} is not a slot of u32 state "${state.label}"`,
    );
  }
  if (rows === 0 || W === 0) return;
  const v4 = W % 4 === 0;
  const width = v4 ? W / 4 : W; // in elements of the variant
  const n = rows * width;
  const { workgroups, rowStride } = grid1d(n, WG);
  step.dispatch(storeRowsSpec, {
    variant: { WG, V4: v4 },
    bindings: { src, dst, state },
    params: { n, rowStride, W: width, dstRows: S, baseSlot },
    workgroups,
  });
}

/**
 * CPU reference: a copy of `dst` with rows base..base+rows-1 replaced by `src` (rows past the end
 * dropped).
 *
 * @param dst (S, W) destination values
 * @param src (T, W) rows
 * @param W values per row
 * @param base first destination row
 * @param rows rows to store
 * @returns the updated copy
 *
 * @example
 * ```ts
 * import { storeRowsReference } from "./store_rows.ts";
 * storeRowsReference(new Float32Array(6), new Float32Array([7, 8]), 2, 1, 1); // [0, 0, 7, 8, 0, 0]
 * ```
 */
export function storeRowsReference(
  dst: Float32Array,
  src: Float32Array,
  W: number,
  base: number,
  rows: number,
): Float32Array {
  const out = dst.slice();
  const S = dst.length / W;
  for (let t = 0; t < rows && base + t < S; t++) {
    for (let w = 0; w < W; w++) out[(base + t) * W + w] = src[t * W + w];
  }
  return out;
}
