/**
 * Float conversion on the GPU, for loading weights as raw bytes: a checkpoint's F32, F16 or BF16
 * values, uploaded as they are stored, become the f32 or f16 tensor the model asked for without any
 * per-element work on the host.
 *
 * Both sides are viewed as u32 words (a 16-bit tensor packs two values per word, little-endian, as
 * safetensors stores them), so `src` can be a staging buffer holding any chunk of a stored tensor:
 * - bf16 → f32: `bits << 16` (bf16 is the top half of an f32);
 * - f16 → f32: `unpack2x16float`;
 * - f32 → f16, bf16 → f16: `pack2x16float` of two values (WGSL's f32 → f16 conversion, which rounds
 *   to nearest, ties to even, on the adapters here; {@linkcode convertReference} does the same);
 * - f32 → bf16, f16 → bf16: the top half of the f32 bits, rounded to nearest, ties to even.
 *
 * @module
 */

import type { KernelSpec, Step, Tensor } from "../core/mod.ts";
import { ELEMENTWISE_PARAMS, elementwiseWgsl, grid1d } from "./add.ts";

/** A stored float format. */
export type StoredFloat = "f32" | "f16" | "bf16";

/** The conversion kernel's variant: source and destination formats. */
export type ConvertVariant = { FROM: StoredFloat; TO: StoredFloat; WG: number; PER: number; VEC: boolean };

/** Invocations per workgroup: 256 measured best on llvmpipe (bf16 → f32: 119 ms per 32 M values; 64: 141). */
const WG = 256;

/**
 * Output words (or vectors of them) per invocation: on llvmpipe each invocation carries a fixed
 * cost, which eight amortise.
 */
const PER = 8;

/** Values per u32 word of a format. */
function perWord(format: StoredFloat): number {
  return format === "f32" ? 1 : 2;
}

/** WGSL: the f32 value of element `e` of the source words (offset by P.srcWord words). */
function readElement(from: StoredFloat): string {
  switch (from) {
    case "f32":
      return `fn element(e: u32) -> f32 { return bitcast<f32>(src[P.srcWord + e]); }`;
    case "f16":
      return `fn element(e: u32) -> f32 { return unpack2x16float(src[P.srcWord + e / 2u])[e % 2u]; }`;
    case "bf16":
      return `fn element(e: u32) -> f32 {
  let w = src[P.srcWord + e / 2u];
  return bitcast<f32>(select(w << 16u, w & 0xffff0000u, e % 2u == 1u));
}`;
  }
}

/**
 * WGSL for the vector form: `unit(u)` returns output vec4 `u` (4 output words: 4 f32 values, or 8
 * 16-bit ones) from the source's vec2/vec4 words, so every load and store is a whole vector.
 */
function unitWgsl(from: StoredFloat, to: StoredFloat): string {
  const values = to === "f32" ? 4 : 8;
  // The unit's values as f32, from its source words.
  const load = from === "f32" && values === 4
    ? `let a = bitcast<vec4<f32>>(src[P.srcWord + u]);
  let v = array<f32, 4>(a.x, a.y, a.z, a.w);`
    : from === "f32"
    ? `let a = bitcast<vec4<f32>>(src[P.srcWord + 2u * u]);
  let b = bitcast<vec4<f32>>(src[P.srcWord + 2u * u + 1u]);
  let v = array<f32, 8>(a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w);`
    : from === "f16"
    ? (values === 4
      ? `let w = src[P.srcWord + u];
  let a = unpack2x16float(w.x);
  let b = unpack2x16float(w.y);
  let v = array<f32, 4>(a.x, a.y, b.x, b.y);`
      : `let w = src[P.srcWord + u];
  let a = unpack2x16float(w.x);
  let b = unpack2x16float(w.y);
  let c = unpack2x16float(w.z);
  let d = unpack2x16float(w.w);
  let v = array<f32, 8>(a.x, a.y, b.x, b.y, c.x, c.y, d.x, d.y);`)
    : (values === 4
      ? `let w = src[P.srcWord + u];
  let v = array<f32, 4>(bitcast<f32>(w.x << 16u), bitcast<f32>(w.x & 0xffff0000u),
    bitcast<f32>(w.y << 16u), bitcast<f32>(w.y & 0xffff0000u));`
      : `let w = src[P.srcWord + u];
  let v = array<f32, 8>(bitcast<f32>(w.x << 16u), bitcast<f32>(w.x & 0xffff0000u),
    bitcast<f32>(w.y << 16u), bitcast<f32>(w.y & 0xffff0000u),
    bitcast<f32>(w.z << 16u), bitcast<f32>(w.z & 0xffff0000u),
    bitcast<f32>(w.w << 16u), bitcast<f32>(w.w & 0xffff0000u));`);
  const pack = to === "f32"
    ? "return bitcast<vec4<u32>>(vec4<f32>(v[0], v[1], v[2], v[3]));"
    : to === "f16"
    ? `return vec4<u32>(pack2x16float(vec2<f32>(v[0], v[1])), pack2x16float(vec2<f32>(v[2], v[3])),
    pack2x16float(vec2<f32>(v[4], v[5])), pack2x16float(vec2<f32>(v[6], v[7])));`
    : `return vec4<u32>(bf16Bits(v[0]) | (bf16Bits(v[1]) << 16u), bf16Bits(v[2]) | (bf16Bits(v[3]) << 16u),
    bf16Bits(v[4]) | (bf16Bits(v[5]) << 16u), bf16Bits(v[6]) | (bf16Bits(v[7]) << 16u));`;
  return `fn unit(u: u32) -> vec4<u32> {
  ${load}
  ${pack}
}`;
}

/** Source words read per output vec4 of the vector form (2, 4 or 8). */
function sourceWordsPerUnit(from: StoredFloat, to: StoredFloat): number {
  return (to === "f32" ? 4 : 8) / perWord(from);
}

/**
 * `dst[P.dstWord + w] = convert(src[P.srcWord ..])` for output word w < P.words (one f32 value, or
 * two 16-bit values). Each invocation converts `PER` words spaced `WG` apart, so that at every step
 * neighbouring invocations touch neighbouring words (on llvmpipe, whose SIMD lanes are invocations,
 * that makes the loads and stores contiguous). The vector form (`VEC`) works in vec4s of output
 * words, P.srcWord/P.dstWord/P.words counted in its vectors; it is what converts whole weights
 * (~4x the scalar form's values/s on llvmpipe), the scalar form does unaligned ranges and tails.
 */
export const convertSpec: KernelSpec<ConvertVariant> = {
  name: "convert",
  bindings: (v) => [
    {
      name: "src",
      access: "read",
      type: !v.VEC ? "u32" : sourceWordsPerUnit(v.FROM, v.TO) === 2 ? "vec2<u32>" : "vec4<u32>",
    },
    { name: "dst", access: "read_write", type: v.VEC ? "vec4<u32>" : "u32" },
  ],
  params: [
    ...ELEMENTWISE_PARAMS, // n = invocations
    { name: "words", type: "u32" },
    { name: "srcWord", type: "u32" },
    { name: "dstWord", type: "u32" },
  ],
  wgsl: (v) => `
${v.VEC ? unitWgsl(v.FROM, v.TO) : readElement(v.FROM)}
fn bf16Bits(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
}
${
    elementwiseWgsl(`
let first = (i - i % WG) * PER + i % WG;
for (var k = 0u; k < PER; k++) {
  let w = first + k * WG;
  if (w >= P.words) { return; }
  ${
      v.VEC
        ? "dst[P.dstWord + w] = unit(w);"
        : v.TO === "f32"
        ? "dst[P.dstWord + w] = bitcast<u32>(element(w));"
        : v.TO === "f16"
        ? "dst[P.dstWord + w] = pack2x16float(vec2<f32>(element(2u * w), element(2u * w + 1u)));"
        : "dst[P.dstWord + w] = bf16Bits(element(2u * w)) | (bf16Bits(element(2u * w + 1u)) << 16u);"
    }
}`)
  }`,
};

/**
 * Records the conversion of `count` values from `src` (raw words of format `from`, starting at
 * word `srcWord`) into `dst` (an f32 or f16 tensor) from element `dstElement` on. For an f16
 * destination `dstElement` must be even; an odd `count` writes the pad half of the last word.
 *
 * @example Converting a staged chunk of bf16 weights into an f16 tensor
 * ```ts ignore
 * convertFloats(step, staging, weight, { from: "bf16", count: chunkValues, dstElement: done });
 * ```
 */
export function convertFloats(
  step: Step,
  src: Tensor,
  dst: Tensor,
  options: { from: StoredFloat; count: number; srcWord?: number; dstElement?: number },
): void {
  const to = dst.dtype;
  if (to !== "f32" && to !== "f16" && to !== "bf16") {
    throw new TypeError(`convertFloats: destination "${dst.label}" must be f32, f16 or bf16, not ${to}`);
  }
  const dstElement = options.dstElement ?? 0;
  const { count } = options;
  if (to !== "f32" && dstElement % 2 !== 0) {
    throw new RangeError(`convertFloats: a ${to} destination starts at an even element, not ${dstElement}`);
  }
  if (dstElement + count > dst.size) {
    throw new RangeError(
      `convertFloats: ${count} values at ${dstElement} overrun "${dst.label}" of ${dst.size} elements`,
    );
  }
  const srcWord = options.srcWord ?? 0;
  if (srcWord * 4 + Math.ceil(count / perWord(options.from)) * 4 > src.buffer.size) {
    throw new RangeError(`convertFloats: ${count} ${options.from} values overrun the source "${src.label}"`);
  }
  if (count === 0) return;
  const words = to === "f32" ? count : Math.ceil(count / 2);
  const dstWord = to === "f32" ? dstElement : dstElement / 2;
  // The vector form takes whole output vec4s when both ends are vector-aligned; the scalar form the
  // rest (the tail, or everything when misaligned).
  const perUnit = sourceWordsPerUnit(options.from, to);
  const srcAlign = Math.min(perUnit, 4);
  const units = dstWord % 4 === 0 && srcWord % srcAlign === 0 ? Math.floor(words / 4) : 0;
  const run = (vec: boolean, words: number, srcWord: number, dstWord: number) => {
    if (words === 0) return;
    // Whole workgroups: an invocation's words are spaced WG apart (see convertSpec).
    const n = Math.ceil(words / (PER * WG)) * WG;
    const { workgroups, rowStride } = grid1d(n, WG);
    step.dispatch(convertSpec, {
      variant: { FROM: options.from, TO: to, WG, PER, VEC: vec },
      bindings: { src, dst },
      params: { n, rowStride, words, srcWord, dstWord },
      workgroups,
    });
  };
  run(true, units, srcWord / srcAlign, dstWord / 4);
  run(false, words - units * 4, srcWord + units * perUnit, dstWord + units * 4);
}

/**
 * CPU reference: converts stored words to the destination format's bit patterns (f32 as float
 * bits, f16 as 16-bit patterns rounded to nearest, ties to even).
 *
 * @example bf16 1.0 and 2.0 to f32
 * ```ts
 * import { convertReference } from "./convert.ts";
 * convertReference(new Uint16Array([0x3f80, 0x4000]), "bf16", "f32"); // Float32Array [1, 2]
 * ```
 */
export function convertReference(
  src: Float32Array | Uint16Array,
  from: StoredFloat,
  to: StoredFloat,
): Float32Array | Uint16Array {
  const values = new Float32Array(src.length);
  const bits = new Uint32Array(1);
  const f = new Float32Array(bits.buffer);
  for (let i = 0; i < src.length; i++) {
    if (from === "f32") values[i] = src[i];
    else if (from === "bf16") {
      bits[0] = src[i] << 16;
      values[i] = f[0];
    } else values[i] = halfToFloat(src[i]);
  }
  if (to === "f32") return values;
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    if (to === "f16") out[i] = floatToHalf(values[i]);
    else {
      f[0] = values[i];
      out[i] = ((bits[0] + 0x7fff + ((bits[0] >>> 16) & 1)) >>> 16) & 0xffff;
    }
  }
  return out;
}

/** IEEE half bits → number. */
function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const man = h & 0x3ff;
  if (exp === 0) return sign * man * 2 ** -24;
  if (exp === 31) return man ? NaN : sign * Infinity;
  return sign * (1 + man / 1024) * 2 ** (exp - 15);
}

/** number → IEEE half bits, round to nearest, ties to even; overflow to ±inf. */
function floatToHalf(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65520) return sign | 0x7c00;
  if (a < 2 ** -14) {
    // Subnormal: units of 2^-24, ties to even.
    return sign | roundEven(a * 2 ** 24);
  }
  let e = Math.floor(Math.log2(a));
  if (a / 2 ** e >= 2) e++;
  else if (a / 2 ** e < 1) e--;
  const exp = Math.max(-14, Math.min(15, e));
  let man = roundEven((a / 2 ** exp - 1) * 1024);
  let biased = exp + 15;
  if (man === 1024) {
    man = 0;
    biased++;
  }
  if (biased >= 31) return sign | 0x7c00;
  return sign | (biased << 10) | man;
}

function roundEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  return d > 0.5 || (d === 0.5 && f % 2 === 1) ? f + 1 : f;
}
