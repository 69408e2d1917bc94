/**
 * int8 weights (q8): a weight matrix quantised in groups of 32 consecutive values along its rows
 * (the reduction dimension of x·Wᵀ), each group with one f16 scale, the scheme of llama.cpp's Q8_0:
 *
 *     s = f16(max|w| / 127),  q = clamp(round(w / s), −127, 127),  w ≈ q · s
 *
 * `round` is to nearest, ties to even (WGSL's `round`). A q8 tensor (core/tensor.ts) holds the int8
 * values, four per u32 word, then the scales, two per word, from word `q8ScaleWord` on; the matmul
 * kernel reads it directly (kernels/matmul.ts, variant Q8), dequantising in registers.
 *
 * q4 follows llama.cpp's Q4_0: with m the group's value of largest magnitude (its sign kept),
 *
 *     s = f16(m / −8),  q = clamp(round(w / s), −8, 7),  w ≈ q · s
 *
 * so all 16 levels are used (the largest value lands exactly on −8·s); q + 8 is stored in 4 bits,
 * eight per u32 word (element j of a word in bits 4j..4j+3). Chosen by measured error over a
 * symmetric absmax / 7 scale: relative RMS error 0.087 against 0.098 on the embedded CLLM's layer
 * matrices, 0.088 against 0.101 on Gaussian values (tests/kernels/quantize_test.ts checks the order).
 *
 * Quantising runs on the GPU at load time, from f32 values (a checkpoint's f16 or bf16 bytes are
 * widened first by kernels/convert.ts): one invocation per pair of groups, so that each writes
 * whole u32 words of values and of scales.
 *
 * @module
 */

import type { KernelSpec, Step, Tensor } from "../core/mod.ts";
import { ELEMENTWISE_PARAMS, elementwiseWgsl, grid1d } from "./add.ts";

/** Values per group (one scale each). */
export const Q8_GROUP = 32;

const WG = 64;

/**
 * Quantises f32 `src[srcElement ..]` into the q8 tensor `dst` from element `dstElement` on, one
 * invocation per pair of groups (64 values): `n` pairs, `count` values (the last pair may be half).
 */
export const quantizeQ8Spec: KernelSpec<{ WG: number; BITS: number }> = {
  name: "quantize_q8",
  bindings: [
    { name: "src", access: "read" },
    { name: "dst", access: "read_write", type: "u32" },
  ],
  params: [
    ...ELEMENTWISE_PARAMS,
    { name: "count", type: "u32" },
    { name: "srcElement", type: "u32" },
    { name: "dstElement", type: "u32" },
    { name: "scaleWord", type: "u32" },
  ],
  wgsl: (v) => `
// Values per word, and the levels: q8 symmetric in [-127, 127]; q4 (Q4_0) in [-8, 7], offset by 8.
const PER: u32 = 32u / BITS;

// The f16-rounded scale of the group starting at value g0 (relative to the source offset).
fn groupScale(g0: u32) -> f32 {
  var m = 0.0;
  var mx = 0.0;
  for (var j = 0u; j < 32u; j++) {
    if (g0 + j < P.count) {
      let x = src[P.srcElement + g0 + j];
      if (abs(x) > m) { m = abs(x); mx = x; }
    }
  }
  let s = ${v.BITS === 8 ? "m / 127.0" : "mx / -8.0"};
  return unpack2x16float(pack2x16float(vec2<f32>(s, 0.0))).x;
}

fn quantizeWord(g0: u32, w: u32, s: f32) -> u32 {
  var word = 0u;
  for (var b = 0u; b < PER; b++) {
    let e = g0 + PER * w + b;
    var q = 0;
    if (s != 0.0 && e < P.count) {
      q = i32(clamp(round(src[P.srcElement + e] / s), ${v.BITS === 8 ? "-127.0, 127.0" : "-8.0, 7.0"}));
    }
    ${
    v.BITS === 8
      ? "word = word | ((bitcast<u32>(q) & 0xffu) << (8u * b));"
      : "word = word | (u32(q + 8) << (4u * b));"
  }
  }
  return word;
}
${
    elementwiseWgsl(`
// Pair i: groups 2i and 2i + 1 of this call, values 64i .. 64i + 63.
let g0 = 64u * i;
let s0 = groupScale(g0);
let s1 = select(0.0, groupScale(g0 + 32u), g0 + 32u < P.count);
let firstWord = (P.dstElement + g0) / PER;
for (var w = 0u; w < 64u / PER; w++) {
  if (g0 + PER * w < P.count) { dst[firstWord + w] = quantizeWord(g0, w, select(s1, s0, w < 32u / PER)); }
}
dst[P.scaleWord + (P.dstElement + g0) / 64u] = pack2x16float(vec2<f32>(s0, s1));`)
  }`,
};

/**
 * Records the quantisation of `count` f32 values of `src` (from `srcElement`) into the q8 tensor
 * `dst` (from `dstElement`, a multiple of 64 so that pairs of groups own whole words).
 *
 * @example Quantising a converted piece of a weight
 * ```ts ignore
 * quantizeQ8(step, f32Piece, weightQ8, { count: pieceValues, dstElement: done });
 * ```
 */
export function quantizeQ8(
  step: Step,
  src: Tensor,
  dst: Tensor,
  options: { count: number; srcElement?: number; dstElement?: number },
): void {
  const { count } = options;
  const srcElement = options.srcElement ?? 0;
  const dstElement = options.dstElement ?? 0;
  if (src.dtype !== "f32" || (dst.dtype !== "q8" && dst.dtype !== "q4")) {
    throw new TypeError(
      `quantizeQ8: needs an f32 source and a q8 or q4 destination, not ${src.dtype} → ${dst.dtype}`,
    );
  }
  if (dstElement % 64 !== 0) {
    throw new RangeError(`quantizeQ8: dstElement must be a multiple of 64, not ${dstElement}`);
  }
  if (srcElement + count > src.size || dstElement + count > dst.size) {
    throw new RangeError(`quantizeQ8: ${count} values overrun "${src.label}" or "${dst.label}"`);
  }
  if (count === 0) return;
  const n = Math.ceil(count / 64);
  const { workgroups, rowStride } = grid1d(n, WG);
  step.dispatch(quantizeQ8Spec, {
    variant: { WG, BITS: dst.dtype === "q4" ? 4 : 8 },
    bindings: { src, dst },
    params: { n, rowStride, count, srcElement, dstElement, scaleWord: dst.q8ScaleWord },
    workgroups,
  });
}

/** f16 rounding (nearest, ties to even) of a number, as f32. */
function toF16(x: number): number {
  const f = Math.fround(x);
  if (f === 0 || !Number.isFinite(f)) return f;
  const e = Math.max(-14, Math.floor(Math.log2(Math.abs(f))));
  const quantum = 2 ** (e - 10);
  const q = f / quantum;
  const fl = Math.floor(q);
  const d = q - fl;
  const r = d > 0.5 || (d === 0.5 && fl % 2 !== 0) ? fl + 1 : fl;
  return r * quantum;
}

/** Round to nearest, ties to even. */
function roundEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
}

/**
 * CPU reference: the int8 (or, with `bits` 4, the Q4_0 int4) values and f16 scales of `values`
 * (groups of 32 from the start), with the kernel's f32 arithmetic.
 *
 * @example One group
 * ```ts
 * import { quantizeQ8Reference } from "./quantize.ts";
 * const { q, scales } = quantizeQ8Reference(new Float32Array(32).fill(0.5).map((v, i) => i === 0 ? -1.27 : v));
 * [q[0], q[1], scales.length]; // [-127, 50, 1]
 * ```
 */
export function quantizeQ8Reference(
  values: Float32Array,
  bits: 8 | 4 = 8,
): { q: Int8Array; scales: Float32Array } {
  const groups = Math.ceil(values.length / Q8_GROUP);
  const q = new Int8Array(values.length);
  const scales = new Float32Array(groups);
  const [lo, hi] = bits === 8 ? [-127, 127] : [-8, 7];
  for (let g = 0; g < groups; g++) {
    const end = Math.min(values.length, (g + 1) * Q8_GROUP);
    let m = 0, mx = 0;
    for (let j = g * Q8_GROUP; j < end; j++) {
      if (Math.abs(values[j]) > m) [m, mx] = [Math.abs(values[j]), values[j]];
    }
    const s = toF16(Math.fround(bits === 8 ? m / 127 : mx / -8));
    scales[g] = s;
    for (let j = g * Q8_GROUP; j < end; j++) {
      q[j] = s !== 0 ? Math.max(lo, Math.min(hi, roundEven(Math.fround(values[j] / s)))) : 0;
    }
  }
  return { q, scales };
}

/** CPU reference: the values a q8 or q4 matrix stands for, `q · s` per element. */
export function dequantizeQ8Reference(q: Int8Array, scales: Float32Array): Float32Array {
  return Float32Array.from(q, (v, i) => v * scales[Math.floor(i / Q8_GROUP)]);
}
