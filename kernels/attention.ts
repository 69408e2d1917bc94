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
 * Two schedules, chosen by {@linkcode attentionForward} from the amount of parallel work:
 * - `rows`: one invocation per (t, h) loops over its keys with online softmax (no barrier);
 *   invocations of a SIMD chunk are consecutive t of one head, so they stream the same K/V rows.
 * - `split`: one workgroup of SPLIT invocations per (t, h); invocation l takes keys l, l+SPLIT, …
 *   with its own online softmax, then one barrier and a merge of the partial (max, sum, acc).
 *   Used when T·H is too small to keep the cores busy (T = 1 decoding).
 *
 * @module
 */

import type { KernelSpec, Step, Tensor } from "../core/mod.ts";

/**
 * Attention kernel. Variant: `D` (head size, a multiple of 4), `MASK` (mask binding present),
 * `SPLIT` (0: one invocation per (t, h) in workgroups of `WG`; n > 0: n invocations per (t, h)).
 *
 * @example Dispatching the spec directly (prefer {@linkcode attentionForward})
 * ```ts ignore
 * step.dispatch(attentionSpec, {
 *   variant: { D: 64, MASK: false, SPLIT: 0, WG: 8 },
 *   bindings: { q, k: kCache, v: vCache, out, state },
 *   params: { rows: T, heads: H, group: H / KVH, kvHeads: KVH, cacheRows: S, baseSlot: 0,
 *     scaleLog2e: Math.LOG2E / Math.sqrt(64), maskWords: 0, gridX: Math.ceil((T * H) / 8) },
 *   workgroups: [Math.ceil((T * H) / 8)],
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
    { name: "gridX", type: "u32" },
  ],
  wgsl: (variant) =>
    variant.B
      ? _blockedWgsl(
        variant.MASK === true,
        Number(variant.D),
        Number(variant.B),
        Number(variant.WG),
        Number(variant.KB),
      )
      : variant.R
      ? _kvSplitWgsl(variant.MASK === true, Number(variant.D), Number(variant.R), Number(variant.L))
      : (variant.SPLIT
        ? _splitWgsl(variant.MASK === true)
        : _rowsWgsl(variant.MASK === true, Number(variant.D), variant.UNROLL === true)),
};

/** Shared WGSL: constants and the visibility rule of key row j for query t. */
function _common(mask: boolean): string {
  return `
const D4: u32 = D / 4u;
const LOWEST: f32 = -3.4028235e38;

// Key rows [0, end) are candidates for query t; visible(j) says which of them it sees.
fn keyEnd(base: u32, t: u32) -> u32 {
  ${mask ? "return min(base + P.rows, P.cacheRows);" : "return min(base + t + 1u, P.cacheRows);"}
}

fn visible(base: u32, t: u32, j: u32) -> bool {
  if (j < base) { return true; }
  return visibleBlock(base, t, j);
}

// Block row j >= base: the mask bit, or the causal rule.
fn visibleBlock(base: u32, t: u32, j: u32) -> bool {
  let u = j - base;
  ${mask ? "return ((mask[t * P.maskWords + (u >> 5u)] >> (u & 31u)) & 1u) != 0u;" : "return u <= t;"}
}
`;
}

/**
 * One workgroup of QW invocations per (kv head, chunk of QW queries of that kv head); queries of a
 * kv head are ordered qi = t·group + g. Every K/V address depends only on the workgroup and the
 * loop counter, so it is uniform across the SIMD chunk: llvmpipe loads it once and broadcasts it,
 * where a per-lane address costs one scalar load per lane.
 */
function _rowsWgsl(mask: boolean, D: number, unroll: boolean): string {
  const D4 = D / 4;
  const rep = (f: (d: number) => string) => Array.from({ length: D4 }, (_, d) => f(d)).join("\n");
  const loadQ = unroll
    ? rep((d) => `  let q${d} = q[qOff + ${d}u] * P.scaleLog2e;\n  var a${d} = vec4<f32>(0.0);`)
    : `  var qv: array<vec4<f32>, D4>;
  for (var d = 0u; d < D4; d++) { qv[d] = q[qOff + d] * P.scaleLog2e; }
  var acc: array<vec4<f32>, D4>;`;
  const score = unroll
    ? `    var s = ${Array.from({ length: D4 }, (_, d) => `dot(q${d}, k[kOff + ${d}u])`).join(" + ")};`
    : `    var s = 0.0;
    for (var d = 0u; d < D4; d++) { s += dot(qv[d], k[kOff + d]); }`;
  const update = unroll
    ? rep((d) => `    a${d} = a${d} * corr + p * v[kOff + ${d}u];`)
    : `    for (var d = 0u; d < D4; d++) { acc[d] = acc[d] * corr + p * v[kOff + d]; }`;
  const store = unroll
    ? rep((d) => `  out[qOff + ${d}u] = a${d} * inv;`)
    : `  for (var d = 0u; d < D4; d++) { out[qOff + d] = acc[d] * inv; }`;
  return `${_common(mask)}
@compute @workgroup_size(QW)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wg = wid.x + wid.y * P.gridX;
  let perKv = P.rows * P.group;
  let chunks = (perKv + QW - 1u) / QW;
  let kvh = wg / chunks;
  if (kvh >= P.kvHeads) { return; }
  let chunk = wg - kvh * chunks;
  let qi = chunk * QW + lid;
  let live = qi < perKv;
  let qc = min(qi, perKv - 1u); // idle lanes shadow the last query and store nothing
  let t = qc / P.group;
  let h = kvh * P.group + (qc - t * P.group);
  let base = state[P.baseSlot];
  // Uniform key range: up to the last query row of this chunk (or the whole block with a mask).
  let lastT = (min(chunk * QW + QW, perKv) - 1u) / P.group;
  let end = keyEnd(base, lastT);
  let qOff = (t * P.heads + h) * D4;
${loadQ}
  var m = LOWEST;
  var l = 0.0;
  let kvStride = P.kvHeads * D4;
  for (var j = 0u; j < end; j++) {
    let kOff = j * kvStride + kvh * D4;
${score}
    var vis = true;
    if (j >= base) { vis = visibleBlock(base, t, j); }
    // Online softmax: rescale the running sum and accumulator to the new max.
    let mNew = max(m, select(LOWEST, s, vis));
    let corr = exp2(m - mNew);
    let p = select(0.0, exp2(s - mNew), vis);
    l = l * corr + p;
${update}
    m = mNew;
  }
  if (!live) { return; }
  let inv = select(0.0, 1.0 / l, l > 0.0);
${store}
}`;
}

/** SPLIT invocations per (t, h): strided keys, then one barrier and a merge of the partials. */
function _splitWgsl(mask: boolean): string {
  return `${_common(mask)}
var<workgroup> partMax: array<f32, SPLIT>;
var<workgroup> partSum: array<f32, SPLIT>;
var<workgroup> partAcc: array<vec4<f32>, SPLIT * D4>;

@compute @workgroup_size(SPLIT)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let idx = wid.x + wid.y * P.gridX;
  if (idx >= P.rows * P.heads) { return; } // uniform: the whole workgroup leaves together
  let t = idx % P.rows;
  let h = idx / P.rows;
  let kvh = h / P.group;
  let base = state[P.baseSlot];
  var qv: array<vec4<f32>, D4>;
  let qOff = (t * P.heads + h) * D4;
  for (var d = 0u; d < D4; d++) { qv[d] = q[qOff + d] * P.scaleLog2e; }
  // 1. This invocation's keys: lid, lid + SPLIT, ...
  var acc: array<vec4<f32>, D4>;
  var m = LOWEST;
  var l = 0.0;
  let kvStride = P.kvHeads * D4;
  let end = keyEnd(base, t);
  for (var j = lid; j < end; j += SPLIT) {
    if (!visible(base, t, j)) { continue; }
    let kOff = j * kvStride + kvh * D4;
    var s = 0.0;
    for (var d = 0u; d < D4; d++) { s += dot(qv[d], k[kOff + d]); }
    let mNew = max(m, s);
    let corr = exp2(m - mNew);
    let p = exp2(s - mNew);
    l = l * corr + p;
    for (var d = 0u; d < D4; d++) { acc[d] = acc[d] * corr + p * v[kOff + d]; }
    m = mNew;
  }
  partMax[lid] = m;
  partSum[lid] = l;
  for (var d = 0u; d < D4; d++) { partAcc[lid * D4 + d] = acc[d]; }
  workgroupBarrier();
  // 2. Merge: every invocation finds the global max and sum, then writes its slice of D.
  var gm = LOWEST;
  for (var k2 = 0u; k2 < SPLIT; k2++) { gm = max(gm, partMax[k2]); }
  var gl = 0.0;
  for (var k2 = 0u; k2 < SPLIT; k2++) { gl += partSum[k2] * exp2(partMax[k2] - gm); }
  let inv = select(0.0, 1.0 / gl, gl > 0.0);
  for (var d = lid; d < D4; d += SPLIT) {
    var o = vec4<f32>(0.0);
    for (var k2 = 0u; k2 < SPLIT; k2++) { o += partAcc[k2 * D4 + d] * exp2(partMax[k2] - gm); }
    out[qOff + d] = o * inv;
  }
}`;
}

/**
 * R queries of one kv head per workgroup, L invocations splitting the keys (j = lid, lid + L, ...).
 * Each K/V row an invocation loads serves all R queries (llvmpipe pays per lane for every storage
 * load, so loads must be reused from registers); the R (max, sum, acc) partials of the L
 * invocations are merged through workgroup memory after one barrier.
 */
function _kvSplitWgsl(mask: boolean, D: number, R: number, L: number): string {
  const D4 = D / 4;
  const each = (n: number, f: (i: number) => string, sep = "\n") =>
    Array.from({ length: n }, (_, i) => f(i)).join(sep);
  const rd = (f: (r: number, d: number) => string) => each(R, (r) => each(D4, (d) => f(r, d)));
  const visBlock = (r: number) =>
    mask ? `((mask[t${r} * P.maskWords + (u >> 5u)] >> (u & 31u)) & 1u) != 0u` : `u <= t${r}`;
  return `
const LOWEST: f32 = -3.4028235e38;
var<workgroup> partMax: array<f32, ${L * R}>;
var<workgroup> partSum: array<f32, ${L * R}>;
var<workgroup> partAcc: array<vec4<f32>, ${L * R * D4}>;

@compute @workgroup_size(${L})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let wg = wid.x + wid.y * P.gridX;
  let perKv = P.rows * P.group;
  let chunks = (perKv + ${R - 1}u) / ${R}u;
  let kvh = wg / chunks;
  if (kvh >= P.kvHeads) { return; } // uniform: the whole workgroup leaves together
  let first = (wg - kvh * chunks) * ${R}u;
  let base = state[P.baseSlot];
  // The R queries (query index qi = t * group + g; past the end, the last one is repeated).
${
    each(R, (r) =>
      `  let qi${r} = min(first + ${r}u, perKv - 1u);
  let t${r} = qi${r} / P.group;
  let qOff${r} = (t${r} * P.heads + kvh * P.group + (qi${r} - t${r} * P.group)) * ${D4}u;`)
  }
  let lastT = min(first + ${R - 1}u, perKv - 1u) / P.group;
  ${mask ? "let end = min(base + P.rows, P.cacheRows);" : "let end = min(base + lastT + 1u, P.cacheRows);"}
${rd((r, d) => `  let q${r}_${d} = q[qOff${r} + ${d}u] * P.scaleLog2e;`)}
${rd((r, d) => `  var a${r}_${d} = vec4<f32>(0.0);`)}
${
    each(R, (r) =>
      `  var m${r} = LOWEST;
  var l${r} = 0.0;`)
  }
  let kvStride = P.kvHeads * ${D4}u;
  for (var j = lid; j < end; j += ${L}u) {
    let kOff = j * kvStride + kvh * ${D4}u;
${each(D4, (d) => `    let k${d} = k[kOff + ${d}u];`)}
${each(R, (r) => `    var s${r} = ${each(D4, (d) => `dot(q${r}_${d}, k${d})`, " + ")};`)}
    if (j >= base) {
      // Block rows: the ${
    mask ? "mask" : "causal rule"
  } decides; hidden rows get a score that exp2 flushes to 0.
      let u = j - base;
${each(R, (r) => `      s${r} = select(LOWEST, s${r}, ${visBlock(r)});`)}
    }
${
    each(R, (r) =>
      `    let mNew${r} = max(m${r}, s${r});
    let corr${r} = exp2(m${r} - mNew${r});
    let p${r} = select(0.0, exp2(s${r} - mNew${r}), s${r} > LOWEST);
    l${r} = l${r} * corr${r} + p${r};
    m${r} = mNew${r};`)
  }
${each(D4, (d) => `    let v${d} = v[kOff + ${d}u];`)}
${rd((r, d) => `    a${r}_${d} = a${r}_${d} * corr${r} + p${r} * v${d};`)}
  }
  // Publish this invocation's partials, then merge them: invocation lid writes output items
  // lid, lid + L, ... of the R x D/4 vec4 outputs.
${
    each(R, (r) =>
      `  partMax[lid * ${R}u + ${r}u] = m${r};
  partSum[lid * ${R}u + ${r}u] = l${r};`)
  }
${rd((r, d) => `  partAcc[(lid * ${R}u + ${r}u) * ${D4}u + ${d}u] = a${r}_${d};`)}
  workgroupBarrier();
  for (var item = lid; item < ${R * D4}u; item += ${L}u) {
    let r = item / ${D4}u;
    let d = item - r * ${D4}u;
    let qi = first + r;
    if (qi >= perKv) { break; }
    var gm = LOWEST;
    for (var i = 0u; i < ${L}u; i++) { gm = max(gm, partMax[i * ${R}u + r]); }
    var gl = 0.0;
    var o = vec4<f32>(0.0);
    for (var i = 0u; i < ${L}u; i++) {
      let w = exp2(partMax[i * ${R}u + r] - gm);
      gl += partSum[i * ${R}u + r] * w;
      o += partAcc[(i * ${R}u + r) * ${D4}u + d] * w;
    }
    let t = qi / P.group;
    let h = kvh * P.group + (qi - t * P.group);
    out[(t * P.heads + h) * ${D4}u + d] = o * select(0.0, 1.0 / gl, gl > 0.0);
  }
}`;
}

/**
 * One invocation per R queries of one kv head, looping over all its keys with online softmax;
 * no barrier, no workgroup memory. Each K/V vec4 an invocation loads serves its R queries.
 */
function _blockedWgsl(mask: boolean, D: number, R: number, WG: number, KB: number): string {
  const D4 = D / 4;
  const each = (n: number, f: (i: number) => string, sep = "\n") =>
    Array.from({ length: n }, (_, i) => f(i)).join(sep);
  const rd = (f: (r: number, d: number) => string) => each(R, (r) => each(D4, (d) => f(r, d)));
  const rk = (f: (r: number, kb: number) => string) => each(R, (r) => each(KB, (kb) => f(r, kb)));
  const visBlock = (r: number, kb: number) =>
    mask ? `((mask[t${r} * P.maskWords + (u${kb} >> 5u)] >> (u${kb} & 31u)) & 1u) != 0u` : `u${kb} <= t${r}`;
  return `
const LOWEST: f32 = -3.4028235e38;

@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let idx = gid.x + gid.y * P.gridX * ${WG}u;
  let perKv = P.rows * P.group;
  let qgroups = (perKv + ${R - 1}u) / ${R}u;
  let kvh = idx / qgroups;
  if (kvh >= P.kvHeads) { return; }
  let first = (idx - kvh * qgroups) * ${R}u;
  let base = state[P.baseSlot];
  // The R queries (query index qi = t * group + g; past the end, the last one is repeated).
${
    each(R, (r) =>
      `  let qi${r} = min(first + ${r}u, perKv - 1u);
  let t${r} = qi${r} / P.group;
  let qOff${r} = (t${r} * P.heads + kvh * P.group + (qi${r} - t${r} * P.group)) * ${D4}u;`)
  }
  let lastT = min(first + ${R - 1}u, perKv - 1u) / P.group;
  ${mask ? "let end = min(base + P.rows, P.cacheRows);" : "let end = min(base + lastT + 1u, P.cacheRows);"}
${rd((r, d) => `  let q${r}_${d} = q[qOff${r} + ${d}u] * P.scaleLog2e;`)}
${rd((r, d) => `  var a${r}_${d} = vec4<f32>(0.0);`)}
${each(R, (r) => `  var m${r} = LOWEST;\n  var l${r} = 0.0;`)}
  let kvStride = P.kvHeads * ${D4}u;
  for (var j = 0u; j < end; j += ${KB}u) {
${
    each(KB, (kb) =>
      `    let kOff${kb} = min(j + ${kb}u, end - 1u) * kvStride + kvh * ${D4}u;
${each(D4, (d) => `    let k${kb}_${d} = k[kOff${kb} + ${d}u];`)}`)
  }
${rk((r, kb) => `    var s${r}_${kb} = ${each(D4, (d) => `dot(q${r}_${d}, k${kb}_${d})`, " + ")};`)}
    if (j + ${KB - 1}u >= base) {
      // Block rows (and the tail past end): hidden rows get LOWEST, which exp2 turns into 0.
${
    each(KB, (kb) =>
      `      let u${kb} = j + ${kb}u - base; // wraps for committed rows: never read then
      let inBlock${kb} = j + ${kb}u >= base;
      let live${kb} = j + ${kb}u < end;`)
  }
${
    rk((r, kb) =>
      `      s${r}_${kb} = select(LOWEST, s${r}_${kb}, live${kb} && (!inBlock${kb} || ${visBlock(r, kb)}));`
    )
  }
    }
${
    each(R, (r) =>
      `    let mNew${r} = ${
        each(KB, () => "max(", "")
      }m${r}${each(KB, (kb) => `, s${r}_${kb})`, "")};
    let corr${r} = exp2(m${r} - mNew${r});
${each(KB, (kb) => `    let p${r}_${kb} = select(0.0, exp2(s${r}_${kb} - mNew${r}), s${r}_${kb} > LOWEST);`)}
    l${r} = l${r} * corr${r} + ${each(KB, (kb) => `p${r}_${kb}`, " + ")};
    m${r} = mNew${r};`)
  }
${each(KB, (kb) => each(D4, (d) => `    let v${kb}_${d} = v[kOff${kb} + ${d}u];`))}
${
    rd((r, d) =>
      `    a${r}_${d} = a${r}_${d} * corr${r} + ${each(KB, (kb) => `p${r}_${kb} * v${kb}_${d}`, " + ")};`
    )
  }
  }
${
    each(R, (r) =>
      `  if (first + ${r}u < perKv) {
    let inv${r} = select(0.0, 1.0 / l${r}, l${r} > 0.0);
${each(D4, (d) => `    out[qOff${r} + ${d}u] = a${r}_${d} * inv${r};`)}
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
  /** Schedule override, for tests and benchmarks: 0 = one invocation per (t, h); n = n per (t, h). */
  split?: number;
  r?: number;
  b?: number;
  kb?: number;
  wg?: number;
  l?: number;
}

/** Invocations per workgroup of the `rows` schedule (one SIMD chunk on llvmpipe). */
const ROWS_WG = 8;

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
  const work = rows * heads;
  const split = Math.max(0, options.split ?? 0);
  const B = options.b ?? 0;
  const R = options.r ?? 0;
  const L = options.l ?? 8;
  const groups = B > 0
    ? Math.ceil(kvHeads * Math.ceil((rows * (heads / kvHeads)) / B) / (options.wg ?? 8))
    : R > 0
    ? kvHeads * Math.ceil((rows * (heads / kvHeads)) / R)
    : split > 0
    ? work
    : kvHeads * Math.ceil((rows * (heads / kvHeads)) / ROWS_WG);
  const gridX = Math.min(groups, 65535);
  const bindings: Record<string, Tensor> = { q, k: kCache, v: vCache, out, state };
  if (mask) bindings.mask = mask;
  step.dispatch(attentionSpec, {
    variant: B > 0
      ? { D, MASK: mask !== undefined, B, WG: options.wg ?? 8, KB: options.kb ?? 1 }
      : R > 0
      ? { D, MASK: mask !== undefined, R, L }
      : split > 0
      ? { D, MASK: mask !== undefined, SPLIT: split }
      : { D, MASK: mask !== undefined, SPLIT: 0, QW: ROWS_WG, UNROLL: options.split === -1 },
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
