/**
 * Rotary position embedding, Hugging Face "rotate half" convention (`LlamaRotaryEmbedding` with
 * linear scaling): for a head vector x of size D, half = D/2 and i < half,
 *
 *     freq_i = theta^(-2i/D),  angle = (pos / scale) · freq_i,
 *     out[i]        = x[i]·cos(angle) − x[i+half]·sin(angle),
 *     out[i + half] = x[i+half]·cos(angle) + x[i]·sin(angle).
 *
 * Dimension letters: T rows, H heads (query or key/value heads), D head size, S cache rows.
 *
 * Positions are GPU-resident: row t sits at `base + t` (or `base + relPositions[t]`), with
 * `base = state[baseSlot]` read on the GPU. With `toCache`, row t is written to output row
 * `base + t`, so keys are rotated straight into a (S, KVH, D) cache.
 *
 * Accuracy: an f32 angle `pos · freq` near 4096 rad is only good to ~4e-4 rad, so the kernel never
 * forms it. Instead the host computes, in f64, `g_i = freq_i / (scale · 2π)` (turns per position)
 * split as g1 + g2 + g3, where g1 and g2 have 8 significant bits: for integer positions below 2^16,
 * `pos·g1` and `pos·g2` are exact in f32 and so are their fractional parts, leaving only `pos·g3`
 * (≤ 2^-16 of the total) and a few roundings. The reduced angle lies in [−π, π] with an error of a
 * few 1e-7 rad at any position up to 65535 (beyond that the error grows like an f32 product).
 * Measured against an f64 reference with |x| ≤ 1 on llvmpipe: max |error| ~1.1e-6 at base 0, 1000,
 * 4000, 20000 and 65000 alike (a plain f32 angle is off by 2.4e-4 rad at 4000, 3.9e-3 at 65000).
 * The split table is a small tensor built once per (D, theta, scale) and device.
 *
 * The backward (rope_backward.ts) is this same kernel with variant `INV`: a rotation's transpose is
 * the rotation by minus the angle, so it negates the sine and nothing else, and forward and backward
 * rotate by exactly the same f32 angle.
 *
 * @module
 */

import { type Gpu, type KernelSpec, type Step, Tensor } from "../core/mod.ts";
import { grid1d } from "./add.ts";

const WG = 64;

/**
 * Rotary embedding of `rows × heads` head vectors, one invocation per rotated pair (t, h, i).
 * Variant `REL` adds the `rel` binding (per-row position offsets); variant `INV` rotates by minus
 * the angle (the transpose, used by the backward).
 *
 * @example Dispatching the spec directly (prefer {@linkcode ropeForward})
 * ```ts ignore
 * const n = T * H * (D / 2);
 * const { workgroups, rowStride } = grid1d(n, 64);
 * step.dispatch(ropeSpec, {
 *   variant: { WG: 64, REL: false, INV: false },
 *   bindings: { x, out, state, table: ropeTable(gpu, D, 10000, 1) },
 *   params: { n, rowStride, heads: H, half: D / 2, baseSlot: 0, toCache: 0, outRows: T },
 *   workgroups,
 * });
 * ```
 */
export const ropeSpec: KernelSpec = {
  name: "rope",
  bindings: (variant) => [
    { name: "x", access: "read" }, // (T, H, D)
    { name: "out", access: "read_write" }, // (T, H, D), or (S, H, D) with toCache
    { name: "state", access: "read", type: "u32" }, // state[baseSlot] = base
    { name: "table", access: "read", type: "vec4<f32>" }, // (D/2) of (g1, g2, g3, 0)
    ...(variant.REL ? [{ name: "rel", access: "read" as const, type: "u32" }] : []), // (T)
  ],
  params: [
    { name: "n", type: "u32" }, // rows * heads * half
    { name: "rowStride", type: "u32" },
    { name: "heads", type: "u32" },
    { name: "half", type: "u32" },
    { name: "baseSlot", type: "u32" },
    { name: "toCache", type: "u32" }, // 1: output row = base + t; 0: output row = t
    { name: "outRows", type: "u32" }, // rows of out; rows past it are dropped
  ],
  wgsl: (variant) => `
const TWO_PI: f32 = 6.283185307179586;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let idx = gid.x + gid.y * P.rowStride;
  if (idx >= P.n) { return; }
  // idx = (t * heads + h) * half + i
  let i = idx % P.half;
  let th = idx / P.half;
  let t = th / P.heads;
  let base = state[P.baseSlot];
  ${variant.REL ? "let pos = base + rel[t];" : "let pos = base + t;"}
  var outRow = t;
  if (P.toCache != 0u) { outRow = base + t; }
  if (outRow >= P.outRows) { return; }
  // Angle in turns, reduced exactly: fract(pos*g1) and fract(pos*g2) are exact for pos < 2^16.
  let p = f32(pos);
  let g = table[i];
  var turns = fract(p * g.x) + fract(p * g.y) + p * g.z;
  turns = turns - round(turns); // [-0.5, 0.5]
  let angle = turns * TWO_PI;
  let c = cos(angle);
  let s = ${variant.INV ? "-sin(angle); // the transpose: minus the angle" : "sin(angle);"}
  let D = 2u * P.half;
  let src = th * D + i;
  let dst = (outRow * P.heads + (th - t * P.heads)) * D + i;
  let x0 = x[src];
  let x1 = x[src + P.half];
  out[dst] = x0 * c - x1 * s;
  out[dst + P.half] = x1 * c + x0 * s;
}`,
};

/** Rounds to `bits` significant bits (f64). */
function _roundBits(x: number, bits: number): number {
  if (x === 0) return 0;
  const quantum = 2 ** (Math.floor(Math.log2(Math.abs(x))) - (bits - 1));
  return Math.round(x / quantum) * quantum;
}

const tables = new WeakMap<Gpu, Map<string, Tensor>>();

/**
 * The (D/2, 4) table of split frequencies the kernel reads: row i holds g1, g2, g3, 0 with
 * g1 + g2 + g3 ≈ theta^(-2i/D) / (scale·2π) turns per position. Built once per device and key.
 *
 * @param gpu the device
 * @param headDim D (even)
 * @param theta rope base (10000 for Llama 2, 500000 for Llama 3)
 * @param scale linear position scaling factor (positions are divided by it)
 * @returns the cached table tensor
 *
 * @example Building the table for a Llama 2 head size
 * ```ts ignore
 * const table = ropeTable(gpu, 128, 10000, 1);
 * ```
 */
export function ropeTable(gpu: Gpu, headDim: number, theta: number, scale: number): Tensor {
  let perGpu = tables.get(gpu);
  if (!perGpu) tables.set(gpu, perGpu = new Map());
  const key = `${headDim}:${theta}:${scale}`;
  let table = perGpu.get(key);
  if (!table) {
    const half = headDim / 2;
    const data = new Float32Array(half * 4);
    for (let i = 0; i < half; i++) {
      const turns = Math.pow(theta, (-2 * i) / headDim) / scale / (2 * Math.PI);
      const g1 = _roundBits(turns, 8);
      const g2 = _roundBits(turns - g1, 8);
      data[4 * i] = g1;
      data[4 * i + 1] = g2;
      data[4 * i + 2] = turns - g1 - g2;
    }
    table = Tensor.from(gpu, data, [half, 4], `rope table D=${headDim} theta=${theta} scale=${scale}`);
    perGpu.set(key, table);
  }
  return table;
}

/** Options of {@linkcode ropeForward}. */
export interface RopeOptions {
  /** Index in `state` of base, the position of row 0 (the number of cached tokens). */
  baseSlot: number;
  /** Rope base theta. */
  theta: number;
  /** Linear scaling factor: positions are divided by it (default 1). */
  scale?: number;
  /** Rows to rotate (default `x.shape[0]`). */
  rows?: number;
  /** Heads per row. */
  heads: number;
  /** Head size D (even). */
  headDim: number;
  /** Per-row position offsets (u32, ≥ rows elements): row t is at base + relPositions[t]. */
  relPositions?: Tensor;
  /** Write row t to output row base + t (a KV cache) instead of row t (default false). */
  toCache?: boolean;
  /** Rotate by minus the angle: the transpose, i.e. the backward (default false). */
  inverse?: boolean;
}

/**
 * Records the rotary embedding of `rows` rows of `heads` head vectors at GPU-resident positions.
 * Row t sits at position `base + t` (or `base + relPositions[t]`), `base = state[baseSlot]`; it is
 * written to row t of `out`, or to row `base + t` with `toCache`. Rows that would land past the
 * end of `out` are dropped. `out` must be a different tensor from `x`.
 *
 * @param step the step to record into
 * @param x (T, H, D) input (any shape with T·H·D elements per the options)
 * @param out (T, H, D) output, or (S, H, D) with `toCache`
 * @param state u32 tensor holding base at `baseSlot`
 * @param options positions, sizes and frequencies
 *
 * @example Rotating queries into a scratch tensor and keys into the cache
 * ```ts ignore
 * const rope = { baseSlot: 0, theta: 10000, rows: T, headDim: D };
 * ropeForward(step, q, qRot, state, { ...rope, heads: H });
 * ropeForward(step, k, kCache, state, { ...rope, heads: KVH, toCache: true });
 * ```
 */
export function ropeForward(step: Step, x: Tensor, out: Tensor, state: Tensor, options: RopeOptions): void {
  recordRope("ropeForward", step, x, out, state, options);
}

/** Records {@linkcode ropeSpec} after the checks; `fn` names the caller in errors. */
export function recordRope(
  fn: string,
  step: Step,
  x: Tensor,
  out: Tensor,
  state: Tensor,
  options: RopeOptions,
): void {
  const { baseSlot, theta, heads, headDim } = options;
  const scale = options.scale ?? 1;
  const rows = options.rows ?? x.shape[0];
  const rowSize = heads * headDim;
  checkRopeArgs(fn, headDim, theta, scale, state, baseSlot);
  if (x.dtype !== "f32" || out.dtype !== "f32") {
    throw new TypeError(`${fn}: x "${x.label}" and out "${out.label}" must be f32`);
  }
  if (!Number.isInteger(rows) || rows < 0) {
    throw new RangeError(`${fn}: rows must be a whole number, not ${rows}`);
  }
  if (x.buffer === out.buffer) {
    throw new RangeError(`${fn}: out "${out.label}" must be a different tensor from x`);
  }
  if (
    x.size < rows * rowSize || out.size % rowSize !== 0 || (!options.toCache && out.size < rows * rowSize)
  ) {
    throw new RangeError(
      `${fn}: x "${x.label}" [${x.shape.join(", ")}] and out "${out.label}" [${out.shape.join(", ")}] ` +
        `do not hold ${rows} rows of ${heads} heads × ${headDim}`,
    );
  }
  const rel = options.relPositions;
  if (rel && (rel.dtype !== "u32" || rel.size < rows)) {
    throw new RangeError(
      `${fn}: relPositions "${rel.label}" must be u32 with at least ${rows} elements`,
    );
  }
  if (rows === 0 || heads === 0) return;
  const half = headDim / 2;
  const n = rows * heads * half;
  const { workgroups, rowStride } = grid1d(n, WG);
  const table = ropeTable(step.gpu, headDim, theta, scale);
  step.dispatch(ropeSpec, {
    variant: { WG, REL: rel !== undefined, INV: options.inverse === true },
    bindings: rel ? { x, out, state, table, rel } : { x, out, state, table },
    params: {
      n,
      rowStride,
      heads,
      half,
      baseSlot,
      toCache: options.toCache ? 1 : 0,
      outRows: out.size / rowSize,
    },
    workgroups,
  });
}

/** Arguments of {@linkcode ropeReference}. */
export interface RopeReferenceOptions {
  /** Heads per row. */
  heads: number;
  /** Head size D. */
  headDim: number;
  /** Rope base theta. */
  theta: number;
  /** Linear scaling factor (default 1). */
  scale?: number;
  /** Position of row 0. */
  base: number;
  /** Per-row offsets; row t is at base + relPositions[t] (default t). */
  relPositions?: Uint32Array;
  /** Rotate by minus the angle (the transpose; default false). */
  inverse?: boolean;
}

/**
 * CPU reference: rotate-half rotary embedding with angles and sin/cos in f64.
 *
 * @param x (T, H, D) input
 * @param options sizes and positions
 * @returns (T, H, D) rotated values
 *
 * @example One head of size 2 at position 1 (angle 1 rad)
 * ```ts
 * import { ropeReference } from "./rope.ts";
 * ropeReference(new Float32Array([1, 0]), { heads: 1, headDim: 2, theta: 10000, base: 1 }); // ≈ [0.5403, 0.8415] (cos 1, sin 1)
 * ```
 */
export function ropeReference(x: Float32Array, options: RopeReferenceOptions): Float32Array {
  const { heads, headDim: D, theta, base } = options;
  const scale = options.scale ?? 1;
  const half = D / 2;
  const T = x.length / (heads * D);
  const out = new Float32Array(x.length);
  for (let t = 0; t < T; t++) {
    const pos = base + (options.relPositions ? options.relPositions[t] : t);
    for (let h = 0; h < heads; h++) {
      const o = (t * heads + h) * D;
      for (let i = 0; i < half; i++) {
        const freq = Math.pow(theta, (-2 * i) / D);
        const angle = (pos / scale) * freq;
        const c = Math.cos(angle);
        const s = options.inverse ? -Math.sin(angle) : Math.sin(angle);
        out[o + i] = x[o + i] * c - x[o + i + half] * s;
        out[o + i + half] = x[o + i + half] * c + x[o + i] * s;
      }
    }
  }
  return out;
}

/**
 * The argument checks the RoPE forward and backward share: an even head size, positive theta and
 * scale, and a u32 state slot for the base position. Throws naming `fn`.
 */
export function checkRopeArgs(
  fn: string,
  headDim: number,
  theta: number,
  scale: number,
  state: Tensor,
  baseSlot: number,
): void {
  if (!Number.isInteger(headDim) || headDim < 2 || headDim % 2 !== 0) {
    throw new RangeError(`${fn}: headDim must be a positive even integer, not ${headDim}`);
  }
  if (!(theta > 0) || !(scale > 0)) {
    throw new RangeError(`${fn}: theta (${theta}) and scale (${scale}) must be positive`);
  }
  if (state.dtype !== "u32" || !Number.isInteger(baseSlot) || baseSlot < 0 || baseSlot >= state.size) {
    throw new RangeError(`${fn}: baseSlot ${baseSlot} is not a slot of u32 state "${state.label}"`);
  }
}
