/**
 * Causal grouped-query attention of T query rows over a KV cache, at a GPU-resident position.
 *
 * Dimension letters: T query rows, H query heads, KVH key/value heads (H a multiple of KVH),
 * D head size, S cache rows. With `base = state[baseSlot]` (read on the GPU), query t sits at
 * position base + t and attends to
 * - cache rows 0..base-1 (committed tokens, always visible), and
 * - block rows base+u for u ≤ t (causal), or, with a `mask`, for every u whose bit is set in row t
 *   of the (T, ceil(T/32)) u32 bit matrix (bit u & 31 of word u >> 5): lookahead decoding needs it.
 *
 * Query head h reads key/value head h / (H/KVH). Scores are `scale · q·k` with a softmax in f32
 * (online softmax: running max subtracted before every exp). A query that sees no row at all (only
 * possible with a mask at base 0) gets a zero output.
 *
 * Schedule (tuned for llvmpipe, where every storage load is one scalar load per SIMD lane, about
 * as costly as 30-70 arithmetic operations, and barriers are expensive; docs/webgpu.md §3): one
 * invocation per R queries of one kv head walks the keys those queries may see, KB keys per step,
 * with online softmax. No workgroup memory, no barrier. Each K/V vector an invocation loads serves
 * its R queries, and one rescale of the accumulators serves KB keys; the accumulators live in
 * `out` itself. R and KB come from {@linkcode attentionSchedule}. On a real GPU this schedule has
 * too little parallelism for T = 1; a split-K variant would be the next step there.
 *
 * @module
 */

import type { Gpu, KernelSpec, Step, Tensor } from "../core/mod.ts";

/**
 * Attention kernel. Variant: `MASK` (mask binding present), `R` (queries per invocation), `KB`
 * (keys per loop step), `WG` (invocations per workgroup). Invocation i handles queries
 * c·R .. c·R + R − 1 of kv head i / n (c = i mod n, n = ceil(T·H/KVH / R)), where query qi of a kv
 * head is row qi / (H/KVH) of head kvh·(H/KVH) + qi mod (H/KVH).
 *
 * @example Dispatching the spec directly (prefer {@linkcode attentionForward})
 * ```ts ignore
 * // T = 16, H = 32, KVH = 8, D = 64: 64 queries per kv head, 8 invocations of 8 queries each.
 * step.dispatch(attentionSpec, {
 *   variant: { MASK: false, R: 8, KB: 16, WG: 8 },
 *   bindings: { q, k: kCache, v: vCache, out, state },
 *   params: { rows: 16, heads: 32, group: 4, kvHeads: 8, cacheRows: S, baseSlot: 0,
 *     scaleLog2e: Math.LOG2E / 8, maskWords: 1, gridX: 8, headVecs: 16 },
 *   workgroups: [8],
 * });
 * ```
 */
export const attentionSpec: KernelSpec = {
  name: "attention",
  bindings: (variant) => [
    { name: "q", access: "read", type: "vec4<f32>" }, // (T, H, D)
    { name: "k", access: "read", type: "vec4<f32>" }, // (S, KVH, D)
    { name: "v", access: "read", type: "vec4<f32>" }, // (S, KVH, D)
    { name: "out", access: "read_write", type: "vec4<f32>" }, // (T, H, D)
    { name: "state", access: "read", type: "u32" }, // state[baseSlot] = base
    ...(variant.MASK ? [{ name: "mask", access: "read" as const, type: "u32" }] : []), // (T, maskWords)
  ],
  params: [
    { name: "rows", type: "u32" },
    { name: "heads", type: "u32" },
    { name: "group", type: "u32" }, // H / KVH
    { name: "kvHeads", type: "u32" },
    { name: "cacheRows", type: "u32" }, // S
    { name: "baseSlot", type: "u32" },
    { name: "scaleLog2e", type: "f32" }, // scale · log2(e): scores in base 2 for exp2
    { name: "maskWords", type: "u32" },
    { name: "gridX", type: "u32" }, // workgroups in x (2-D grids for huge T·H)
    { name: "headVecs", type: "u32" }, // D / 4
  ],
  wgsl: (variant) => _attentionWgsl(variant.MASK === true, Number(variant.R), Number(variant.KB)),
};

/** Repeats f(i) for i < n, joined. */
function _each(n: number, f: (i: number) => string, sep = "\n"): string {
  return Array.from({ length: n }, (_, i) => f(i)).join(sep);
}

/**
 * The WGSL body for a variant. Per step of KB keys: the R·KB scores accumulate over a loop on the
 * D/4 vec4 lanes of a head, reading q and k from storage; then one online-softmax update per
 * query; then a second loop on d updates the R accumulators, which live in `out` itself (read,
 * rescaled, summed, written back). The loops over the R queries and the KB keys are unrolled in
 * the generated text; the d loops are real loops (bound from a parameter) so that the shader stays
 * small: unrolling them gave faster code but compile times of 20 s and more on llvmpipe.
 * Names: k{kb} / v{kb} (vec4 d of key kb of the step), s{r}_{kb} (score in log2 units),
 * m{r} / l{r} (running max / sum of exp2 of query r).
 */
function _attentionWgsl(mask: boolean, R: number, KB: number): string {
  const rk = (f: (r: number, kb: number) => string) => _each(R, (r) => _each(KB, (kb) => f(r, kb)));
  const sees = (r: number, kb: number) =>
    mask ? `((mask[t${r} * P.maskWords + (u${kb} >> 5u)] >> (u${kb} & 31u)) & 1u) != 0u` : `u${kb} <= t${r}`;
  return `
const LOWEST: f32 = -3.4028234e38; // -FLT_MAX; Tint refuses the decimal -3.4028235e38 as out of range

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let idx = gid.x + gid.y * P.gridX * WG;
  let perKv = P.rows * P.group; // queries per kv head
  let chunks = (perKv + R - 1u) / R;
  let kvh = idx / chunks;
  if (kvh >= P.kvHeads) { return; }
  let first = (idx - kvh * chunks) * R;
  let base = state[P.baseSlot];
  let nd = P.headVecs; // D / 4
  // 1. This invocation's R queries; past the end, the last query is repeated and not stored.
${
    _each(R, (r) =>
      `  let qi${r} = min(first + ${r}u, perKv - 1u);
  let t${r} = qi${r} / P.group;
  let qOff${r} = (t${r} * P.heads + kvh * P.group + (qi${r} - t${r} * P.group)) * nd;
  let store${r} = first + ${r}u < perKv;
  var m${r} = LOWEST;
  var l${r} = 0.0;`)
  }
  // Keys 0..end-1: the committed rows, then the block rows up to the last query's row
  // (the whole block with a mask).
  let lastT = min(first + R - 1u, perKv - 1u) / P.group;
  let end = ${mask ? "min(base + P.rows, P.cacheRows)" : "min(base + lastT + 1u, P.cacheRows)"};
  let kvStride = P.kvHeads * nd;
  for (var j = 0u; j < end; j += KB) {
    // 2. Scores s = scale·log2(e)·q·k of KB keys (a step past end re-reads the last row).
${_each(KB, (kb) => `    let kOff${kb} = min(j + ${kb}u, end - 1u) * kvStride + kvh * nd;`)}
${rk((r, kb) => `    var s${r}_${kb} = 0.0;`)}
    for (var d = 0u; d < nd; d++) {
${_each(KB, (kb) => `      let k${kb} = k[kOff${kb} + d];`)}
${_each(R, (r) => `      let q${r} = q[qOff${r} + d];`)}
${rk((r, kb) => `      s${r}_${kb} += dot(q${r}, k${kb});`)}
    }
${rk((r, kb) => `    s${r}_${kb} *= P.scaleLog2e;`)}
    if (j + KB > base || j + KB > end) {
      // 3. Block rows: the ${mask ? "mask" : "causal rule"} decides, and rows past end are hidden.
      // A hidden score is LOWEST, whose weight is 0.
${
    _each(KB, (kb) =>
      `      let u${kb} = j + ${kb}u - base; // wraps below base, where it is not used
      let inBlock${kb} = j + ${kb}u >= base;
      let live${kb} = j + ${kb}u < end;`)
  }
${
    rk((r, kb) =>
      `      s${r}_${kb} = select(LOWEST, s${r}_${kb}, live${kb} && (!inBlock${kb} || ${sees(r, kb)}));`
    )
  }
    }
    // 4. Online softmax: new running max, rescale factor, weights of the KB keys.
${
    _each(R, (r) =>
      `    let mNew${r} = ${
        _each(KB, () => "max(", "")
      }m${r}${_each(KB, (kb) => `, s${r}_${kb})`, "")};
    let corr${r} = exp2(m${r} - mNew${r});
${_each(KB, (kb) => `    let p${r}_${kb} = select(0.0, exp2(s${r}_${kb} - mNew${r}), s${r}_${kb} > LOWEST);`)}
    l${r} = l${r} * corr${r} + ${_each(KB, (kb) => `p${r}_${kb}`, " + ")};
    m${r} = mNew${r};`)
  }
    // 5. acc = acc * corr + Σ p·v, with acc kept in out (the first step starts from 0).
    let fresh = j == 0u;
    for (var d = 0u; d < nd; d++) {
${_each(KB, (kb) => `      let v${kb} = v[kOff${kb} + d];`)}
${
    _each(R, (r) =>
      `      let pv${r} = ${_each(KB, (kb) => `p${r}_${kb} * v${kb}`, " + ")};
      if (store${r}) { out[qOff${r} + d] = select(out[qOff${r} + d] * corr${r} + pv${r}, pv${r}, fresh); }`)
  }
    }
  }
  // 6. out = acc / sum (zero for a query that saw no row).
${
    _each(R, (r) =>
      `  if (store${r}) {
    let inv${r} = select(0.0, 1.0 / l${r}, l${r} > 0.0);
    for (var d = 0u; d < nd; d++) { out[qOff${r} + d] = select(out[qOff${r} + d] * inv${r}, vec4<f32>(0.0), end == 0u); }
  }`)
  }
}`;
}

/** Options of {@linkcode attentionForward}. */
export interface AttentionOptions {
  /** Index in `state` of base, the number of committed cache rows. */
  baseSlot: number;
  /** Query rows T. */
  rows: number;
  /** Query heads H. */
  heads: number;
  /** Key/value heads KVH (H must be a multiple). */
  kvHeads: number;
  /** Head size D (a multiple of 4). */
  headDim: number;
  /** Score scale (default 1/sqrt(D)). */
  scale?: number;
  /** (T, ceil(T/32)) u32 bit matrix: bit u of row t set = query t sees block row base + u. */
  mask?: Tensor;
  /** Schedule override for benchmarks: queries per invocation R and keys per step KB. */
  tuning?: AttentionTuning;
}

/** Schedule parameters of the attention kernel (normally chosen by {@linkcode attentionSchedule}). */
export interface AttentionTuning {
  /** Queries per invocation R. */
  queries?: number;
  /** Keys per loop step KB. */
  keys?: number;
}

/** Invocations per workgroup: one SIMD chunk on software adapters (llvmpipe), 64 on GPUs. */
function _workgroupSize(gpu: Gpu): number {
  return gpu.adapter.isFallbackAdapter ? 8 : 64;
}

/**
 * The schedule per kind of adapter, as {@linkcode attentionSchedule} picks it.
 *
 * `fallback` (software adapters, tuned on llvmpipe): the queries of a kv head (T·H/KVH of them) are
 * spread evenly over invocations of at most 8; KB is 16 for R > 4, else 32. Each step loads KB K/V
 * rows and the R queries and accumulators, for R·KB score pairs, so larger R·KB loads less per
 * pair; but llvmpipe's compile time grows with R·KB (~1.3 s at 128, ~5 s at 512), so R·KB stays at
 * or below 128.
 *
 * `gpu`: one query per invocation. A decoding forward on a GPU is a chain of small dispatches, each
 * as long as its longest invocation's key walk, so R queries per invocation make a T-row forward (a
 * Jacobi block) slower than a 1-row one for nothing. Measured on an H200 (embedded model, with the
 * matmul table's decoding row): a 16-row forward took 1.37x a 1-row one with the `fallback`
 * schedules, 0.87-1.0x with one query and one output per invocation (`deno task bench --only forward`).
 */
export const ATTENTION_TUNING: Record<
  "fallback" | "gpu",
  (rows: number, heads: number, kvHeads: number) => Required<AttentionTuning>
> = {
  fallback: (rows, heads, kvHeads) => {
    const perKv = rows * (heads / kvHeads);
    const queries = Math.ceil(perKv / Math.ceil(perKv / 8));
    return { queries, keys: queries > 4 ? 16 : 32 };
  },
  gpu: () => ({ queries: 1, keys: 16 }),
};

/**
 * Picks R (queries per invocation) and KB (keys per step) for a problem size on a kind of adapter
 * ({@linkcode ATTENTION_TUNING}).
 *
 * @param rows T
 * @param heads H
 * @param kvHeads KVH
 * @param adapter `"fallback"` for software adapters (the default), `"gpu"` otherwise
 * @returns R and KB
 *
 * @example T = 16, H = 32, KVH = 8 on llvmpipe: 64 queries per kv head, 8 per invocation
 * ```ts
 * import { attentionSchedule } from "./attention.ts";
 * attentionSchedule(16, 32, 8); // { queries: 8, keys: 16 }
 * ```
 */
export function attentionSchedule(
  rows: number,
  heads: number,
  kvHeads: number,
  adapter: "fallback" | "gpu" = "fallback",
): Required<AttentionTuning> {
  return ATTENTION_TUNING[adapter](rows, heads, kvHeads);
}

/**
 * Records causal (or masked) grouped-query attention of `rows` queries over cache rows
 * 0..base+T-1, `base = state[baseSlot]` on the GPU. The block's own K/V rows must already be in
 * the cache at rows base..base+T-1 (see `ropeForward` with `toCache` and `storeRowsForward`).
 *
 * @param step the step to record into
 * @param q (T, H, D) rotated queries
 * @param kCache (S, KVH, D) rotated keys
 * @param vCache (S, KVH, D) values
 * @param out (T, H, D) output
 * @param state u32 tensor holding base at `baseSlot`
 * @param options sizes, scale, optional mask
 *
 * @example One layer's attention over the cache for a block of T rows
 * ```ts ignore
 * attentionForward(step, qRot, cache.k[l], cache.v[l], att, state, {
 *   baseSlot: 0, rows: T, heads: 32, kvHeads: 4, headDim: 64,
 * });
 * ```
 */
export function attentionForward(
  step: Step,
  q: Tensor,
  kCache: Tensor,
  vCache: Tensor,
  out: Tensor,
  state: Tensor,
  options: AttentionOptions,
): void {
  const { baseSlot, rows, heads, kvHeads, headDim: D, mask } = options;
  const scale = options.scale ?? 1 / Math.sqrt(D);
  if (!Number.isInteger(D) || D < 4 || D % 4 !== 0) {
    throw new RangeError(`attentionForward: headDim must be a positive multiple of 4, not ${D}`);
  }
  if (!Number.isInteger(kvHeads) || kvHeads < 1 || heads % kvHeads !== 0) {
    throw new RangeError(`attentionForward: heads (${heads}) must be a multiple of kvHeads (${kvHeads})`);
  }
  for (const [name, t] of [["q", q], ["kCache", kCache], ["vCache", vCache], ["out", out]] as const) {
    if (t.dtype !== "f32") {
      throw new TypeError(`attentionForward: ${name} "${t.label}" must be f32, not ${t.dtype}`);
    }
  }
  const S = kCache.size / (kvHeads * D);
  if (!Number.isInteger(S) || vCache.size !== kCache.size) {
    throw new RangeError(
      `attentionForward: caches "${kCache.label}" [${kCache.shape.join(", ")}] and "${vCache.label}" ` +
        `[${vCache.shape.join(", ")}] must both be (S, ${kvHeads}, ${D})`,
    );
  }
  if (q.size < rows * heads * D || out.size < rows * heads * D) {
    throw new RangeError(
      `attentionForward: q "${q.label}" [${q.shape.join(", ")}] and out "${out.label}" [${
        out.shape.join(", ")
      }] ` +
        `must hold ${rows} rows of ${heads} heads × ${D}`,
    );
  }
  if (state.dtype !== "u32" || !Number.isInteger(baseSlot) || baseSlot < 0 || baseSlot >= state.size) {
    throw new RangeError(
      `attentionForward: baseSlot ${baseSlot} is not a slot of u32 state "${state.label}"`,
    );
  }
  const maskWords = Math.ceil(rows / 32);
  if (mask && (mask.dtype !== "u32" || mask.size < rows * maskWords)) {
    throw new RangeError(
      `attentionForward: mask "${mask.label}" must be u32 (${rows}, ${maskWords}), not ` +
        `[${mask.shape.join(", ")}] ${mask.dtype}`,
    );
  }
  if (rows === 0 || heads === 0) return;
  const auto = attentionSchedule(
    rows,
    heads,
    kvHeads,
    step.gpu.adapter.isFallbackAdapter ? "fallback" : "gpu",
  );
  const R = options.tuning?.queries ?? auto.queries;
  const KB = options.tuning?.keys ?? auto.keys;
  for (const [name, value] of [["queries", R], ["keys", KB]] as const) {
    if (!Number.isInteger(value) || value < 1 || value > 64) {
      throw new RangeError(`attentionForward: tuning.${name} must be an integer in 1..64, not ${value}`);
    }
  }
  const invocations = kvHeads * Math.ceil((rows * (heads / kvHeads)) / R);
  const WG = _workgroupSize(step.gpu);
  const groups = Math.ceil(invocations / WG);
  const gridX = Math.min(groups, 65535);
  const bindings: Record<string, Tensor> = { q, k: kCache, v: vCache, out, state };
  if (mask) bindings.mask = mask;
  step.dispatch(attentionSpec, {
    variant: { MASK: mask !== undefined, R, KB, WG },
    bindings,
    params: {
      rows,
      heads,
      group: heads / kvHeads,
      kvHeads,
      cacheRows: S,
      baseSlot,
      scaleLog2e: scale * Math.LOG2E,
      maskWords,
      gridX,
      headVecs: D / 4,
    },
    workgroups: [gridX, Math.ceil(groups / gridX)],
  });
}

/** Arguments of {@linkcode attentionReference}. */
export interface AttentionReferenceOptions {
  /** Number of committed cache rows (position of query 0). */
  base: number;
  /** Query heads H. */
  heads: number;
  /** Key/value heads KVH. */
  kvHeads: number;
  /** Head size D. */
  headDim: number;
  /** Score scale (default 1/sqrt(D)). */
  scale?: number;
  /** (T, ceil(T/32)) bit matrix replacing the causal rule for block rows. */
  mask?: Uint32Array;
}

/**
 * CPU reference: softmax(scale · q·kᵀ) · v per query and head in f64, over the visible rows
 * (cache rows below base, then block rows by the causal rule or the mask).
 *
 * @param q (T, H, D) queries
 * @param kCache (S, KVH, D) keys
 * @param vCache (S, KVH, D) values
 * @param options base, sizes, scale, mask
 * @returns (T, H, D) output
 *
 * @example One query, one head, two visible keys
 * ```ts
 * import { attentionReference } from "./attention.ts";
 * const k = new Float32Array([0, 0, 0, 0, 0, 0, 0, 0]); // S = 2, D = 4: equal scores
 * const v = new Float32Array([1, 1, 1, 1, 3, 3, 3, 3]);
 * attentionReference(new Float32Array(4), k, v, { base: 1, heads: 1, kvHeads: 1, headDim: 4 }); // [2, 2, 2, 2]
 * ```
 */
export function attentionReference(
  q: Float32Array,
  kCache: Float32Array,
  vCache: Float32Array,
  options: AttentionReferenceOptions,
): Float32Array {
  const { base, heads: H, kvHeads: KVH, headDim: D, mask } = options;
  const scale = options.scale ?? 1 / Math.sqrt(D);
  const T = q.length / (H * D);
  const words = Math.ceil(T / 32);
  const out = new Float32Array(q.length);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / (H / KVH));
      // Visible rows: every committed row, then block rows by the mask or the causal rule.
      const rows: number[] = [];
      for (let j = 0; j < base; j++) rows.push(j);
      for (let u = 0; u < T; u++) {
        const sees = mask ? ((mask[t * words + (u >> 5)] >>> (u & 31)) & 1) === 1 : u <= t;
        if (sees) rows.push(base + u);
      }
      const scores = rows.map((j) => {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[(t * H + h) * D + d] * kCache[(j * KVH + kvh) * D + d];
        return dot * scale;
      });
      const max = Math.max(...scores);
      const weights = scores.map((s) => Math.exp(s - max));
      const sum = weights.reduce((a, b) => a + b, 0);
      for (let d = 0; d < D; d++) {
        let o = 0;
        rows.forEach((j, r) => (o += weights[r] * vCache[(j * KVH + kvh) * D + d]));
        out[(t * H + h) * D + d] = rows.length > 0 ? o / sum : 0;
      }
    }
  }
  return out;
}
