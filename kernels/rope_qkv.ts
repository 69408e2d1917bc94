/**
 * RoPE of q and k plus the KV-cache store, in one dispatch: the three kernels (rope q, rope k into
 * the cache, store v into the cache) that follow the fused q/k/v product in a decoding forward.
 *
 * Input: `qkv` (T, H·D + 2·KVH·D), each row q | k | v as `matmulGroupsForward` writes them. Output:
 * `qr` (T, H, D) rotated queries; `kCache` and `vCache` rows base + t (rows past the cache's end
 * are dropped) hold the rotated keys and the values. Row t sits at position base + t, or
 * base + rel[t] with per-row positions (lookahead), base read on the GPU from `state[baseSlot]`.
 * Angles are computed exactly as kernels/rope.ts does (the same table and reduction), so the result
 * equals the three separate kernels bit for bit.
 *
 * Dimension letters: T rows, H query heads, KVH key/value heads, D head size, S cache rows.
 *
 * @module
 */

import type { KernelSpec, Step, Tensor } from "../core/mod.ts";
import { grid1d } from "./add.ts";
import { checkRopeArgs, ropeReference, ropeTable } from "./rope.ts";

const WG = 64;

/**
 * The fused kernel: one invocation per q pair, k pair and v element of every row.
 * Variant: `WG`, `REL` (per-row positions).
 */
export const ropeQkvSpec: KernelSpec = {
  name: "rope_qkv",
  bindings: (variant) => [
    { name: "qkv", access: "read" }, // (T, H·D + 2·KVH·D)
    { name: "qr", access: "read_write" }, // (T, H, D)
    { name: "kc", access: "read_write" }, // (S, KVH, D)
    { name: "vc", access: "read_write" }, // (S, KVH, D)
    { name: "state", access: "read", type: "u32" },
    { name: "table", access: "read", type: "vec4<f32>" }, // (D/2) of (g1, g2, g3, 0), kernels/rope.ts
    ...(variant.REL ? [{ name: "rel", access: "read" as const, type: "u32" }] : []),
  ],
  params: [
    { name: "n", type: "u32" }, // T · per-row items
    { name: "rowStride", type: "u32" },
    { name: "heads", type: "u32" },
    { name: "kvHeads", type: "u32" },
    { name: "half", type: "u32" },
    { name: "baseSlot", type: "u32" },
    { name: "cacheRows", type: "u32" },
  ],
  wgsl: (variant) => `
const TWO_PI: f32 = 6.283185307179586;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let idx = gid.x + gid.y * P.rowStride;
  if (idx >= P.n) { return; }
  let D = 2u * P.half;
  let qPairs = P.heads * P.half;
  let kPairs = P.kvHeads * P.half;
  let vItems = P.kvHeads * D;
  let perRow = qPairs + kPairs + vItems;
  let t = idx / perRow;
  var j = idx - t * perRow;
  let base = state[P.baseSlot];
  let inRow = t * (P.heads * D + 2u * P.kvHeads * D);
  let cacheRow = base + t;
  if (j >= qPairs + kPairs) {
    // v: copied into the cache row.
    j = j - qPairs - kPairs;
    if (cacheRow < P.cacheRows) { vc[cacheRow * vItems + j] = qkv[inRow + (P.heads + P.kvHeads) * D + j]; }
    return;
  }
  ${variant.REL ? "let pos = base + rel[t];" : "let pos = base + t;"}
  var isK = false;
  if (j >= qPairs) {
    isK = true;
    j = j - qPairs;
  }
  let h = j / P.half;
  let i = j - h * P.half;
  // Angle in turns, reduced exactly (kernels/rope.ts).
  let p = f32(pos);
  let g = table[i];
  var turns = fract(p * g.x) + fract(p * g.y) + p * g.z;
  turns = turns - round(turns);
  let angle = turns * TWO_PI;
  let c = cos(angle);
  let s = sin(angle);
  if (isK) {
    if (cacheRow >= P.cacheRows) { return; }
    let src = inRow + P.heads * D + h * D + i;
    let dst = (cacheRow * P.kvHeads + h) * D + i;
    let x0 = qkv[src];
    let x1 = qkv[src + P.half];
    kc[dst] = x0 * c - x1 * s;
    kc[dst + P.half] = x1 * c + x0 * s;
  } else {
    let src = inRow + h * D + i;
    let dst = (t * P.heads + h) * D + i;
    let x0 = qkv[src];
    let x1 = qkv[src + P.half];
    qr[dst] = x0 * c - x1 * s;
    qr[dst + P.half] = x1 * c + x0 * s;
  }
}`,
};

/** Options of {@linkcode ropeQkvForward}. */
export interface RopeQkvOptions {
  /** Rows T. */
  rows: number;
  /** Query heads H. */
  heads: number;
  /** Key/value heads KVH. */
  kvHeads: number;
  /** Head size D (even). */
  headDim: number;
  /** Index in `state` of base, the position of row 0 and the first cache row written. */
  baseSlot: number;
  /** RoPE theta. */
  theta: number;
  /** Linear position scaling (default 1). */
  scale?: number;
  /** Per-row position offsets (u32, ≥ rows). */
  relPositions?: Tensor;
}

/**
 * Records the fused RoPE + KV store (see the module header).
 *
 * @example After the fused q/k/v product of a decoding forward
 * ```ts ignore
 * matmulGroupsForward(step, xn, [wq, wk, wv], qkv);
 * ropeQkvForward(step, qkv, qr, cache.k[l], cache.v[l], state, { rows: T, heads: H, kvHeads: KVH, headDim: D, baseSlot: 0, theta: 10000 });
 * ```
 */
export function ropeQkvForward(
  step: Step,
  qkv: Tensor,
  qr: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  state: Tensor,
  o: RopeQkvOptions,
): void {
  const { rows: T, heads: H, kvHeads: KVH, headDim: D } = o;
  const scale = o.scale ?? 1;
  checkRopeArgs("ropeQkvForward", D, o.theta, scale, state, o.baseSlot);
  const width = (H + 2 * KVH) * D;
  const cacheRow = KVH * D;
  if (
    qkv.size < T * width || qr.size < T * H * D || kCache.size % cacheRow !== 0 ||
    kCache.size !== vCache.size ||
    [qkv, qr, kCache, vCache].some((t) => t.dtype !== "f32")
  ) {
    throw new RangeError(
      `ropeQkvForward: qkv [${qkv.shape.join(", ")}], qr [${qr.shape.join(", ")}] and the caches ` +
        `[${kCache.shape.join(", ")}] do not fit ${T} rows of ${H} + 2 × ${KVH} heads × ${D} (all f32)`,
    );
  }
  const rel = o.relPositions;
  if (rel && (rel.dtype !== "u32" || rel.size < T)) {
    throw new RangeError(`ropeQkvForward: relPositions must be u32 with at least ${T} elements`);
  }
  const half = D / 2;
  const n = T * ((H + KVH) * half + KVH * D);
  if (n === 0) return;
  const { workgroups, rowStride } = grid1d(n, WG);
  const table = ropeTable(step.gpu, D, o.theta, scale);
  step.dispatch(ropeQkvSpec, {
    variant: { WG, REL: rel !== undefined },
    bindings: { qkv, qr, kc: kCache, vc: vCache, state, table, ...(rel ? { rel } : {}) },
    params: {
      n,
      rowStride,
      heads: H,
      kvHeads: KVH,
      half,
      baseSlot: o.baseSlot,
      cacheRows: kCache.size / cacheRow,
    },
    workgroups,
  });
}

/**
 * CPU reference: splits each row into q | k | v and applies {@linkcode ropeReference} to q and k.
 * Returns the rotated queries (T, H, D) and the cache rows' keys and values (T, KVH, D).
 *
 * @example One row, one head of each, D = 2, at position 0 (no rotation)
 * ```ts
 * import { ropeQkvReference } from "./rope_qkv.ts";
 * const r = ropeQkvReference(new Float32Array([1, 2, 3, 4, 5, 6]), { heads: 1, kvHeads: 1, headDim: 2, theta: 10000, base: 0 });
 * // r.q = [1, 2], r.k = [3, 4], r.v = [5, 6]
 * ```
 */
export function ropeQkvReference(
  qkv: Float32Array,
  o: {
    heads: number;
    kvHeads: number;
    headDim: number;
    theta: number;
    base: number;
    relPositions?: Uint32Array;
  },
): { q: Float32Array; k: Float32Array; v: Float32Array } {
  const { heads: H, kvHeads: KVH, headDim: D } = o;
  const width = (H + 2 * KVH) * D;
  const T = qkv.length / width;
  const q = new Float32Array(T * H * D), k = new Float32Array(T * KVH * D), v = new Float32Array(T * KVH * D);
  for (let t = 0; t < T; t++) {
    q.set(qkv.subarray(t * width, t * width + H * D), t * H * D);
    k.set(qkv.subarray(t * width + H * D, t * width + (H + KVH) * D), t * KVH * D);
    v.set(qkv.subarray(t * width + (H + KVH) * D, (t + 1) * width), t * KVH * D);
  }
  const common = { headDim: D, theta: o.theta, base: o.base, relPositions: o.relPositions };
  return { q: ropeReference(q, { ...common, heads: H }), k: ropeReference(k, { ...common, heads: KVH }), v };
}
