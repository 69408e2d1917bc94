/**
 * Matrix products: the forward `y = x · Wᵀ` of every linear layer, and the two transposed forms the
 * backward pass needs (`dX = dY · W`, `dW += dYᵀ · X`).
 *
 * Dimension letters in this file: T rows of activations (tokens), N outputs (rows of a weight, as
 * checkpoints store it), K inputs (the reduction), M the rows of a `tn` product's output.
 *
 * All three forms come from ONE WGSL generator ({@linkcode matmulSpec}) whose variant picks the layout
 * and the register blocking. Each invocation computes an R × C block of outputs:
 * - the C columns are private to the invocation ("B" operand: rows of W for `nt`, vec4 column groups
 *   of B for `nn` and `tn`), loaded as vec4 along their contiguous axis;
 * - the R rows are shared by every invocation of a workgroup ("A" operand: rows of x). With
 *   subgroups (`SG`), the lanes of a subgroup load A cooperatively, one vec4 each, and hand it to
 *   each other with `subgroupBroadcast`, so every A element is loaded once per subgroup instead of
 *   once per lane.
 *
 * f16 weights are read as packed u32 words and widened with `unpack2x16float` (core WGSL, so no
 * `shader-f16` feature is needed); products and sums stay f32.
 *
 * Why this shape (measured on llvmpipe, docs/webgpu.md §3): llvmpipe runs 8 invocations as one SIMD
 * thread, and every storage load whose address is not a compile-time constant is executed lane by
 * lane (a scalar loop with a bounds check per component, a few cycles per element). Loads, not
 * FMAs, bound a matmul there: at 1024³ with R = 32, C = 4 the FMAs alone ran at ~140 GFLOP/s, the
 * kernel with its loads at ~35-40 (A and B loads costing about the same). So the kernel maximises
 * FMAs per per-lane load: many shared rows (loaded once per subgroup, then broadcast), C = 4 private
 * columns (more spills the private B vectors), no workgroup memory (barriers are expensive there).
 * Larger blocks (R = 64, or C = 8) gained ~10 % but took 5-10× longer to compile (~10 s cold; Mesa
 * caches compiled shaders on disk). Real GPUs want shared-memory tiling instead; their tiling is a
 * separate row of {@linkcode MATMUL_TUNING}.
 *
 * @module
 */

import { type Gpu, type KernelSpec, type Step, Tensor } from "../core/mod.ts";

// ---------------------------------------------------------------------------------------------
// Variants
// ---------------------------------------------------------------------------------------------

/**
 * Which product a variant computes (letters say whether A and B are read as stored, "n", or
 * transposed, "t"):
 * - `nt`: y(M, N) = a(M, K) · b(N, K)ᵀ (forward: x · Wᵀ);
 * - `nn`: y(M, N) = a(M, K) · b(K, N) (dX = dY · W);
 * - `tn`: y(M, N) = a(K, M)ᵀ · b(K, N) (dW = dYᵀ · X, the reduction runs over tokens).
 */
export type MatmulLayout = "nt" | "nn" | "tn";

/** The register-blocking choices of a matmul variant, the part an adapter table can tune. */
export type MatmulTiling = {
  /** Output rows per invocation, shared by the whole workgroup (a multiple of 4 for `tn`). */
  R: number;
  /** Output columns per invocation (a multiple of 4 for `nn` and `tn`). */
  C: number;
  /** Invocations per workgroup, all along the columns (a multiple of `SGS` with `SG`). */
  WG: number;
  /** Share A between the lanes of a subgroup with `subgroupBroadcast`. */
  SG: boolean;
  /**
   * The subgroup size the `SG` code is written for (a multiple of 4): its loops advance by one
   * vec4 per lane. A device whose subgroups differ gets NaN outputs, never a wrong product.
   */
  SGS: number;
};

/** A full matmul variant: the tiling plus what the shapes and dtypes dictate. */
export type MatmulVariant = MatmulTiling & {
  /** The product's layout. */
  LAYOUT: MatmulLayout;
  /** A's row length is a multiple of 4, so A is read as `vec4<f32>`; otherwise element by element. */
  VA: boolean;
  /** B's row length is a multiple of 4, so B is read 4 elements at a time; otherwise one by one. */
  VB: boolean;
  /** B holds f16 values (read as packed u32 words with `unpack2x16float`; accumulation is f32). */
  F16: boolean;
  /** B holds bf16 values (packed u32 words widened by a 16-bit shift; accumulation is f32). */
  BF16: boolean;
  /** B is a q8 tensor (int8 groups of 32 with f16 scales, kernels/quantize.ts), dequantised in registers. */
  Q8: boolean;
  /** B is a q4 tensor (Q4_0: int4 groups of 32 with f16 scales), dequantised in registers. */
  Q4: boolean;
  /**
   * `nt` only: B is 2 or 3 weights of one dtype (bindings b, b1, b2) stacked along N, products that
   * share A (q/k/v, gate/up) in one dispatch; columns n1.. are b1's rows, n2.. b2's (default 1).
   */
  GROUPS?: number;
  /** With GROUPS: 1 writes one y (T, N) with the groups side by side; GROUPS writes y, y1, y2. */
  YS?: number;
  /**
   * `nt` only: RMSNorm of A's rows folded in (binding `g`, the norm weight; parameter `eps`): the
   * loop multiplies A by g and sums A² along the way, and each output is scaled by
   * 1/sqrt(mean(A²) + eps) at the end, so the normalised activations are never written.
   */
  NORM?: boolean;
  /**
   * `nt` with GROUPS = 2 (gate, up): output column pairs interleave the two weights (column 2i is
   * gate row i, 2i + 1 up row i) and the epilogue writes y(T, N/2) = silu(gate) · up. C is even.
   */
  GLU?: boolean;
};

/**
 * The subgroup size of an llvmpipe adapter: one lane per 32 bits of its vector width, which its
 * description names (`llvmpipe (LLVM 15.0.6, 256 bits)` → 8); null for other adapters.
 *
 * @example Lanes of the build machines' adapter
 * ```ts
 * import { llvmpipeLanes } from "./matmul.ts";
 * llvmpipeLanes("llvmpipe (LLVM 15.0.6, 256 bits)"); // 8
 * ```
 */
export function llvmpipeLanes(description: string): number | null {
  const m = /llvmpipe.*?\b(\d+) bits/.exec(description);
  return m ? Number(m[1]) / 32 : null;
}

/**
 * Picks the tiling for a product of M × N outputs over K on an adapter.
 *
 * The table is keyed by what the adapter is: `fallback` for software adapters (llvmpipe,
 * SwiftShader), tuned on llvmpipe; `gpu` for everything else, a plain register-blocked default until
 * someone tunes it on real hardware (shared-memory tiling wins there, docs/webgpu.md §3 and §5).
 */
export const MATMUL_TUNING: Record<
  "fallback" | "gpu",
  (layout: MatmulLayout, M: number, N: number, K: number, gpu: Gpu) => MatmulTiling
> = {
  fallback: (layout, M, _N, _K, gpu) => {
    // Subgroup sharing where the subgroup size is known: llvmpipe (SwiftShader's differs).
    const lanes = llvmpipeLanes(gpu.adapter.description);
    const SG = gpu.features.subgroups && lanes !== null && lanes % 4 === 0;
    // R: the smallest of 1, 2, 4, 8, 16, 32 that covers M (a multiple of 4 for tn). 32 rows × 4
    // columns (128 accumulators) measured best for large M: R = 64 or C = 8 gain ~10 % but compile
    // 5-10× longer (~10 s) on llvmpipe; C > 4 spills the private B vectors.
    let R = 32;
    for (const r of layout === "tn" ? [4, 8, 16] : [1, 2, 4, 8, 16]) {
      if (M <= r) {
        R = r;
        break;
      }
    }
    const SGS = SG ? lanes! : 8;
    return { R, C: 4, WG: SGS, SG, SGS };
  },
  // Up to 32 rows (decoding: an AR step, a Jacobi block) one output per invocation: such a product
  // is a latency-bound link in a chain of small dispatches, and its time is the longest
  // invocation's walk over K, which more outputs per invocation only lengthen. Larger products
  // (prefill, training) and the backward layouts keep register blocks.
  gpu: (layout, M) =>
    layout === "nt" && M <= 32
      ? { R: 1, C: 1, WG: 64, SG: false, SGS: 32 }
      : { R: layout === "tn" || M >= 4 ? 4 : M <= 1 ? 1 : 2, C: 4, WG: 64, SG: false, SGS: 32 },
};

/** Options of the matmul functions. */
export interface MatmulOptions {
  /** `y += product` instead of `y = product` (gradients accumulate). */
  accumulate?: boolean;
  /** Row stride of y in elements (default N) and first column written (default 0). */
  yColumns?: { stride: number; first: number };
  /** Overrides fields of the tiling {@linkcode MATMUL_TUNING} picks (for benchmarks and tests). */
  variant?: Partial<MatmulTiling>;
  /**
   * `x · Wᵀ` only: multiply RMSNorm(x) instead of x, the norm folded into the product (see
   * {@linkcode MatmulVariant.NORM}): `weight` (K) f32 and `eps`.
   */
  norm?: { weight: Tensor; eps: number };
}

function checkTiling(t: MatmulTiling, layout: MatmulLayout): void {
  const ok = Number.isInteger(t.R) && t.R >= 1 && Number.isInteger(t.C) && t.C >= 1 &&
    Number.isInteger(t.WG) && t.WG >= 1 &&
    (layout === "nt" || t.C % 4 === 0) && (layout !== "tn" || t.R % 4 === 0) &&
    (!t.SG || (t.SGS % 4 === 0 && t.SGS > 0 && t.WG % t.SGS === 0));
  if (!ok) {
    throw new RangeError(
      `Matmul tiling ${JSON.stringify(t)} is invalid for layout "${layout}": R, C and WG must be positive ` +
        `integers, C a multiple of 4 for nn/tn, R a multiple of 4 for tn, and with SG, SGS a multiple of 4 and WG ` +
        `a multiple of SGS`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// WGSL generator
// ---------------------------------------------------------------------------------------------

/**
 * A loader `name(row, c4) -> vec4<f32>`: elements 4·c4 .. 4·c4+3 of row `row` of the row-major
 * matrix in binding `buf` whose rows are `cols` long; elements past the row's end read as 0 (so
 * reduction tails add nothing). The caller keeps `row` in range.
 */
function loader(
  name: string,
  buf: string,
  cols: string,
  vec: boolean,
  half: "f16" | "bf16" | "q8" | "q4" | null,
  scale = "P.bScale",
): string {
  if (half === "q4") {
    // Eight 4-bit values per word (q + 8); elements 4·c4 .. 4·c4+3 are half a word.
    return `fn ${name}(row: u32, c4: u32) -> vec4<f32> {
  let n4 = ${cols} / 4u;
  let c = min(c4, n4 - 1u);
  let w = ${buf}[row * (n4 / 2u) + c / 2u] >> (16u * (c & 1u));
  let q = vec4<f32>(vec4<u32>(w & 0xfu, (w >> 4u) & 0xfu, (w >> 8u) & 0xfu, (w >> 12u) & 0xfu)) - 8.0;
  let g = row * (${cols} / 32u) + c / 8u;
  let s = unpack2x16float(${buf}[${scale} + g / 2u])[g & 1u];
  return select(vec4<f32>(), q * s, c4 < n4);
}`;
  }
  if (half === "q8") {
    // Four int8 values per word, sign-extended by shifts; the group's f16 scale (groups of 32 along
    // the row, two scales per word from P.bScale on) multiplies them.
    return `fn ${name}(row: u32, c4: u32) -> vec4<f32> {
  let n4 = ${cols} / 4u;
  let w = ${buf}[row * n4 + min(c4, n4 - 1u)];
  let q = vec4<i32>(bitcast<i32>(w << 24u) >> 24u, bitcast<i32>(w << 16u) >> 24u, bitcast<i32>(w << 8u) >> 24u, bitcast<i32>(w) >> 24u);
  let g = row * (${cols} / 32u) + min(c4, n4 - 1u) / 8u;
  let s = unpack2x16float(${buf}[${scale} + g / 2u])[g & 1u];
  return select(vec4<f32>(), vec4<f32>(q) * s, c4 < n4);
}`;
  }
  // A u32 word holds two 16-bit values; f16 widens with unpack2x16float, bf16 with a shift.
  const unpack = half === "bf16" ? "unpackBf16" : "unpack2x16float";
  if (vec) {
    const load = half
      ? `let p = ${buf}[row * n4 + min(c4, n4 - 1u)];\n  let v = vec4<f32>(${unpack}(p.x), ${unpack}(p.y));`
      : `let v = ${buf}[row * n4 + min(c4, n4 - 1u)];`;
    return `fn ${name}(row: u32, c4: u32) -> vec4<f32> {
  let n4 = ${cols} / 4u;
  ${load}
  return select(vec4<f32>(), v, c4 < n4);
}`;
  }
  // Element by element: rows are not 16-byte aligned. f16 pairs share a u32 word.
  const elem = (i: number) => {
    const e = `base + min(c + ${i}u, last)`;
    const value = half ? `${unpack}(${buf}[(${e}) >> 1u])[(${e}) & 1u]` : `${buf}[${e}]`;
    return `    select(0.0, ${value}, c + ${i}u < ${cols}),`;
  };
  return `fn ${name}(row: u32, c4: u32) -> vec4<f32> {
  let base = row * ${cols};
  let c = c4 * 4u;
  let last = ${cols} - 1u;
  return vec4<f32>(
${[0, 1, 2, 3].map(elem).join("\n")}
  );
}`;
}

/** WGSL: the two bf16 values of a little-endian u32 word, widened to f32 (bf16 is an f32's top half). */
export const BF16_WGSL = `fn unpackBf16(w: u32) -> vec2<f32> {
  return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u));
}`;

const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const XYZW = "xyzw";

/**
 * The WGSL of a variant. Every layout reduces in groups of 4 steps and accumulates scalar dot
 * products, `acc[r][c] += dot(A4(r), B4(c))`, where A4(r) and B4(c) hold the 4 steps' values of
 * output row r and column c. For nn and tn those vectors are assembled from components of the
 * loaded vec4s (a 4 × 4 transpose, free on a SIMD-per-lane machine). Scalar accumulators with dot
 * products measured ~1.6× faster on llvmpipe than vec4 accumulators updated with scalar × vec4,
 * because the accumulators live in spill slots and each update reloads and stores them.
 */
function wgslOf(v: MatmulVariant): string {
  const { LAYOUT: layout, R, C, SG, SGS } = v;
  const CV = C / 4; // vec4 column groups per invocation (nn, tn)
  const lines: string[] = [];
  const emit = (s: string) => lines.push(s);

  // Loaders. A's rows run along K (nt, nn) or M (tn); B's along K (nt) or N (nn, tn).
  if (v.BF16) emit(BF16_WGSL);
  emit(loader("ldA", "a", layout === "tn" ? "P.M" : "P.K", v.VA, null));
  const half = v.Q4 ? "q4" : v.Q8 ? "q8" : v.BF16 ? "bf16" : v.F16 ? "f16" : null;
  const G = v.GROUPS ?? 1;
  const NORM = v.NORM === true;
  if (NORM) emit(loader("ldNorm", "g", "P.K", v.VA, null)); // called with row 0: g is one row
  emit(loader("ldB", "b", layout === "nt" ? "P.K" : "P.N", v.VB, half));
  if (G > 1) {
    // Stacked weights: ldG reads row `row` of group g's weight.
    for (let g = 1; g < G; g++) emit(loader(`ldB${g}`, `b${g}`, "P.K", v.VB, half, `P.bScale${g}`));
    emit(`fn ldG(g: u32, row: u32, c4: u32) -> vec4<f32> {
  if (g == 0u) { return ldB(row, c4); }
  ${G > 2 ? "if (g == 1u) { return ldB1(row, c4); }\n  return ldB2(row, c4);" : "return ldB1(row, c4);"}
}`);
  }

  const sgArgs = SG ? `, @builtin(subgroup_invocation_id) sid: u32, @builtin(subgroup_size) ssz: u32` : "";
  emit(`@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32${sgArgs}) {
  let m0 = wid.y * R; // first output row of the workgroup
  let n0 = (wid.x * WG + lid) * C; // first output column of this invocation`);
  // Every invocation runs the whole loop, out-of-range rows and columns on clamped indices
  // (broadcasts need all lanes); only the stores are guarded.
  for (const r of range(R)) for (const c of range(C)) emit(`  var acc${r}_${c} = 0.0;`);

  /** The dot products of one group: `a4(r)` names A4(r) (after `aPre(r)` lines), `b4(c)` B4(c). */
  const dots = (
    ind: string,
    aPre: (r: number) => string[],
    a4: (r: number) => string,
    b4: (c: number) => string,
  ) => {
    for (const r of range(R)) {
      for (const line of aPre(r)) emit(ind + line);
      for (const c of range(C)) emit(`${ind}acc${r}_${c} += dot(${a4(r)}, ${b4(c)});`);
    }
  };
  if (layout === "nt" || layout === "nn") {
    const step = SG ? SGS : 1; // groups of 4 per loop iteration
    // Reduction along the rows of a (M, K): group j is vec4 k4 = kc + j, elements 4·k4 .. 4·k4 + 3.
    for (const r of range(R)) emit(`  let ar${r} = min(m0 + ${r}u, P.M - 1u);`);
    if (layout === "nt") {
      for (const c of range(C)) {
        emit(`  let br${c} = min(n0 + ${c}u, P.N - 1u);`);
        if (G > 1 && v.GLU) {
          // Interleaved gate/up: column 2i is gate row i, 2i + 1 up row i.
          emit(`  let g${c} = br${c} & 1u;`);
          emit(`  let lr${c} = br${c} >> 1u;`);
        } else if (G > 1) {
          // Column → (group, row of the group's weight).
          emit(`  let g${c} = select(select(0u, 1u, br${c} >= P.n1), 2u, br${c} >= P.n2);`);
          emit(`  let lr${c} = br${c} - select(select(0u, P.n1, br${c} >= P.n1), P.n2, br${c} >= P.n2);`);
        }
      }
    }
    emit(`  let KV = (P.K + 3u) / 4u;`);
    if (NORM) { for (const r of range(R)) emit(`  var ss${r} = 0.0;`); }
    emit(`  for (var kc = 0u; kc < KV; kc += ${step}u) {`);
    if (SG) {
      // Lane sid loads vec4 kc + sid of every shared row; lane j's copy serves group j.
      for (const r of range(R)) emit(`    let xs${r} = ldA(ar${r}, kc + sid);`);
      if (NORM) emit(`    let gs = ldNorm(0u, kc + sid);`);
    }
    for (const j of range(step)) {
      emit(`    {`);
      emit(`      let k4 = kc + ${j}u;`);
      if (layout === "nt") {
        for (const c of range(C)) {
          emit(G > 1 ? `      let w${c} = ldG(g${c}, lr${c}, k4);` : `      let w${c} = ldB(br${c}, k4);`);
        }
      } else {
        // nn: rows 4·k4 .. 4·k4 + 3 of b (clamped: past K the A factors are 0), transposed into
        // one vec4 per column.
        for (const q of range(4)) {
          emit(`      let k${q} = min(k4 * 4u + ${q}u, P.K - 1u);`);
          for (const g of range(CV)) emit(`      let b${q}_${g} = ldB(k${q}, n0 / 4u + ${g}u);`);
        }
        for (const c of range(C)) {
          const g = c >> 2, i = XYZW[c & 3];
          emit(`      let w${c} = vec4<f32>(b0_${g}.${i}, b1_${g}.${i}, b2_${g}.${i}, b3_${g}.${i});`);
        }
      }
      if (NORM) emit(SG ? `      let g4 = subgroupBroadcast(gs, ${j}u);` : `      let g4 = ldNorm(0u, k4);`);
      dots(
        "      ",
        (r) => {
          const load = SG
            ? `let x${r}raw = subgroupBroadcast(xs${r}, ${j}u);`
            : `let x${r}raw = ldA(ar${r}, k4);`;
          // With NORM: Σ x² for the row's scale, and x · g against the weights.
          return NORM
            ? [load, `ss${r} += dot(x${r}raw, x${r}raw);`, `let x${r} = x${r}raw * g4;`]
            : [load, `let x${r} = x${r}raw;`];
        },
        (r) => `x${r}`,
        (c) => `w${c}`,
      );
      emit(`    }`);
    }
    emit(`  }`);
  } else {
    // tn: reduction over the rows t of a (K, M) and b (K, N), 4 rows per group.
    const groups = SG ? SGS / 4 : 1; // groups of 4 rows t per loop iteration
    emit(`  for (var tc = 0u; tc < P.K; tc += ${4 * groups}u) {`);
    if (SG) {
      // Lane sid loads row tc + sid of a (this workgroup's R columns, 0 past K); lane j's copy
      // serves row tc + j.
      emit(`    let tl = tc + sid;`);
      for (const q of range(R / 4)) {
        emit(`    let as${q} = select(vec4<f32>(), ldA(min(tl, P.K - 1u), m0 / 4u + ${q}u), tl < P.K);`);
      }
    }
    for (const g of range(groups)) {
      emit(`    {`);
      for (const u of range(4)) {
        const t = `tc + ${4 * g + u}u`;
        emit(`      let t${u} = min(${t}, P.K - 1u);`);
        for (const h of range(CV)) emit(`      let b${u}_${h} = ldB(t${u}, n0 / 4u + ${h}u);`);
      }
      for (const c of range(C)) {
        const h = c >> 2, i = XYZW[c & 3];
        emit(`      let w${c} = vec4<f32>(b0_${h}.${i}, b1_${h}.${i}, b2_${h}.${i}, b3_${h}.${i});`);
      }
      // A4(r) for r = 4q + i: component i of row q's vec4 for each of the 4 rows t.
      const aPre = (r: number) => {
        if (r % 4 !== 0) return [];
        const q = r >> 2;
        return range(4).map((u) =>
          SG
            ? `let a${u}_${q} = subgroupBroadcast(as${q}, ${4 * g + u}u);`
            : `let a${u}_${q} = select(vec4<f32>(), ldA(t${u}, m0 / 4u + ${q}u), tc + ${u}u < P.K);`
        );
      };
      dots("      ", aPre, (r) => {
        const q = r >> 2, i = XYZW[r & 3];
        return `vec4<f32>(a0_${q}.${i}, a1_${q}.${i}, a2_${q}.${i}, a3_${q}.${i})`;
      }, (c) => `w${c}`);
      emit(`    }`);
    }
    emit(`  }`);
  }

  // Stores: y = (accumulate ? y : 0) + acc. A subgroup of another size than SGS would have mixed
  // the wrong lanes, so such an adapter gets NaN, never a silently wrong product.
  emit(SG ? `  let bad = ssz != ${SGS}u;` : `  let bad = false;`);
  // A NaN made at run time: Tint rejects a constant expression whose value is NaN.
  emit(`  let nan = bitcast<f32>(0x7fc00000u | min(P.acc, 0u));`);
  if (NORM) {
    // The RMSNorm scale of each row (rsqrt of the mean square plus eps), applied to its outputs.
    for (const r of range(R)) {
      emit(`  let rs${r} = inverseSqrt(ss${r} / f32(P.K) + P.eps);`);
      for (const c of range(C)) emit(`  acc${r}_${c} = acc${r}_${c} * rs${r};`);
    }
  }
  if (v.GLU) {
    // Column pairs (gate, up) → one output: silu(gate) · up, at column (n0 + c) / 2 of y (M, N / 2).
    for (const r of range(R)) {
      for (let c = 0; c < C; c += 2) {
        const row = `m0 + ${r}u`, col = `(n0 + ${c}u) / 2u`;
        emit(
          `  if (${row} < P.M && n0 + ${c}u < P.N) { let gt = acc${r}_${c}; let i = (${row}) * (P.N / 2u) + ${col}; ` +
            `y[i] = select(select(0.0, y[i], P.acc != 0u) + gt / (1.0 + exp(-gt)) * acc${r}_${
              c + 1
            }, nan, bad); }`,
        );
      }
    }
    emit(`}`);
    return lines.join("\n");
  }
  const ys = G > 1 && (v.YS ?? 1) > 1;
  for (const r of range(R)) {
    for (const c of range(C)) {
      const row = `m0 + ${r}u`, col = `n0 + ${c}u`;
      if (ys) {
        // One y per group, each (M, its rows): y, y1, y2 with row strides n1, n2 − n1, N − n2.
        const store = (buf: string, stride: string) =>
          `{ let i = (${row}) * (${stride}) + lr${c}; ${buf}[i] = select(select(0.0, ${buf}[i], P.acc != 0u) + acc${r}_${c}, nan, bad); }`;
        emit(`  if (${row} < P.M && ${col} < P.N) {`);
        emit(`    if (g${c} == 0u) ${store("y", "P.n1")}`);
        emit(
          `    ${
            G > 2
              ? `else if (g${c} == 1u) ${store("y1", "P.n2 - P.n1")} else ${store("y2", "P.N - P.n2")}`
              : `else ${store("y1", "P.N - P.n1")}`
          }`,
        );
        emit(`  }`);
        continue;
      }
      emit(
        `  if (${row} < P.M && ${col} < P.N) { let i = (${row}) * P.ldy + P.yCol + ${col}; ` +
          `y[i] = select(select(0.0, y[i], P.acc != 0u) + acc${r}_${c}, nan, bad); }`,
      );
    }
  }
  emit(`}`);
  return lines.join("\n");
}

/**
 * The matmul kernel: y(M, N) = A ⊗ B in the layout of the variant (see {@linkcode MatmulLayout}).
 *
 * Bindings: `a` (read), `b` (read; packed f16 pairs as u32 words when `F16`), `y` (read-write).
 * Parameters: M, N, K, `acc` (1: add to y), and where y's columns are: row stride `ldy` and first
 * column `yCol` (N and 0 for a whole y; a slice when the weight is split by rows). Dispatch:
 * ceil(N / (WG·C)) × ceil(M / R) workgroups.
 */
export const matmulSpec: KernelSpec<MatmulVariant> = {
  name: "matmul",
  bindings: (v) => {
    const bType = v.Q8 || v.Q4
      ? "u32"
      : v.F16 || v.BF16
      ? (v.VB ? "vec2<u32>" : "u32")
      : v.VB
      ? "vec4<f32>"
      : "f32";
    const G = v.GROUPS ?? 1;
    const more = (prefix: string, access: "read" | "read_write", type: string, n: number) =>
      range(n).slice(1).map((g) => ({ name: `${prefix}${g}`, access, type }));
    return [
      { name: "a", access: "read", type: v.VA ? "vec4<f32>" : "f32" },
      { name: "b", access: "read", type: bType },
      ...more("b", "read", bType, G),
      { name: "y", access: "read_write", type: "f32" },
      ...more("y", "read_write", "f32", G > 1 ? v.YS ?? 1 : 1),
      ...(v.NORM ? [{ name: "g", access: "read" as const, type: v.VA ? "vec4<f32>" : "f32" }] : []),
    ];
  },
  params: [
    { name: "M", type: "u32" },
    { name: "N", type: "u32" },
    { name: "K", type: "u32" },
    { name: "acc", type: "u32" },
    { name: "ldy", type: "u32" },
    { name: "yCol", type: "u32" },
    { name: "bScale", type: "u32" }, // q8: the word where b's scales start
    { name: "n1", type: "u32" }, // GROUPS: first column of b1's rows (N when absent)
    { name: "n2", type: "u32" }, // GROUPS: first column of b2's rows (N when absent)
    { name: "bScale1", type: "u32" },
    { name: "bScale2", type: "u32" },
    { name: "eps", type: "f32" }, // NORM: the RMSNorm epsilon
  ],
  wgsl: wgslOf,
};

// ---------------------------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------------------------

/**
 * The full variant {@linkcode matmulForward} and friends would use for a product on this device
 * (exported for benchmarks and tests).
 *
 * @param gpu the device (its adapter picks the tuning row)
 * @param layout the product
 * @param M output rows
 * @param N output columns
 * @param K reduction length
 * @param bDtype B's dtype (f32, or 16-bit f16 or bf16 weights)
 * @param override tiling fields to force
 *
 * @example The tiling of a Jacobi block on this device
 * ```ts ignore
 * const v = matmulVariant(gpu, "nt", 16, 4096, 4096);
 * console.log(`${v.R} rows x ${v.C} columns per invocation, subgroups: ${v.SG}`);
 * ```
 */
export function matmulVariant(
  gpu: Gpu,
  layout: MatmulLayout,
  M: number,
  N: number,
  K: number,
  bDtype: "f32" | "f16" | "bf16" | "q8" | "q4" = "f32",
  override: Partial<MatmulTiling> = {},
): MatmulVariant {
  const table = gpu.adapter.isFallbackAdapter ? MATMUL_TUNING.fallback : MATMUL_TUNING.gpu;
  const tiling = { ...table(layout, M, N, K, gpu), ...override };
  if (tiling.SG && !gpu.features.subgroups) tiling.SG = false;
  checkTiling(tiling, layout);
  const aCols = layout === "tn" ? M : K;
  const bCols = layout === "nt" ? K : N;
  return {
    LAYOUT: layout,
    R: tiling.R,
    C: tiling.C,
    WG: tiling.WG,
    SG: tiling.SG,
    SGS: tiling.SGS,
    VA: aCols % 4 === 0,
    VB: bCols % 4 === 0,
    F16: bDtype === "f16",
    BF16: bDtype === "bf16",
    Q8: bDtype === "q8",
    Q4: bDtype === "q4",
  };
}

function dispatchMatmul(
  step: Step,
  layout: MatmulLayout,
  a: Tensor,
  b: Tensor,
  y: Tensor,
  M: number,
  N: number,
  K: number,
  opts: MatmulOptions,
): void {
  if (a.dtype !== "f32" || y.dtype !== "f32" || !["f32", "f16", "bf16", "q8", "q4"].includes(b.dtype)) {
    throw new TypeError(
      `Matmul (${layout}) needs f32 a and y and an f32, f16, bf16, q8 or q4 b; got a ${a.dtype}, b ${b.dtype}, ` +
        `y ${y.dtype}`,
    );
  }
  const quantised = b.dtype === "q8" || b.dtype === "q4";
  if (quantised && (layout !== "nt" || K % 32 !== 0)) {
    throw new RangeError(
      `Matmul: ${b.dtype} weights need the x·Wᵀ form and rows of a multiple of 32 values, not K = ${K}`,
    );
  }
  const bDtype = b.dtype as "f32" | "f16" | "bf16" | "q8" | "q4";
  const norm = opts.norm;
  if (norm) checkNorm(norm, K, layout);
  const variant: MatmulVariant = {
    ...matmulVariant(step.gpu, layout, M, N, K, bDtype, opts.variant),
    ...(norm ? { NORM: true } : {}),
  };
  const workgroups: [number, number] = [Math.ceil(N / (variant.WG * variant.C)), Math.ceil(M / variant.R)];
  step.dispatch(matmulSpec, {
    variant,
    bindings: norm ? { a, b, y, g: norm.weight } : { a, b, y },
    params: {
      M,
      N,
      K,
      acc: opts.accumulate ? 1 : 0,
      ldy: opts.yColumns?.stride ?? N,
      yCol: opts.yColumns?.first ?? 0,
      bScale: quantised ? b.q8ScaleWord : 0,
      n1: N,
      n2: N,
      bScale1: 0,
      bScale2: 0,
      eps: norm?.eps ?? 0,
    },
    workgroups,
  });
}

function checkNorm(norm: { weight: Tensor; eps: number }, K: number, layout: MatmulLayout): void {
  if (layout !== "nt" || norm.weight.dtype !== "f32" || norm.weight.size !== K || !(norm.eps > 0)) {
    throw new RangeError(
      `Matmul: a folded RMSNorm needs the x·Wᵀ form, an f32 weight of K = ${K} values and eps > 0; got ` +
        `"${norm.weight.label}" ${norm.weight.dtype} [${norm.weight.shape.join(", ")}], eps ${norm.eps}`,
    );
  }
}

/** Splits a shape into (rows, last dimension); a 1-D tensor is one row. */
function rowsCols(t: Tensor): [number, number] {
  const cols = t.shape.length > 0 ? t.shape[t.shape.length - 1] : 1;
  return [cols === 0 ? 0 : t.size / cols, cols];
}

function shapeError(what: string, detail: string): RangeError {
  return new RangeError(`${what}: ${detail}`);
}

function checkPositive(what: string, dims: Record<string, number>): void {
  for (const [k, n] of Object.entries(dims)) {
    if (!(n >= 1)) throw shapeError(what, `${k} = ${n}; every dimension must be at least 1`);
  }
}

/**
 * Records y(T, N) = x(T, K) · Wᵀ (+ y with `accumulate`), W (N, K) stored as checkpoints store it
 * (row n = output n). x and y may have leading dimensions (flattened into T). W may be f16
 * (accumulation stays f32).
 *
 * @example A linear layer
 * ```ts ignore
 * const step = new Step(gpu, "forward");
 * matmulForward(step, x, wq, q); // q(T, N) = x(T, K) · wq(N, K)ᵀ
 * step.submit();
 * ```
 */
export function matmulForward(
  step: Step,
  x: Tensor,
  w: Tensor | readonly Tensor[],
  y: Tensor,
  opts: MatmulOptions = {},
): void {
  // A weight split by rows (over one storage binding): each part writes its slice of y's columns.
  const parts = w instanceof Tensor ? [w] : w;
  const [T, K] = rowsCols(x);
  for (const p of parts) {
    if (p.shape.length !== 2) {
      throw shapeError("matmulForward", `w must be (N, K); got [${p.shape.join(", ")}]`);
    }
  }
  const N = parts.reduce((a, p) => a + p.shape[0], 0);
  const shape = `[${N}, ${parts[0]?.shape[1]}]${parts.length > 1 ? ` in ${parts.length} parts` : ""}`;
  checkPositive("matmulForward", { T, N, K });
  if (parts.some((p) => p.shape[1] !== K) || y.size !== T * N || rowsCols(y)[1] !== N) {
    throw shapeError(
      "matmulForward",
      `x [${x.shape.join(", ")}] · w ${shape}ᵀ does not fit y [${y.shape.join(", ")}]; ` +
        `expected x (T, K), w (N, K), y (T, N)`,
    );
  }
  let first = 0;
  for (const p of parts) {
    dispatchMatmul(step, "nt", x, p, y, T, p.shape[0], K, { ...opts, yColumns: { stride: N, first } });
    first += p.shape[0];
  }
}

/**
 * Records the products of one input with 2 or 3 weights in ONE dispatch (q/k/v, gate/up):
 * `y_g(T, N_g) = x(T, K) · W_gᵀ`. `y` is one tensor (T, ΣN_g) holding them side by side, or one
 * tensor per weight. The weights share a dtype and K; nothing is copied (the kernel picks the
 * weight by output column), so no memory is spent on stacked copies.
 *
 * @example q, k and v side by side in one buffer, then gate and up into their own
 * ```ts ignore
 * matmulGroupsForward(step, xn, [wq, wk, wv], qkv);
 * matmulGroupsForward(step, xn, [wGate, wUp], [gate, up]);
 * ```
 */
export function matmulGroupsForward(
  step: Step,
  x: Tensor,
  ws: readonly Tensor[],
  y: Tensor | readonly Tensor[],
  opts: Pick<MatmulOptions, "accumulate" | "variant" | "norm"> & {
    /** Two weights (gate, up) into one y (T, N) = silu(x · gateᵀ) · (x · upᵀ). */
    glu?: boolean;
  } = {},
): void {
  const [T, K] = rowsCols(x);
  const G = ws.length;
  if (G < 2 || G > 3) throw new RangeError(`matmulGroupsForward: 2 or 3 weights, not ${G}`);
  const dtype = ws[0].dtype;
  for (const w of ws) {
    if (w.shape.length !== 2 || w.shape[1] !== K || w.dtype !== dtype) {
      throw shapeError(
        "matmulGroupsForward",
        `every weight must be (N, ${K}) of one dtype; got [${w.shape.join(", ")}] ${w.dtype} beside ${dtype}`,
      );
    }
  }
  const starts = [0];
  for (const w of ws) starts.push(starts[starts.length - 1] + w.shape[0]);
  const N = starts[G];
  const ys = y instanceof Tensor ? [y] : y;
  const glu = opts.glu === true;
  if (glu && (G !== 2 || ws[0].shape[0] !== ws[1].shape[0] || ys.length !== 1)) {
    throw shapeError("matmulGroupsForward", "glu needs two weights of one shape (gate, up) and one y");
  }
  const fits = glu
    ? ys[0].size === T * ws[0].shape[0] && rowsCols(ys[0])[1] === ws[0].shape[0]
    : ys.length === 1
    ? ys[0].size === T * N && rowsCols(ys[0])[1] === N
    : ys.length === G &&
      ys.every((t, g) => t.size === T * ws[g].shape[0] && rowsCols(t)[1] === ws[g].shape[0]);
  checkPositive("matmulGroupsForward", { T, N, K });
  if (!fits || x.dtype !== "f32" || ys.some((t) => t.dtype !== "f32")) {
    throw shapeError(
      "matmulGroupsForward",
      `x [${
        x.shape.join(", ")
      }] and ${G} weights of ${N} rows in all need f32 y of (T, ${N}) or one (T, N_g) per weight`,
    );
  }
  const quantised = dtype === "q8" || dtype === "q4";
  if (quantised && K % 32 !== 0) {
    throw new RangeError(`Matmul: ${dtype} weights need K a multiple of 32, not ${K}`);
  }
  const norm = opts.norm;
  if (norm) checkNorm(norm, K, "nt");
  const base = matmulVariant(
    step.gpu,
    "nt",
    T,
    N,
    K,
    dtype as "f32" | "f16" | "bf16" | "q8" | "q4",
    opts.variant,
  );
  // GLU pairs columns (gate, up) inside one invocation: an even column count per invocation.
  if (glu && base.C % 2 === 1) base.C += 1;
  const variant: MatmulVariant = {
    ...base,
    GROUPS: G,
    YS: ys.length,
    ...(norm ? { NORM: true } : {}),
    ...(glu ? { GLU: true } : {}),
  };
  const bindings: Record<string, Tensor> = { a: x, b: ws[0], y: ys[0] };
  if (norm) bindings.g = norm.weight;
  for (let g = 1; g < G; g++) bindings[`b${g}`] = ws[g];
  for (let g = 1; g < ys.length; g++) bindings[`y${g}`] = ys[g];
  step.dispatch(matmulSpec, {
    variant,
    bindings,
    params: {
      M: T,
      N,
      K,
      acc: opts.accumulate ? 1 : 0,
      ldy: N,
      yCol: 0,
      bScale: quantised ? ws[0].q8ScaleWord : 0,
      n1: starts[1],
      n2: G > 2 ? starts[2] : N,
      bScale1: quantised ? ws[1].q8ScaleWord : 0,
      bScale2: quantised && G > 2 ? ws[2].q8ScaleWord : 0,
      eps: norm?.eps ?? 0,
    },
    workgroups: [Math.ceil(N / (variant.WG * variant.C)), Math.ceil(T / variant.R)],
  });
}

/**
 * Records y(T, N) = a(T, K) · b(K, N) (+ y with `accumulate`): the input gradient of a linear layer,
 * dX(T, K) = dY(T, N) · W(N, K).
 *
 * @example The input gradient of a linear layer
 * ```ts ignore
 * matmulNN(step, dY, w, dX); // dX(T, K) = dY(T, N) · w(N, K)
 * ```
 */
export function matmulNN(step: Step, a: Tensor, b: Tensor, y: Tensor, opts: MatmulOptions = {}): void {
  const [T, K] = rowsCols(a);
  if (b.shape.length !== 2) throw shapeError("matmulNN", `b must be (K, N); got [${b.shape.join(", ")}]`);
  const [KB, N] = b.shape;
  checkPositive("matmulNN", { T, N, K });
  if (KB !== K || y.size !== T * N || rowsCols(y)[1] !== N) {
    throw shapeError(
      "matmulNN",
      `a [${a.shape.join(", ")}] · b [${b.shape.join(", ")}] does not fit y [${y.shape.join(", ")}]; ` +
        `expected a (T, K), b (K, N), y (T, N)`,
    );
  }
  dispatchMatmul(step, "nn", a, b, y, T, N, K, opts);
}

/**
 * Records y(M, N) = a(T, M)ᵀ · b(T, N) (+ y with `accumulate`): the weight gradient of a linear
 * layer, dW(N, K) += dY(T, N)ᵀ · X(T, K). The reduction runs over the T rows.
 *
 * @example Accumulating a weight gradient
 * ```ts ignore
 * matmulTN(step, dY, x, dW, { accumulate: true }); // dW(N, K) += dY(T, N)ᵀ · x(T, K)
 * ```
 */
export function matmulTN(step: Step, a: Tensor, b: Tensor, y: Tensor, opts: MatmulOptions = {}): void {
  const [T, M] = rowsCols(a);
  const [TB, N] = rowsCols(b);
  checkPositive("matmulTN", { T, M, N });
  if (TB !== T || y.size !== M * N || rowsCols(y)[1] !== N) {
    throw shapeError(
      "matmulTN",
      `a [${a.shape.join(", ")}]ᵀ · b [${b.shape.join(", ")}] does not fit y [${y.shape.join(", ")}]; ` +
        `expected a (T, M), b (T, N), y (M, N)`,
    );
  }
  if (b.dtype !== "f32") throw new TypeError("matmulTN: b must be f32 (it holds activations)");
  dispatchMatmul(step, "tn", a, b, y, M, N, T, opts);
}

// ---------------------------------------------------------------------------------------------
// CPU references (f64 accumulation, plain loops)
// ---------------------------------------------------------------------------------------------

/**
 * CPU reference of {@linkcode matmulForward}: y[t, n] = Σ_k x[t, k] · w[n, k], accumulated in f64.
 *
 * @example A 1 × 2 input against one 2-wide weight row
 * ```ts
 * import { matmulReference } from "./matmul.ts";
 * // x (1, 2) = [1, 2]; w (1, 2) = [3, 4]  →  y = 1·3 + 2·4 = 11
 * matmulReference(new Float32Array([1, 2]), new Float32Array([3, 4]), 1, 1, 2); // Float32Array [11]
 * ```
 */
export function matmulReference(
  x: Float32Array,
  w: Float32Array,
  T: number,
  N: number,
  K: number,
): Float32Array {
  const y = new Float32Array(T * N);
  for (let t = 0; t < T; t++) {
    for (let n = 0; n < N; n++) {
      let sum = 0;
      for (let k = 0; k < K; k++) sum += x[t * K + k] * w[n * K + k];
      y[t * N + n] = sum;
    }
  }
  return y;
}

/**
 * CPU reference of {@linkcode matmulNN}: y[t, n] = Σ_k a[t, k] · b[k, n], accumulated in f64.
 *
 * @example A 1 × 2 by 2 × 1 product
 * ```ts
 * import { matmulNNReference } from "./matmul.ts";
 * // a (1, 2) = [1, 2]; b (2, 1) = [3, 4]  →  y = 11
 * matmulNNReference(new Float32Array([1, 2]), new Float32Array([3, 4]), 1, 1, 2); // Float32Array [11]
 * ```
 */
export function matmulNNReference(
  a: Float32Array,
  b: Float32Array,
  T: number,
  N: number,
  K: number,
): Float32Array {
  const y = new Float32Array(T * N);
  const row = new Float64Array(N);
  for (let t = 0; t < T; t++) {
    row.fill(0);
    for (let k = 0; k < K; k++) {
      const s = a[t * K + k];
      for (let n = 0; n < N; n++) row[n] += s * b[k * N + n];
    }
    for (let n = 0; n < N; n++) y[t * N + n] = row[n];
  }
  return y;
}

/**
 * CPU reference of {@linkcode matmulTN}: y[m, n] = Σ_t a[t, m] · b[t, n], accumulated in f64.
 *
 * @example A reduction over two rows
 * ```ts
 * import { matmulTNReference } from "./matmul.ts";
 * // a (2, 1) = [1, 2]; b (2, 1) = [3, 4]  →  y = 11
 * matmulTNReference(new Float32Array([1, 2]), new Float32Array([3, 4]), 2, 1, 1); // Float32Array [11]
 * ```
 */
export function matmulTNReference(
  a: Float32Array,
  b: Float32Array,
  T: number,
  M: number,
  N: number,
): Float32Array {
  const acc = new Float64Array(M * N);
  for (let t = 0; t < T; t++) {
    for (let m = 0; m < M; m++) {
      const s = a[t * M + m];
      for (let n = 0; n < N; n++) acc[m * N + n] += s * b[t * N + n];
    }
  }
  return Float32Array.from(acc);
}
