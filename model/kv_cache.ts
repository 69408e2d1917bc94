/**
 * The key/value cache of a Llama model: per layer, K and V rows for every committed position.
 *
 * Truncation is a length, not a copy (docs/method.md §2.1): rows past the length are simply
 * overwritten by the next forward. The length the kernels use lives on the GPU (a slot of a u32
 * tensor), so decoding loops can advance it without the host; `positions` is a u32 tensor holding
 * 0, 1, 2, ... so a host-known position p is just slot p of it.
 *
 * @module
 */

import { type Gpu, Tensor } from "../core/mod.ts";

/** Where the kernels read the number of cached tokens (= the first position of the next rows). */
export interface PositionRef {
  /** A u32 tensor. */
  state: Tensor;
  /** Index into it. */
  slot: number;
}

/**
 * Per-layer K and V tensors of shape (S, KVH, D), S = the context length.
 *
 * @example A cache for a small model
 * ```ts ignore
 * const cache = new KvCache(gpu, { layers: 5, kvHeads: 4, headDim: 8, maxLength: 512 });
 * cache.truncate(0);
 * ```
 */
export class KvCache {
  /** Keys per layer, (S, KVH, D), already rotated. */
  readonly k: Tensor[] = [];
  /** Values per layer, (S, KVH, D). */
  readonly v: Tensor[] = [];
  /** Capacity in positions. */
  readonly maxLength: number;
  /** 0, 1, ..., maxLength: slot p holds p, for host-known positions. */
  readonly positions: Tensor;
  /** Host-side count of valid rows, for host-driven callers (GPU-resident loops keep their own). */
  length = 0;

  /**
   * Allocates the cache.
   *
   * @param gpu the device
   * @param dims layers, KV heads, head size and capacity
   */
  constructor(gpu: Gpu, dims: { layers: number; kvHeads: number; headDim: number; maxLength: number }) {
    this.maxLength = dims.maxLength;
    for (let l = 0; l < dims.layers; l++) {
      this.k.push(new Tensor(gpu, [dims.maxLength, dims.kvHeads, dims.headDim], "f32", `kcache.${l}`));
      this.v.push(new Tensor(gpu, [dims.maxLength, dims.kvHeads, dims.headDim], "f32", `vcache.${l}`));
    }
    const iota = new Uint32Array(dims.maxLength + 1);
    for (let i = 0; i < iota.length; i++) iota[i] = i;
    this.positions = Tensor.from(gpu, iota, [iota.length], "positions");
  }

  /** The position reference for a host-known position. */
  at(position: number): PositionRef {
    if (position < 0 || position > this.maxLength) {
      throw new RangeError(`Position ${position} is outside the KV cache (0..${this.maxLength})`);
    }
    return { state: this.positions, slot: position };
  }

  /**
   * Forgets every row at or past `length` (nothing is copied; later forwards overwrite them).
   *
   * @param length the number of rows to keep
   */
  truncate(length: number): void {
    if (!Number.isInteger(length) || length < 0 || length > this.length) {
      throw new RangeError(`Cannot truncate a KV cache of length ${this.length} to ${length}`);
    }
    this.length = length;
  }

  /** Frees the GPU memory. */
  destroy(): void {
    for (const t of [...this.k, ...this.v, this.positions]) t.destroy();
  }
}
