/**
 * Backward pass of causal grouped-query self-attention over a whole sequence (training).
 *
 * Dimension letters: T rows (positions 0..T-1), H query heads, KVH key/value heads (H a multiple of
 * KVH, group = H/KVH), D head size. Forward (see `attentionForward` with base 0 and the block's own
 * K/V as the cache): query head h of row i reads kv head h / group and
 *
 *   S_ij = scale · q_i·k_j   (j ≤ i),   P_i = softmax(S_i),   O_i = Σ_j P_ij v_j.
 *
 * Gradients (FlashAttention-2's backward, Dao 2023, Algorithm 2), with dO the output gradient:
 *
 *   dv_j = Σ_i P_ij dO_i,   dP_ij = dO_i·v_j,   D_i = dO_i·O_i = Σ_j P_ij dP_ij,
 *   dS_ij = P_ij (dP_ij − D_i),   dq_i = scale Σ_j dS_ij k_j,   dk_j = scale Σ_i dS_ij q_i,
 *
 * where dk and dv of a kv head sum over the query heads of its group. Nothing T×T is stored: P is
 * recomputed from the row's log-sum-exp.
 *
 * Schedule: two dispatches, no float atomics, so results are deterministic.
 * 1. `attention_backward_dq`: one invocation per R queries of one kv head (the same layout as the
 *    forward kernel). It computes D_i = dO_i·O_i, loops over its keys once for the log-sum-exp
 *    (online softmax) and once more for dq, and saves (lse_i, D_i) per (row, head) in `stats`.
 * 2. `attention_backward_dkv`: one invocation per R keys of one kv head loops over the queries
 *    i ≥ first key and the group's heads, recomputes P_ij = exp2(s_ij − lse_i), and accumulates dk
 *    and dv.
 * Tuned for llvmpipe (docs/webgpu.md §3): no barrier; each K/V (or Q/dO) vec4 an invocation loads
 * serves its R rows, whose head vectors (q, dO, dq or k, v, dk, dv) stay in registers: the WGSL is
 * generated with the loops over the R rows and the D/4 vec4 lanes unrolled (5-8x faster than
 * keeping them in memory). Above D = 64 the vectors move to the invocation's own slice of
 * workgroup memory with real lane loops (no barrier needed: the slices are private by
 * construction). Private arrays, as in the forward kernel, are avoided: lavapipe took 5-40 s to
 * compile them here.
 *
 * @module
 */

import { type KernelSpec, type Step, Tensor } from "../core/mod.ts";

/** Invocations per workgroup: one SIMD chunk on llvmpipe. */
const WG = 8;
/** Largest head size whose vectors the schedule keeps in registers (lane loops unrolled). */
const UNROLL_MAX_D = 64;

/** Repeats f(i) for i < n, joined. */
function _each(n: number, f: (i: number) => string, sep = "\n"): string {
  return Array.from({ length: n }, (_, i) => f(i)).join(sep);
}

/**
 * dq kernel. Variant: `D` (head size, a multiple of 4), `R` (queries per invocation), `WG`,
 * `UNROLL` (head vectors in registers, else in workgroup memory).
 * Invocation i handles queries qi = (i mod n)·R .. (i mod n)·R + R − 1 of kv head i / n, where
 * n = ceil(T·group / R); query qi is row qi / group, head kvh·group + qi mod group.
 *
 * @example Dispatching the spec directly (prefer {@linkcode attentionBackward})
 * ```ts ignore
 * // T = 128, H = KVH = 8, D = 8: 16 invocations of 8 queries per kv head.
 * step.dispatch(attentionBackwardDqSpec, {
 *   variant: { D: 8, R: 8, WG: 8, UNROLL: true },
 *   bindings: { q, k, v, out, dOut, dq, stats },
 *   params: { rows: 128, heads: 8, group: 1, kvHeads: 8, scaleLog2e: Math.LOG2E / Math.sqrt(8),
 *     scale: 1 / Math.sqrt(8), gridX: 16, headVecs: 2 },
 *   workgroups: [16],
 * });
 * ```
 */
export const attentionBackwardDqSpec: KernelSpec = {
  name: "attention_backward_dq",
  bindings: (variant) => [
    { name: "q", access: "read", type: "vec4<f32>" }, // (T, H, D)
    { name: "k", access: "read", type: "vec4<f32>" }, // (T, KVH, D)
    { name: "v", access: "read", type: "vec4<f32>" }, // (T, KVH, D)
    { name: "out", access: "read", type: "vec4<f32>" }, // (T, H, D) forward output O
    { name: "dOut", access: "read", type: "vec4<f32>" }, // (T, H, D)
    { name: "dq", access: "read_write", type: "vec4<f32>" }, // (T, H, D)
    { name: "stats", access: "read_write", type: "f32" }, // (T, H, 2): lse (log2 units), D_i
    ...(variant.MASK ? [_MASK_BINDING] : []),
  ],
  params: [
    { name: "rows", type: "u32" }, // T
    { name: "heads", type: "u32" }, // H
    { name: "group", type: "u32" }, // H / KVH
    { name: "kvHeads", type: "u32" }, // KVH
    { name: "scaleLog2e", type: "f32" }, // scale · log2(e): scores in base 2 for exp2
    { name: "scale", type: "f32" },
    { name: "gridX", type: "u32" }, // workgroups in x (2-D grids for huge T·H)
    { name: "headVecs", type: "u32" }, // D / 4
    { name: "maskWords", type: "u32" }, // u32 words per mask row (unused without MASK)
  ],
  wgsl: (variant) =>
    _dqWgsl(
      Number(variant.D),
      Number(variant.R),
      Number(variant.WG),
      variant.UNROLL === true,
      variant.MASK === true,
    ),
};

/** The optional attention mask: (T, maskWords) bits, bit j of row i set when query i sees key j. */
const _MASK_BINDING = { name: "mask", access: "read" as const, type: "u32" };

/** WGSL: whether query row `i` sees key row `j` (causal, and the mask's bit when there is one). */
function _sees(i: string, j: string, mask: boolean): string {
  return mask
    ? `(${j} <= ${i} && ((mask[${i} * P.maskWords + (${j} >> 5u)] >> (${j} & 31u)) & 1u) != 0u)`
    : `${j} <= ${i}`;
}

/** A lane index of a head vector: its WGSL expression, and its value when unrolled (−1 in a loop). */
interface _Lane {
  e: string;
  i: number;
}

/**
 * Where an invocation keeps its per-row head vectors (R rows × D/4 vec4 each, per name):
 * - unrolled: in registers (`name_r_i` variables), the loops over the D/4 lanes unrolled; for
 *   small R·D/4 this is fastest and still compiles quickly;
 * - otherwise: in the invocation's slice (offset b = lid·SLICE) of a workgroup array, with real
 *   loops over the lanes (private arrays took lavapipe 5-40 s to compile, see the module doc).
 */
function _vectors(names: readonly string[], R: number, D4: number, WG: number, unroll: boolean) {
  return {
    /** Module-scope declarations. */
    module: unroll ? "" : `const SLICE: u32 = ${R * D4}u; // vec4 per invocation and name
${names.map((n) => `var<workgroup> ${n}: array<vec4<f32>, ${WG * R * D4}>;`).join("\n")}`,
    /** Function-scope declarations (the slice offset, or the registers). */
    local: unroll
      ? names.map((n) => _each(R, (r) => `  ${_each(D4, (i) => `var ${n}_${r}_${i}: vec4<f32>;`, " ")}`))
        .join("\n")
      : "  let b = lid * SLICE; // this invocation's slice",
    /** A reference to lane d of row r of a vector. */
    ref: (
      name: string,
      r: number,
      d: _Lane,
    ) => (unroll ? `${name}_${r}_${d.i}` : `${name}[b + ${r * D4}u + d]`),
    /** `body` for every lane: a loop, or D/4 blocks. */
    lanes: (indent: string, body: (d: _Lane) => string) =>
      unroll
        ? _each(D4, (i) => `${indent}{\n${body({ e: `${i}u`, i })}\n${indent}}`)
        : `${indent}for (var d = 0u; d < nd; d++) {\n${body({ e: "d", i: -1 })}\n${indent}}`,
  };
}

/**
 * The dq kernel's WGSL. Names: qv (the R queries times scale·log2(e)), go (their dO), acc (their
 * dq), m{r} / l{r} (running max / sum of exp2), lse{r}, di{r} (D_i), s{r} (score in log2 units).
 */
function _dqWgsl(D: number, R: number, WG: number, unroll: boolean, mask: boolean): string {
  const D4 = D / 4;
  const x = _vectors(["qv", "go", "acc"], R, D4, WG, unroll);
  return `
const LOWEST: f32 = -3.4028234e38; // -FLT_MAX; Tint refuses the decimal -3.4028235e38 as out of range
const D4: u32 = ${D4}u;
${x.module}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let idx = gid.x + gid.y * P.gridX * WG;
  let perKv = P.rows * P.group; // queries per kv head
  let chunks = (perKv + R - 1u) / R;
  let kvh = idx / chunks;
  if (kvh >= P.kvHeads) { return; }
  let first = (idx - kvh * chunks) * R;
  let nd = P.headVecs; // = D4, from a parameter so that the d loops stay loops
  // 1. This invocation's R queries (past the end, the last query is repeated and not stored).
${
    _each(R, (r) =>
      `  let qi${r} = min(first + ${r}u, perKv - 1u);
  let t${r} = qi${r} / P.group;
  let qOff${r} = (t${r} * P.heads + kvh * P.group + (qi${r} - t${r} * P.group)) * D4;
  var di${r} = 0.0;`)
  }
${x.local}
  // 2. Load q (pre-scaled by scale·log2(e)) and dO; D_i = dO_i·O_i.
${
    x.lanes("  ", (d) =>
      _each(R, (r) =>
        `    ${x.ref("qv", r, d)} = q[qOff${r} + ${d.e}] * P.scaleLog2e;
    let g${r} = dOut[qOff${r} + ${d.e}];
    ${x.ref("go", r, d)} = g${r};
    ${x.ref("acc", r, d)} = vec4<f32>();
    di${r} += dot(g${r}, out[qOff${r} + ${d.e}]);`))
  }
  // Keys 0..end-1: up to the last query's row.
  let lastT = min(first + R - 1u, perKv - 1u) / P.group;
  let end = lastT + 1u;
  let kvStride = P.kvHeads * D4;
  // 3. Log-sum-exp of each query's visible scores (online softmax, base 2).
${_each(R, (r) => `  var m${r} = LOWEST;\n  var l${r} = 0.0;`)}
  for (var j = 0u; j < end; j++) {
    let kOff = j * kvStride + kvh * D4;
${_each(R, (r) => `    var s${r} = 0.0;`)}
${
    x.lanes("    ", (d) =>
      `      let kd = k[kOff + ${d.e}];
${_each(R, (r) => `      s${r} += dot(${x.ref("qv", r, d)}, kd);`)}`)
  }
${
    _each(R, (r) =>
      `    if (${_sees(`t${r}`, "j", mask)}) {
      let mNew${r} = max(m${r}, s${r});
      l${r} = l${r} * exp2(m${r} - mNew${r}) + exp2(s${r} - mNew${r});
      m${r} = mNew${r};
    }`)
  }
  }
${_each(R, (r) => `  let lse${r} = m${r} + log2(l${r});`)}
  // 4. dq_i = scale Σ_j P_ij (dP_ij − D_i) k_j with P_ij = exp2(s_ij − lse_i), dP_ij = dO_i·v_j.
  for (var j = 0u; j < end; j++) {
    let kOff = j * kvStride + kvh * D4;
${_each(R, (r) => `    var s${r} = 0.0;\n    var dp${r} = 0.0;`)}
${
    x.lanes("    ", (d) =>
      `      let kd = k[kOff + ${d.e}];
      let vd = v[kOff + ${d.e}];
${
        _each(R, (r) =>
          `      s${r} += dot(${x.ref("qv", r, d)}, kd);
      dp${r} += dot(${x.ref("go", r, d)}, vd);`)
      }`)
  }
${
    _each(R, (r) =>
      `    let ds${r} = select(0.0, exp2(s${r} - lse${r}) * (dp${r} - di${r}), ${
        _sees(`t${r}`, "j", mask)
      });`)
  }
${
    x.lanes("    ", (d) =>
      `      let kd = k[kOff + ${d.e}];
${_each(R, (r) => `      ${x.ref("acc", r, d)} += ds${r} * kd;`)}`)
  }
  }
  // 5. Store dq and the statistics the dk/dv kernel needs.
${
    _each(R, (r) =>
      `  if (first + ${r}u < perKv) {
${x.lanes("    ", (d) => `      dq[qOff${r} + ${d.e}] = ${x.ref("acc", r, d)} * P.scale;`)}
    let so${r} = qOff${r} / D4 * 2u;
    stats[so${r}] = lse${r};
    stats[so${r} + 1u] = di${r};
  }`)
  }
}`;
}

/**
 * dk/dv kernel. Variant: `D`, `R` (keys per invocation), `WG`, `UNROLL`. Invocation i handles keys
 * (i mod n)·R .. (i mod n)·R + R − 1 of kv head i / n, where n = ceil(T / R). It reads the
 * (lse, D_i) pairs that {@linkcode attentionBackwardDqSpec} wrote, so it runs after it.
 *
 * @example Dispatching the spec directly (prefer {@linkcode attentionBackward})
 * ```ts ignore
 * step.dispatch(attentionBackwardDkvSpec, {
 *   variant: { D: 8, R: 8, WG: 8, UNROLL: true },
 *   bindings: { q, k, v, dOut, stats, dk, dv },
 *   params: { rows: 128, heads: 8, group: 1, kvHeads: 8, scaleLog2e: Math.LOG2E / Math.sqrt(8),
 *     scale: 1 / Math.sqrt(8), gridX: 16, headVecs: 2 },
 *   workgroups: [16],
 * });
 * ```
 */
export const attentionBackwardDkvSpec: KernelSpec = {
  name: "attention_backward_dkv",
  bindings: (variant) => [
    { name: "q", access: "read", type: "vec4<f32>" }, // (T, H, D)
    { name: "k", access: "read", type: "vec4<f32>" }, // (T, KVH, D)
    { name: "v", access: "read", type: "vec4<f32>" }, // (T, KVH, D)
    { name: "dOut", access: "read", type: "vec4<f32>" }, // (T, H, D)
    { name: "stats", access: "read", type: "f32" }, // (T, H, 2): lse (log2 units), D_i
    { name: "dk", access: "read_write", type: "vec4<f32>" }, // (T, KVH, D)
    { name: "dv", access: "read_write", type: "vec4<f32>" }, // (T, KVH, D)
    ...(variant.MASK ? [_MASK_BINDING] : []),
  ],
  params: attentionBackwardDqSpec.params,
  wgsl: (variant) =>
    _dkvWgsl(
      Number(variant.D),
      Number(variant.R),
      Number(variant.WG),
      variant.UNROLL === true,
      variant.MASK === true,
    ),
};

/**
 * The dk/dv kernel's WGSL. Names: kv (the R keys times scale·log2(e)), vv (their values), dkAcc /
 * dvAcc (their gradients), j{r} (key row), s{r}, dp{r}, p{r}, ds{r} for the current (query, head).
 */
function _dkvWgsl(D: number, R: number, WG: number, unroll: boolean, mask: boolean): string {
  const D4 = D / 4;
  const x = _vectors(["kv", "vv", "dkAcc", "dvAcc"], R, D4, WG, unroll);
  return `
const D4: u32 = ${D4}u;
${x.module}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let idx = gid.x + gid.y * P.gridX * WG;
  let chunks = (P.rows + R - 1u) / R;
  let kvh = idx / chunks;
  if (kvh >= P.kvHeads) { return; }
  let first = (idx - kvh * chunks) * R;
  let nd = P.headVecs;
  let kvStride = P.kvHeads * D4;
  // 1. This invocation's R keys (past the end, the last key is repeated and not stored).
${
    _each(R, (r) =>
      `  let j${r} = min(first + ${r}u, P.rows - 1u);
  let kOff${r} = j${r} * kvStride + kvh * D4;`)
  }
${x.local}
${
    x.lanes("  ", (d) =>
      _each(R, (r) =>
        `    ${x.ref("kv", r, d)} = k[kOff${r} + ${d.e}] * P.scaleLog2e;
    ${x.ref("vv", r, d)} = v[kOff${r} + ${d.e}];
    ${x.ref("dkAcc", r, d)} = vec4<f32>();
    ${x.ref("dvAcc", r, d)} = vec4<f32>();`))
  }
  // 2. Every (query row i ≥ first key, head of the group): recompute P_ij, accumulate
  //    dv_j += P_ij dO_i and dk_j += dS_ij q_i (scaled at the end).
  for (var i = first; i < P.rows; i++) {
    for (var g = 0u; g < P.group; g++) {
      let row = i * P.heads + kvh * P.group + g;
      let qOff = row * D4;
      let lse = stats[row * 2u];
      let di = stats[row * 2u + 1u];
${_each(R, (r) => `      var s${r} = 0.0;\n      var dp${r} = 0.0;`)}
${
    x.lanes("      ", (d) =>
      `        let qd = q[qOff + ${d.e}];
        let od = dOut[qOff + ${d.e}];
${
        _each(R, (r) =>
          `        s${r} += dot(qd, ${x.ref("kv", r, d)});
        dp${r} += dot(od, ${x.ref("vv", r, d)});`)
      }`)
  }
${
    _each(R, (r) =>
      `      let p${r} = select(0.0, exp2(s${r} - lse), ${_sees("i", `j${r}`, mask)});
      let ds${r} = p${r} * (dp${r} - di);`)
  }
${
    x.lanes("      ", (d) =>
      `        let qd = q[qOff + ${d.e}];
        let od = dOut[qOff + ${d.e}];
${
        _each(R, (r) =>
          `        ${x.ref("dvAcc", r, d)} += p${r} * od;
        ${x.ref("dkAcc", r, d)} += ds${r} * qd;`)
      }`)
  }
    }
  }
  // 3. Store.
${
    _each(R, (r) =>
      `  if (first + ${r}u < P.rows) {
${
        x.lanes("    ", (d) =>
          `      dk[kOff${r} + ${d.e}] = ${x.ref("dkAcc", r, d)} * P.scale;
      dv[kOff${r} + ${d.e}] = ${x.ref("dvAcc", r, d)};`)
      }
  }`)
  }
}`;
}

/** Options of {@linkcode attentionBackward}. */
export interface AttentionBackwardOptions {
  /** Rows T (positions 0..T-1). */
  rows: number;
  /** Query heads H. */
  heads: number;
  /** Key/value heads KVH (H must be a multiple). */
  kvHeads: number;
  /** Head size D (a multiple of 4). */
  headDim: number;
  /** Score scale (default 1/sqrt(D)); must match the forward pass. */
  scale?: number;
  /**
   * f32 scratch of at least T·H·2 elements for the per-(row, head) log-sum-exp and D_i. Default: one
   * scratch per device, grown as needed and shared by every call (calls in one step run in order).
   */
  stats?: Tensor;
  /** Schedule override for benchmarks: rows per invocation of the dq and dk/dv kernels (must fit the workgroup memory). */
  tuning?: AttentionBackwardTuning;
  /**
   * The forward's attention mask (u32, T rows of ceil(T/32) words; bit j of row i set when query i
   * sees key j), as given to `attentionForward`. It narrows the causal rule (packed training
   * sequences, train/jacobi_forcing.ts): bits above the diagonal must be clear (the forward kernel
   * would read them; the backward kernels skip those keys).
   */
  mask?: Tensor;
}

/** Schedule parameters of the backward kernels (normally chosen by {@linkcode attentionBackwardSchedule}). */
export interface AttentionBackwardTuning {
  /** Queries per invocation of the dq kernel. */
  queries?: number;
  /** Keys per invocation of the dk/dv kernel. */
  keys?: number;
  /** Keep the head vectors in registers with the lane loops unrolled (else in workgroup memory). */
  unroll?: boolean;
}

/**
 * Picks the kernels' schedule. Up to D = 64 the head vectors live in registers with the lane loops
 * unrolled, 8 rows per invocation up to D = 16 and 4 above (measured on llvmpipe, T = 256, H = 8,
 * KVH = 4: D = 64 at 4 rows takes 26 ms, at 2 rows 36-49 ms, in workgroup memory 120+ ms; D = 8 at
 * T = 128, H = 8: 1.1 ms in registers, 8.6 ms in workgroup memory). The price is compile time on
 * first use (lavapipe, both kernels, cold cache: ~1 s at D = 8, 2.5 s at D = 16, 3.4 s at D = 32,
 * 10 s at D = 64; Mesa caches it on disk). Larger D falls back to workgroup memory, with as many
 * rows as fit (3 D-vectors per query, 4 per key). Rows are then halved while that leaves fewer than
 * 4 SIMD chunks of work, and spread evenly over the invocations.
 *
 * @param rows T
 * @param heads H
 * @param kvHeads KVH
 * @param headDim D
 * @param workgroupBytes the device's maxComputeWorkgroupStorageSize (default: WebGPU's 16384)
 * @returns queries per dq invocation, keys per dk/dv invocation, registers or workgroup memory
 *
 * @example T = 128, H = KVH = 8, D = 8
 * ```ts
 * import { attentionBackwardSchedule } from "./attention_backward.ts";
 * attentionBackwardSchedule(128, 8, 8, 8); // { queries: 8, keys: 8, unroll: true }
 * ```
 */
export function attentionBackwardSchedule(
  rows: number,
  heads: number,
  kvHeads: number,
  headDim: number,
  workgroupBytes = 16384,
): Required<AttentionBackwardTuning> {
  const unroll = headDim <= UNROLL_MAX_D;
  const pick = (perKv: number, vectorsPerRow: number) => {
    // Workgroup bytes per row: vectorsPerRow D-vectors of 4-byte floats per invocation.
    const fit = unroll
      ? (headDim <= 16 ? 8 : 4)
      : Math.floor(workgroupBytes / (WG * vectorsPerRow * headDim * 4));
    let rMax = Math.max(1, Math.min(8, fit));
    while (rMax > 1 && kvHeads * Math.ceil(perKv / rMax) < 4 * WG) rMax = Math.ceil(rMax / 2);
    return Math.ceil(perKv / Math.ceil(perKv / rMax));
  };
  return {
    queries: pick(Math.max(1, rows * (heads / kvHeads)), 3),
    keys: pick(Math.max(1, rows), 4),
    unroll,
  };
}

/** The shared stats scratch of a device, at least `n` elements. */
function _statsScratch(step: Step, n: number): Tensor {
  const caches = step.gpu.caches;
  let t = caches.get("attentionBackward.stats") as Tensor | undefined;
  if (!t || t.size < n) {
    // The old scratch is not destroyed: dispatches already recorded in this step may use it.
    t = new Tensor(step.gpu, [Math.max(n, 2 * (t?.size ?? 0))], "f32", "attention backward stats");
    caches.set("attentionBackward.stats", t);
  }
  return t;
}

/**
 * Records the gradients of causal grouped-query self-attention over rows 0..T-1 (query i sees keys
 * 0..i): writes `dq`, `dk`, `dv` (overwriting them; dk and dv sum over each group's heads).
 * Two dispatches; deterministic.
 *
 * @param step the step to record into
 * @param q (T, H, D) queries (after RoPE), as in the forward pass
 * @param k (T, KVH, D) keys (after RoPE)
 * @param v (T, KVH, D) values
 * @param out (T, H, D) the forward output (for D_i = dO_i·O_i)
 * @param dOut (T, H, D) gradient of the output
 * @param dq (T, H, D) gradient of q
 * @param dk (T, KVH, D) gradient of k
 * @param dv (T, KVH, D) gradient of v
 * @param options sizes, scale, optional scratch
 *
 * @example One layer's attention backward
 * ```ts ignore
 * attentionBackward(step, qRot, kRot, v, att, dAtt, dqRot, dkRot, dv, {
 *   rows: T, heads: 8, kvHeads: 4, headDim: 64,
 * });
 * ```
 */
export function attentionBackward(
  step: Step,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  dOut: Tensor,
  dq: Tensor,
  dk: Tensor,
  dv: Tensor,
  options: AttentionBackwardOptions,
): void {
  const { rows: T, heads: H, kvHeads: KVH, headDim: D } = options;
  const scale = options.scale ?? 1 / Math.sqrt(D);
  if (!Number.isInteger(D) || D < 4 || D % 4 !== 0) {
    throw new RangeError(`attentionBackward: headDim must be a positive multiple of 4, not ${D}`);
  }
  if (!Number.isInteger(KVH) || KVH < 1 || !Number.isInteger(H) || H % KVH !== 0) {
    throw new RangeError(`attentionBackward: heads (${H}) must be a multiple of kvHeads (${KVH})`);
  }
  if (!Number.isInteger(T) || T < 0) throw new RangeError(`attentionBackward: rows must be ≥ 0, not ${T}`);
  const checks = [
    ["q", q, H],
    ["k", k, KVH],
    ["v", v, KVH],
    ["out", out, H],
    ["dOut", dOut, H],
    [
      "dq",
      dq,
      H,
    ],
    ["dk", dk, KVH],
    ["dv", dv, KVH],
  ] as const;
  for (const [name, t, heads] of checks) {
    if (t.dtype !== "f32") {
      throw new TypeError(`attentionBackward: ${name} "${t.label}" must be f32, not ${t.dtype}`);
    }
    if (t.size < T * heads * D) {
      throw new RangeError(
        `attentionBackward: ${name} "${t.label}" [${t.shape.join(", ")}] holds ${t.size} values, fewer ` +
          `than ${T} rows × ${heads} heads × ${D}`,
      );
    }
  }
  const stats = options.stats ?? _statsScratch(step, T * H * 2);
  if (stats.dtype !== "f32" || stats.size < T * H * 2) {
    throw new RangeError(
      `attentionBackward: stats "${stats.label}" must be f32 with at least ${T * H * 2} values, not ` +
        `${stats.size} ${stats.dtype}`,
    );
  }
  const mask = options.mask;
  const maskWords = Math.ceil(T / 32);
  if (mask && (mask.dtype !== "u32" || mask.size < T * maskWords)) {
    throw new RangeError(
      `attentionBackward: mask "${mask.label}" must be u32 (${T}, ${maskWords}), not ` +
        `[${mask.shape.join(", ")}] ${mask.dtype}`,
    );
  }
  if (T === 0 || H === 0) return;
  const wgBytes = step.gpu.limits.maxComputeWorkgroupStorageSize;
  const auto = attentionBackwardSchedule(T, H, KVH, D, wgBytes);
  const RQ = options.tuning?.queries ?? auto.queries;
  const RK = options.tuning?.keys ?? auto.keys;
  const UNROLL = options.tuning?.unroll ?? auto.unroll;
  for (const [what, r, vectors] of [["queries", RQ, 3], ["keys", RK, 4]] as const) {
    if (!Number.isInteger(r) || r < 1 || (!UNROLL && WG * vectors * r * D * 4 > wgBytes)) {
      throw new RangeError(
        `attentionBackward: ${r} ${what} per invocation do not fit ${wgBytes} bytes of workgroup memory ` +
          `at headDim ${D}; use fewer`,
      );
    }
  }
  const group = H / KVH;
  const grid = (invocations: number) => {
    const groups = Math.ceil(invocations / WG);
    const gridX = Math.min(groups, 65535);
    return { gridX, workgroups: [gridX, Math.ceil(groups / gridX)] as [number, number] };
  };
  const params = {
    rows: T,
    heads: H,
    group,
    kvHeads: KVH,
    scaleLog2e: scale * Math.LOG2E,
    scale,
    headVecs: D / 4,
    maskWords,
  };
  const MASK = mask !== undefined;
  const masked: Record<string, Tensor> = mask ? { mask } : {};
  // 1. dq and the per-(row, head) statistics.
  const gq = grid(KVH * Math.ceil((T * group) / RQ));
  step.dispatch(attentionBackwardDqSpec, {
    variant: { D, R: RQ, WG, UNROLL, MASK },
    bindings: { q, k, v, out, dOut, dq, stats, ...masked },
    params: { ...params, gridX: gq.gridX },
    workgroups: gq.workgroups,
  });
  // 2. dk and dv from the statistics.
  const gk = grid(KVH * Math.ceil(T / RK));
  step.dispatch(attentionBackwardDkvSpec, {
    variant: { D, R: RK, WG, UNROLL, MASK },
    bindings: { q, k, v, dOut, stats, dk, dv, ...masked },
    params: { ...params, gridX: gk.gridX },
    workgroups: gk.workgroups,
  });
}

/** Options of {@linkcode attentionBackwardReference}. */
export interface AttentionBackwardReferenceOptions {
  /** Query heads H. */
  heads: number;
  /** Key/value heads KVH. */
  kvHeads: number;
  /** Head size D. */
  headDim: number;
  /** Score scale (default 1/sqrt(D)). */
  scale?: number;
  /** Attention mask bits as in {@linkcode AttentionBackwardOptions.mask} (T rows of ceil(T/32) words). */
  mask?: Uint32Array;
}

/** Gradients returned by {@linkcode attentionBackwardReference}. */
export interface AttentionGradients {
  /** (T, H, D) gradient of q. */
  dq: Float32Array;
  /** (T, KVH, D) gradient of k. */
  dk: Float32Array;
  /** (T, KVH, D) gradient of v. */
  dv: Float32Array;
}

/**
 * CPU reference in f64: for each row i and head h, the full chain rule through the causal softmax,
 * written without the D_i = dO_i·O_i shortcut the kernels use (the softmax Jacobian term is
 * Σ_j P_ij dP_ij). T is q.length / (H·D).
 *
 * @param q (T, H, D) queries
 * @param k (T, KVH, D) keys
 * @param v (T, KVH, D) values
 * @param dOut (T, H, D) output gradient
 * @param options sizes and scale
 * @returns dq, dk, dv
 *
 * @example One row: the output is v_0 whatever q and k are, so dq = dk = 0 and dv = dOut
 * ```ts
 * import { attentionBackwardReference } from "./attention_backward.ts";
 * const x = new Float32Array([1, 2, 3, 4]);
 * const { dq, dv } = attentionBackwardReference(x, x, x, x, { heads: 1, kvHeads: 1, headDim: 4 });
 * // dq: [0, 0, 0, 0], dv: [1, 2, 3, 4]
 * ```
 */
export function attentionBackwardReference(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  dOut: Float32Array,
  options: AttentionBackwardReferenceOptions,
): AttentionGradients {
  const { heads: H, kvHeads: KVH, headDim: D } = options;
  const scale = options.scale ?? 1 / Math.sqrt(D);
  const T = q.length / (H * D);
  const group = H / KVH;
  const words = Math.ceil(T / 32);
  const sees = (i: number, j: number) =>
    j <= i && (!options.mask || ((options.mask[i * words + (j >> 5)] >>> (j & 31)) & 1) === 1);
  const dq = new Float64Array(T * H * D);
  const dk = new Float64Array(T * KVH * D);
  const dv = new Float64Array(T * KVH * D);
  for (let i = 0; i < T; i++) {
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / group);
      const qo = (i * H + h) * D;
      // Forward: scores S_ij = scale q_i·k_j over the keys j query i sees, softmax P_ij.
      const keys: number[] = [];
      for (let j = 0; j <= i; j++) if (sees(i, j)) keys.push(j);
      const s = keys.map((j) => {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[qo + d] * k[(j * KVH + kvh) * D + d];
        return scale * dot;
      });
      const max = Math.max(...s);
      const e = s.map((x) => Math.exp(x - max));
      const sum = e.reduce((a, b) => a + b, 0);
      const p = e.map((x) => x / sum);
      // O_i = Σ_j P_ij v_j  ⇒  dv_j += P_ij dO_i and dP_ij = dO_i·v_j.
      const dp = keys.map((j, n) => {
        const ko = (j * KVH + kvh) * D;
        let dot = 0;
        for (let d = 0; d < D; d++) {
          dv[ko + d] += p[n] * dOut[qo + d];
          dot += dOut[qo + d] * v[ko + d];
        }
        return dot;
      });
      // Softmax backward: dS_ij = P_ij (dP_ij − Σ_l P_il dP_il).
      let pdp = 0;
      for (let n = 0; n < keys.length; n++) pdp += p[n] * dp[n];
      // S_ij = scale q_i·k_j  ⇒  dq_i += scale dS_ij k_j, dk_j += scale dS_ij q_i.
      keys.forEach((j, n) => {
        const ds = p[n] * (dp[n] - pdp);
        const ko = (j * KVH + kvh) * D;
        for (let d = 0; d < D; d++) {
          dq[qo + d] += scale * ds * k[ko + d];
          dk[ko + d] += scale * ds * q[qo + d];
        }
      });
    }
  }
  return { dq: new Float32Array(dq), dk: new Float32Array(dk), dv: new Float32Array(dv) };
}
