/**
 * Safetensors reading and writing, streaming by tensor.
 *
 * Layout of a `.safetensors` file (https://github.com/huggingface/safetensors):
 *
 * ```text
 * [0, 8)          N, the header length, u64 little-endian
 * [8, 8 + N)      header: UTF-8 JSON object
 *                   { "__metadata__": { string: string },            (optional)
 *                     "<tensor>": { "dtype": "F16", "shape": [..], "data_offsets": [begin, end] }, ... }
 * [8 + N, size)   data section; data_offsets are relative to its start, little-endian, row-major
 * ```
 *
 * {@link openSafetensors} reads the 8-byte prefix and the header only; each tensor's bytes are read on
 * demand, so a 7B checkpoint is never read whole. Every header field is validated and every problem is
 * a {@link FormatError} naming the file, the tensor and the fix.
 *
 * @module
 */

import type { ByteSource, OpenByName } from "./byte_source.ts";
import { FormatError } from "./format_error.ts";

// ===================================================================================================
// Dtypes
// ===================================================================================================

/** Element size in bytes of every dtype the safetensors spec defines that we can parse headers of. */
const DTYPE_SIZES: Readonly<Record<string, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
};

/**
 * A dtype string found in a safetensors header. Only `F32`, `F16` and `BF16` can be read as floats
 * with {@link SafetensorsFile.readTensor}; the others are accepted in headers so files that carry an
 * extra integer tensor still open.
 *
 * @example Checking a dtype
 * ```ts
 * import type { SafetensorsDtype } from "./safetensors.ts";
 * const d: SafetensorsDtype = "BF16";
 * ```
 */
export type SafetensorsDtype =
  | "F64"
  | "F32"
  | "F16"
  | "BF16"
  | "I64"
  | "I32"
  | "I16"
  | "I8"
  | "U64"
  | "U32"
  | "U16"
  | "U8"
  | "BOOL";

/**
 * The dtypes the writer produces and `readTensor` converts to f32.
 *
 * @example Picking a storage dtype
 * ```ts
 * import type { FloatDtype } from "./safetensors.ts";
 * const storage: FloatDtype = "F16";
 * ```
 */
export type FloatDtype = "F32" | "F16" | "BF16";

// ===================================================================================================
// Bit-level float conversions (pure)
// ===================================================================================================

/** f16 bits → f32 value for all 65536 inputs, built on first use (256 KiB) so bulk decoding is a lookup. */
let _f16Table: Float32Array | null = null;

/** Decodes one IEEE 754 binary16 value from its bits. */
function _f16BitsToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f; // 5-bit biased exponent (bias 15)
  const mant = h & 0x3ff; // 10-bit fraction
  if (exp === 0) return sign * mant * 2 ** -24; // zero or subnormal: mant · 2^-24, exact in f32
  if (exp === 31) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

function _f16TableGet(): Float32Array {
  if (_f16Table === null) {
    const table = new Float32Array(65536);
    const bits = new Uint32Array(table.buffer);
    for (let h = 0; h < 65536; h++) {
      if (((h >> 10) & 0x1f) === 31 && (h & 0x3ff) !== 0) {
        // NaN: keep sign and payload (shifted into the top of the f32 fraction) rather than the
        // canonical NaN a JS number would give, so quiet NaNs survive f16 → f32 → f16 bit for bit.
        bits[h] = ((h & 0x8000) << 16) | 0x7f800000 | ((h & 0x3ff) << 13);
      } else {
        table[h] = _f16BitsToNumber(h);
      }
    }
    _f16Table = table;
  }
  return _f16Table;
}

/**
 * Converts IEEE 754 half-precision bit patterns to f32 (exact: every f16 is representable in f32,
 * including subnormals, ±0, ±inf and NaN payloads).
 *
 * @param src f16 bit patterns
 * @param out optional destination of the same length
 * @returns the f32 values
 *
 * @example Decoding 1.0 and -2.0
 * ```ts
 * import { f16ToF32 } from "./safetensors.ts";
 * f16ToF32(new Uint16Array([0x3c00, 0xc000])); // Float32Array [1, -2]
 * ```
 */
export function f16ToF32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  _checkOut("f16ToF32", src, out);
  const table = _f16TableGet();
  // Copy through the u32 view so NaN payloads survive (a float store may canonicalise them).
  const tableBits = new Uint32Array(table.buffer);
  const outBits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) outBits[i] = tableBits[src[i]];
  return out;
}

/** The conversions' `out` must match `src` in length. */
function _checkOut(fn: string, src: ArrayLike<number>, out: ArrayLike<number>): void {
  if (out.length !== src.length) {
    throw new RangeError(
      `${fn}: out has length ${out.length} but src has ${src.length}; pass a matching out`,
    );
  }
}

/**
 * Converts f32 values to IEEE 754 half-precision bit patterns, rounding to nearest, ties to even.
 * Values beyond the f16 range become ±inf, values below half the smallest subnormal become ±0, and NaN
 * stays NaN (quiet, keeping the top payload bits).
 *
 * @param src f32 values
 * @param out optional destination of the same length
 * @returns the f16 bit patterns
 *
 * @example Encoding 1.0 and 65520 (rounds up to inf)
 * ```ts
 * import { f32ToF16 } from "./safetensors.ts";
 * f32ToF16(new Float32Array([1, 65520])); // Uint16Array [0x3c00, 0x7c00]
 * ```
 */
export function f32ToF16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  _checkOut("f32ToF16", src, out);
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const x = bits[i];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff; // f32 biased exponent (bias 127)
    const mant = x & 0x7fffff; // 23-bit fraction
    if (exp === 0xff) {
      // inf stays inf; NaN keeps its top 10 payload bits and is forced quiet so it cannot become inf.
      out[i] = sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
      continue;
    }
    const e = exp - 127 + 15; // rebias to f16
    if (e >= 31) {
      out[i] = sign | 0x7c00; // overflow → inf (what round-to-nearest gives beyond 65504 + half an ulp)
    } else if (e <= 0) {
      // f16 subnormal or zero: value = m · 2^(exp-150) with the implicit bit; in units of 2^-24 that is
      // m >> (14 - e). Below e = -10 the value is < 2^-25 (half the smallest subnormal) → ±0.
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      const m = mant | 0x800000;
      const shift = 14 - e; // 14..24
      let h = m >>> shift;
      const rem = m & ((1 << shift) - 1);
      const half = 1 << (shift - 1);
      if (rem > half || (rem === half && (h & 1) !== 0)) h++; // may carry into the smallest normal: correct
      out[i] = sign | h;
    } else {
      let h = (e << 10) | (mant >>> 13);
      const rem = mant & 0x1fff; // the 13 dropped fraction bits
      if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++; // a carry may reach inf: correct
      out[i] = sign | h;
    }
  }
  return out;
}

/**
 * Converts bfloat16 bit patterns to f32: bf16 is the upper 16 bits of an f32, so this is exact.
 *
 * @param src bf16 bit patterns
 * @param out optional destination of the same length
 * @returns the f32 values
 *
 * @example Decoding 1.0
 * ```ts
 * import { bf16ToF32 } from "./safetensors.ts";
 * bf16ToF32(new Uint16Array([0x3f80])); // Float32Array [1]
 * ```
 */
export function bf16ToF32(src: Uint16Array, out: Float32Array = new Float32Array(src.length)): Float32Array {
  _checkOut("bf16ToF32", src, out);
  const outBits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) outBits[i] = src[i] << 16;
  return out;
}

/**
 * Converts f32 values to bfloat16 bit patterns, rounding to nearest, ties to even (as PyTorch does).
 * NaN stays a quiet NaN; values that round past the largest bf16 become ±inf.
 *
 * @param src f32 values
 * @param out optional destination of the same length
 * @returns the bf16 bit patterns
 *
 * @example Encoding 1.0
 * ```ts
 * import { f32ToBf16 } from "./safetensors.ts";
 * f32ToBf16(new Float32Array([1])); // Uint16Array [0x3f80]
 * ```
 */
export function f32ToBf16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  _checkOut("f32ToBf16", src, out);
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const x = bits[i];
    if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) {
      // NaN: truncating could clear every payload bit and turn it into inf, so set the quiet bit.
      out[i] = (x >>> 16) | 0x40;
      continue;
    }
    // Round to nearest even: add 0x7fff plus the lowest kept bit, then truncate. x ≤ 0xff800000 here,
    // so the sum stays below 2^32 and >>> is exact.
    out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}

// ===================================================================================================
// Reader
// ===================================================================================================

/** The header cap: the reference implementation refuses headers over 100 MB too. */
const MAX_HEADER_BYTES = 100_000_000;

/**
 * One tensor's header entry. `begin`/`end` are relative to the start of the data section (exactly the
 * file's `data_offsets`); add {@link SafetensorsFile.dataStart} for absolute file offsets.
 *
 * @example Computing the absolute range
 * ```ts ignore
 * const info = file.tensors.get("model.norm.weight")!;
 * const absoluteBegin = file.dataStart + info.begin;
 * ```
 */
export interface TensorInfo {
  /** Element type as written in the header. */
  dtype: SafetensorsDtype;
  /** Dimensions, outermost first (row-major). `[]` is a scalar. */
  shape: number[];
  /** First byte, relative to the data section. */
  begin: number;
  /** One past the last byte, relative to the data section. */
  end: number;
}

/**
 * A tensor decoded to f32.
 *
 * @example Using a decoded tensor
 * ```ts ignore
 * const { shape, data } = await file.readTensor("model.norm.weight"); // shape (C), data Float32Array(C)
 * ```
 */
export interface FloatTensor {
  /** The dtype stored in the file (the data is always f32). */
  dtype: FloatDtype;
  /** Dimensions, outermost first. */
  shape: number[];
  /** Row-major values; length is the product of `shape`. */
  data: Float32Array;
}

/**
 * An opened safetensors file: the parsed header plus on-demand tensor reads.
 *
 * @example Reading one tensor
 * ```ts ignore
 * import { fileSource } from "./byte_source.ts";
 * import { openSafetensors } from "./safetensors.ts";
 * const file = await openSafetensors(await fileSource("model.safetensors"));
 * const norm = await file.readTensor("model.norm.weight");
 * ```
 */
export interface SafetensorsFile {
  /** The source name (for error messages). */
  readonly name: string;
  /** Tensor entries by name, in header order; offsets relative to the data section. */
  readonly tensors: Map<string, TensorInfo>;
  /** The `__metadata__` object (empty when absent). */
  readonly metadata: Record<string, string>;
  /** Absolute file offset of the data section (8 + header length). */
  readonly dataStart: number;
  /** Reads one tensor and converts F32, F16 or BF16 to f32. */
  readTensor(name: string): Promise<FloatTensor>;
  /** Reads one tensor's bytes as stored (little-endian). */
  readRaw(name: string): Promise<Uint8Array>;
  /** Reads `length` of one tensor's stored bytes from byte `offset` of the tensor (for streaming). */
  readRange(name: string, offset: number, length: number): Promise<Uint8Array>;
  /** Fills `into` with one tensor's stored bytes from byte `offset` of the tensor, copying at most once. */
  readRangeInto(name: string, offset: number, into: Uint8Array): Promise<void>;
}

/** JSON-ish description of a value for error messages, kept short. */
function _show(value: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(value) ?? String(value);
  } catch {
    // Only a pathologically deep value gets here (stack overflow); String() would recurse too.
    s = Array.isArray(value) ? "a deeply nested array" : typeof value;
  }
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function _isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Validates one tensor entry of the header; `dataSize` bounds the offsets. */
function _parseEntry(file: string, name: string, entry: unknown, dataSize: number): TensorInfo {
  const where = `tensor "${name}"`;
  const fix = "is the file truncated or corrupted? Re-download or re-export it";
  if (!_isPlainObject(entry)) {
    throw new FormatError(file, `${where}: header entry must be an object, got ${_show(entry)}`, fix);
  }
  const dtype = entry.dtype;
  if (typeof dtype !== "string") {
    throw new FormatError(file, `${where}: "dtype" must be a string, got ${_show(dtype)}`, fix);
  }
  if (!Object.hasOwn(DTYPE_SIZES, dtype)) {
    throw new FormatError(
      file,
      `${where} has unknown dtype ${_show(dtype)}`,
      `supported dtypes are ${Object.keys(DTYPE_SIZES).join(", ")}; convert the tensor to F32, F16 or BF16`,
    );
  }
  const shape = entry.shape;
  if (!Array.isArray(shape)) {
    throw new FormatError(file, `${where}: "shape" must be an array, got ${_show(shape)}`, fix);
  }
  let count = 1;
  for (const d of shape) {
    if (typeof d !== "number" || !Number.isSafeInteger(d) || d < 0) {
      throw new FormatError(
        file,
        `${where}: shape ${_show(shape)} has a dimension that is not a non-negative integer`,
        fix,
      );
    }
    count *= d;
    if (!Number.isSafeInteger(count)) {
      throw new FormatError(file, `${where}: shape ${_show(shape)} has too many elements`, fix);
    }
  }
  const offsets = entry.data_offsets;
  if (
    !Array.isArray(offsets) || offsets.length !== 2 ||
    !offsets.every((o) => typeof o === "number" && Number.isSafeInteger(o) && o >= 0)
  ) {
    throw new FormatError(
      file,
      `${where}: "data_offsets" must be [begin, end] with non-negative integers, got ${_show(offsets)}`,
      fix,
    );
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) {
    throw new FormatError(file, `${where}: data_offsets [${begin}, ${end}] has begin after end`, fix);
  }
  if (end > dataSize) {
    throw new FormatError(
      file,
      `${where}: data_offsets [${begin}, ${end}] end beyond the ${dataSize}-byte data section`,
      "is the file truncated or corrupted? Re-download it",
    );
  }
  const size = DTYPE_SIZES[dtype];
  if (end - begin !== count * size) {
    throw new FormatError(
      file,
      `${where}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape ${
        _show(shape)
      } of ${dtype} ` +
        `needs ${count * size}`,
      fix,
    );
  }
  // `+ 0` turns a JSON "-0" into 0, so shapes and offsets compare equal to what callers compute.
  return {
    dtype: dtype as SafetensorsDtype,
    shape: (shape as number[]).map((d) => d + 0),
    begin: begin + 0,
    end: end + 0,
  };
}

/**
 * Opens a safetensors file: reads and validates the header only. Tensor bytes are read later, one
 * tensor at a time.
 *
 * @param source where the bytes come from (`fileSource`, `bufferSource`, `blobSource`)
 * @returns the parsed file
 * @throws FormatError for any malformed prefix, header or entry, naming the file and tensor
 *
 * @example Opening an in-memory file
 * ```ts
 * import { bufferSource } from "./byte_source.ts";
 * import { encodeSafetensors, openSafetensors } from "./safetensors.ts";
 * const bytes = encodeSafetensors([{ name: "w", dtype: "F16", shape: [2], data: new Float32Array([1, 2]) }]);
 * const file = await openSafetensors(bufferSource("w.safetensors", bytes));
 * const w = await file.readTensor("w"); // { dtype: "F16", shape: [2], data: Float32Array [1, 2] }
 * ```
 */
export async function openSafetensors(source: ByteSource): Promise<SafetensorsFile> {
  const file = source.name;

  // 1. The 8-byte little-endian header length.
  if (source.size < 8) {
    throw new FormatError(
      file,
      `file is ${source.size} bytes, shorter than the 8-byte header length`,
      "is the file truncated or corrupted? Re-download it",
    );
  }
  const prefix = await source.read(0, 8);
  const headerLen = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (headerLen > BigInt(MAX_HEADER_BYTES)) {
    throw new FormatError(
      file,
      `header length ${headerLen} is over the ${MAX_HEADER_BYTES}-byte limit`,
      "is this a safetensors file? It may be corrupted or in another format",
    );
  }
  const n = Number(headerLen);
  if (8 + n > source.size) {
    throw new FormatError(
      file,
      `header length ${n} exceeds file size ${source.size}`,
      "is the file truncated or corrupted? Re-download it",
    );
  }

  // 2. The header: UTF-8 JSON object. `fatal` makes invalid UTF-8 an error instead of U+FFFD.
  const headerBytes = await source.read(8, n);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    throw new FormatError(file, "header is not valid UTF-8", "is the file corrupted? Re-download it");
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (err) {
    throw new FormatError(
      file,
      `header is not valid JSON (${err instanceof Error ? err.message : String(err)})`,
      "is the file truncated or corrupted? Re-download it",
    );
  }
  if (!_isPlainObject(header)) {
    throw new FormatError(
      file,
      `header must be a JSON object, got ${_show(header)}`,
      "is this a safetensors file?",
    );
  }

  // 3. Each entry.
  const dataStart = 8 + n;
  const dataSize = source.size - dataStart;
  let metadata: Record<string, string> = {};
  const tensors = new Map<string, TensorInfo>();
  for (const [key, value] of Object.entries(header)) {
    if (key === "__metadata__") {
      if (!_isPlainObject(value)) {
        throw new FormatError(
          file,
          `"__metadata__" must be an object, got ${_show(value)}`,
          "fix or remove it",
        );
      }
      for (const [mk, mv] of Object.entries(value)) {
        if (typeof mv !== "string") {
          throw new FormatError(
            file,
            `"__metadata__" value for ${_show(mk)} must be a string, got ${_show(mv)}`,
            "the safetensors spec allows only string metadata; store it as a string",
          );
        }
      }
      // fromEntries defines own properties, so a "__proto__" key stays data and never a prototype.
      metadata = Object.fromEntries(Object.entries(value)) as Record<string, string>;
      continue;
    }
    tensors.set(key, _parseEntry(file, key, value, dataSize));
  }

  // 4. No two tensors may share bytes. Sorting by begin (then end) makes overlap a neighbour check.
  const byBegin = [...tensors.entries()].sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  for (let i = 1; i < byBegin.length; i++) {
    const [prevName, prev] = byBegin[i - 1];
    const [name, cur] = byBegin[i];
    if (cur.begin < prev.end) {
      throw new FormatError(
        file,
        `tensor "${name}" data_offsets [${cur.begin}, ${cur.end}] overlap tensor "${prevName}" [${prev.begin}, ${prev.end}]`,
        "is the file corrupted? Re-download or re-export it",
      );
    }
  }

  const lookup = (name: string): TensorInfo => {
    const info = tensors.get(name);
    if (info === undefined) {
      throw new FormatError(
        file,
        `tensor "${name}" is not in the file`,
        "check the tensor name and that the checkpoint matches the model config",
      );
    }
    return info;
  };
  const readRaw = async (name: string): Promise<Uint8Array> => {
    const info = lookup(name);
    return await source.read(dataStart + info.begin, info.end - info.begin);
  };
  const readRange = async (name: string, offset: number, length: number): Promise<Uint8Array> => {
    const info = lookup(name);
    if (offset < 0 || length < 0 || offset + length > info.end - info.begin) {
      throw new RangeError(
        `Bytes ${offset}..${offset + length} are outside tensor "${name}" (${info.end - info.begin} bytes)`,
      );
    }
    return await source.read(dataStart + info.begin + offset, length);
  };
  const readRangeInto = async (name: string, offset: number, into: Uint8Array): Promise<void> => {
    const info = lookup(name);
    if (offset < 0 || offset + into.length > info.end - info.begin) {
      throw new RangeError(
        `Bytes ${offset}..${offset + into.length} are outside tensor "${name}" (${
          info.end - info.begin
        } bytes)`,
      );
    }
    if (source.readInto) await source.readInto(dataStart + info.begin + offset, into);
    else into.set(await source.read(dataStart + info.begin + offset, into.length));
  };
  return {
    name: file,
    tensors,
    metadata,
    dataStart,
    readRaw,
    readRange,
    readRangeInto,
    async readTensor(name: string): Promise<FloatTensor> {
      const info = lookup(name);
      if (info.dtype !== "F32" && info.dtype !== "F16" && info.dtype !== "BF16") {
        throw new FormatError(
          file,
          `tensor "${name}" has dtype ${info.dtype}, which cannot be read as floats`,
          "only F32, F16 and BF16 tensors are supported; convert it when exporting",
        );
      }
      const raw = await readRaw(name);
      return { dtype: info.dtype, shape: info.shape.slice(), data: _decodeFloats(info.dtype, raw) };
    },
  };
}

/** Whether this machine stores numbers little-endian (every WebGPU platform does; checked anyway). */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Decodes little-endian F32/F16/BF16 bytes to f32 values. */
function _decodeFloats(dtype: FloatDtype, raw: Uint8Array): Float32Array {
  const elem = dtype === "F32" ? 4 : 2;
  const count = raw.byteLength / elem;
  if (!LITTLE_ENDIAN) {
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const out = new Float32Array(count);
    const bits = new Uint16Array(dtype === "F32" ? 0 : count);
    for (let i = 0; i < count; i++) {
      if (dtype === "F32") out[i] = view.getFloat32(4 * i, true);
      else bits[i] = view.getUint16(2 * i, true);
    }
    return dtype === "F32" ? out : dtype === "F16" ? f16ToF32(bits, out) : bf16ToF32(bits, out);
  }
  // Typed-array views need an aligned offset; a ByteSource may hand back any view, so copy if needed.
  const aligned = raw.byteOffset % elem === 0 ? raw : raw.slice();
  if (dtype === "F32") {
    const view = new Float32Array(aligned.buffer, aligned.byteOffset, count);
    // Return a copy when the view does not cover its buffer exactly, so callers never hold extra bytes.
    return aligned.byteOffset === 0 && aligned.buffer.byteLength === aligned.byteLength ? view : view.slice();
  }
  const bits = new Uint16Array(aligned.buffer, aligned.byteOffset, count);
  return dtype === "F16" ? f16ToF32(bits) : bf16ToF32(bits);
}

// ===================================================================================================
// Sharded checkpoints
// ===================================================================================================

/**
 * One tensor in a (possibly sharded) checkpoint: its header entry plus the shard file holding it.
 *
 * @example Finding a tensor's shard
 * ```ts ignore
 * const entry = ckpt.get("lm_head.weight"); // { dtype, shape, begin, end, shard: "model-00002-of-00002.safetensors" }
 * ```
 */
export interface CheckpointEntry extends TensorInfo {
  /** The file that holds the tensor, e.g. `model-00001-of-00003.safetensors`. */
  shard: string;
}

/**
 * All tensors of a checkpoint behind one lookup, whether it is one file or many shards.
 *
 * @example Listing tensors
 * ```ts ignore
 * const ckpt = await openCheckpointTensors(directoryOpener("weights/llama"));
 * for (const name of ckpt.names()) console.log(name, ckpt.get(name)!.shape);
 * ```
 */
export interface CheckpointTensors {
  /** Tensor names in file order (index order for sharded checkpoints). */
  names(): string[];
  /** Whether the checkpoint has the tensor. */
  has(name: string): boolean;
  /** The tensor's entry, or undefined. */
  get(name: string): CheckpointEntry | undefined;
  /** Reads one tensor as f32 from whichever shard holds it. */
  readTensor(name: string): Promise<FloatTensor>;
  /** Reads one tensor's stored bytes. */
  readRaw(name: string): Promise<Uint8Array>;
  /** Reads a byte range of one tensor's stored bytes (see {@linkcode SafetensorsFile.readRange}). */
  readRange(name: string, offset: number, length: number): Promise<Uint8Array>;
  /** Fills `into` from a tensor's stored bytes (see {@linkcode SafetensorsFile.readRangeInto}). */
  readRangeInto(name: string, offset: number, into: Uint8Array): Promise<void>;
  /** The opened files, keyed by file name. */
  readonly files: Map<string, SafetensorsFile>;
}

/** Largest index file we read whole; real ones are tens of kilobytes. */
const MAX_INDEX_BYTES = 100_000_000;

/**
 * Opens a checkpoint directory's tensors: `model.safetensors` if present, else the shards listed in
 * `model.safetensors.index.json` (`{"weight_map": {"<tensor>": "<shard file>"}}`). Only headers are
 * read; tensor bytes are read on demand.
 *
 * @param open opens a file by name, resolving `null` if it does not exist (see `directoryOpener`)
 * @returns one lookup across all shards
 * @throws FormatError when neither file exists, the index is malformed, a shard is missing, or a
 *   tensor listed in the index is not in its shard
 *
 * @example Opening in-memory files
 * ```ts
 * import { bufferSource } from "./byte_source.ts";
 * import { encodeSafetensors, openCheckpointTensors } from "./safetensors.ts";
 * const bytes = encodeSafetensors([{ name: "w", dtype: "F32", shape: [1], data: new Float32Array([3]) }]);
 * const ckpt = await openCheckpointTensors((name) =>
 *   Promise.resolve(name === "model.safetensors" ? bufferSource(name, bytes) : null)
 * );
 * console.log(ckpt.names()); // ["w"]
 * ```
 */
export async function openCheckpointTensors(open: OpenByName): Promise<CheckpointTensors> {
  const single = await open("model.safetensors");
  const owner = new Map<string, string>(); // tensor name → shard file name
  const files = new Map<string, SafetensorsFile>();
  let lookupFile = "model.safetensors"; // the file named when a tensor is not found

  if (single !== null) {
    const file = await openSafetensors(single);
    lookupFile = single.name;
    files.set("model.safetensors", file);
    for (const name of file.tensors.keys()) owner.set(name, "model.safetensors");
  } else {
    const indexName = "model.safetensors.index.json";
    const indexSource = await open(indexName);
    if (indexSource === null) {
      throw new FormatError(
        "model.safetensors",
        "neither model.safetensors nor model.safetensors.index.json exists",
        "download the weights into the checkpoint directory",
      );
    }
    lookupFile = indexSource.name;
    const weightMap = await _readWeightMap(indexSource);
    for (const shard of new Set(weightMap.values())) {
      const source = await open(shard);
      if (source === null) {
        throw new FormatError(
          indexSource.name,
          `shard "${shard}" listed in "weight_map" is missing`,
          "download all shards into the checkpoint directory",
        );
      }
      files.set(shard, await openSafetensors(source));
    }
    for (const [name, shard] of weightMap) {
      if (!files.get(shard)!.tensors.has(name)) {
        throw new FormatError(
          indexSource.name,
          `tensor "${name}" is mapped to shard "${shard}" but that shard does not contain it`,
          "the index and shards do not match; re-download them together",
        );
      }
      owner.set(name, shard);
    }
  }

  const locate = (name: string): SafetensorsFile => {
    const shard = owner.get(name);
    if (shard === undefined) {
      throw new FormatError(
        lookupFile,
        `tensor "${name}" is not in the checkpoint`,
        "check the tensor name and that the checkpoint matches the model config",
      );
    }
    return files.get(shard)!;
  };
  return {
    files,
    names: () => [...owner.keys()],
    has: (name) => owner.has(name),
    get(name) {
      const shard = owner.get(name);
      if (shard === undefined) return undefined;
      const info = files.get(shard)!.tensors.get(name)!;
      return { ...info, shape: info.shape.slice(), shard };
    },
    readTensor: async (name) => await locate(name).readTensor(name),
    readRaw: async (name) => await locate(name).readRaw(name),
    readRange: async (name, offset, length) => await locate(name).readRange(name, offset, length),
    readRangeInto: async (name, offset, into) => await locate(name).readRangeInto(name, offset, into),
  };
}

/** Reads and validates `weight_map` of a sharded checkpoint's index. */
async function _readWeightMap(source: ByteSource): Promise<Map<string, string>> {
  const file = source.name;
  if (source.size > MAX_INDEX_BYTES) {
    throw new FormatError(
      file,
      `index is ${source.size} bytes, over the ${MAX_INDEX_BYTES}-byte limit`,
      "is it corrupted?",
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(await source.read(0, source.size)));
  } catch (err) {
    throw new FormatError(
      file,
      `index is not valid UTF-8 JSON (${err instanceof Error ? err.message : String(err)})`,
      "re-download model.safetensors.index.json",
    );
  }
  if (!_isPlainObject(json)) {
    throw new FormatError(file, `index must be a JSON object, got ${_show(json)}`, "re-download it");
  }
  const map = json.weight_map;
  if (!_isPlainObject(map)) {
    throw new FormatError(
      file,
      `"weight_map" must be an object of tensor name → file name, got ${_show(map)}`,
      "re-download it",
    );
  }
  const out = new Map<string, string>();
  for (const [name, shard] of Object.entries(map)) {
    if (typeof shard !== "string" || shard === "") {
      throw new FormatError(
        file,
        `"weight_map" entry for tensor "${name}" must be a file name, got ${_show(shard)}`,
        "re-download it",
      );
    }
    // Shards live beside the index; refusing separators keeps a hostile index from reading other files.
    if (shard.includes("/") || shard.includes("\\") || shard === "." || shard === "..") {
      throw new FormatError(
        file,
        `"weight_map" entry for tensor "${name}" is ${_show(shard)}, which is not a plain file name`,
        "shards must sit in the same directory as the index",
      );
    }
    out.set(name, shard);
  }
  if (out.size === 0) {
    throw new FormatError(file, `"weight_map" is empty`, "re-download model.safetensors.index.json");
  }
  return out;
}

// ===================================================================================================
// Writer
// ===================================================================================================

/**
 * A tensor to write. `Float32Array` data is converted to `dtype` (round to nearest even); a
 * `Uint16Array` is taken as raw F16 or BF16 bits.
 *
 * @example A bf16 tensor from f32 values
 * ```ts
 * import type { TensorToWrite } from "./safetensors.ts";
 * const t: TensorToWrite = { name: "model.norm.weight", dtype: "BF16", shape: [4], data: new Float32Array(4).fill(1) };
 * ```
 */
export interface TensorToWrite {
  /** Tensor name (must be unique and not `__metadata__`). */
  name: string;
  /** Storage dtype. */
  dtype: FloatDtype;
  /** Dimensions, outermost first. */
  shape: number[];
  /** Values (f32, converted) or raw 16-bit patterns (F16/BF16 only). */
  data: Float32Array | Uint16Array;
}

/** The header bytes and data size, shared by the in-memory and the streaming writer. */
interface _Plan {
  header: Uint8Array; // 8-byte length + padded JSON
  dataSize: number;
}

/** Validates the tensors and builds the header; `file` names the output in errors. */
function _plan(file: string, tensors: readonly TensorToWrite[], metadata: Record<string, string>): _Plan {
  const header: Record<string, unknown> = {};
  if (!_isPlainObject(metadata)) {
    throw new TypeError(`Cannot write "${file}": metadata must be an object of strings; pass {} or omit it`);
  }
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== "string") {
      throw new TypeError(
        `Cannot write "${file}": metadata "${k}" is ${_show(v)}, not a string; stringify it first`,
      );
    }
  }
  if (Object.keys(metadata).length > 0) header.__metadata__ = Object.fromEntries(Object.entries(metadata));
  const seen = new Set<string>();
  let offset = 0;
  for (const t of tensors) {
    if (t.name === "__metadata__" || seen.has(t.name)) {
      throw new TypeError(
        `Cannot write "${file}": tensor name "${t.name}" is ${
          seen.has(t.name) ? "repeated" : "reserved"
        }; rename it`,
      );
    }
    seen.add(t.name);
    if (t.dtype !== "F32" && t.dtype !== "F16" && t.dtype !== "BF16") {
      throw new TypeError(
        `Cannot write "${file}": tensor "${t.name}" dtype ${_show(t.dtype)}; use F32, F16 or BF16`,
      );
    }
    let count = 1;
    for (const d of t.shape) {
      if (!Number.isSafeInteger(d) || d < 0) {
        throw new RangeError(
          `Cannot write "${file}": tensor "${t.name}" shape ${_show(t.shape)} is not non-negative integers`,
        );
      }
      count *= d;
    }
    if (t.data.length !== count) {
      throw new RangeError(
        `Cannot write "${file}": tensor "${t.name}" has ${t.data.length} values but shape ${
          _show(t.shape)
        } needs ${count}`,
      );
    }
    if (t.data instanceof Uint16Array && t.dtype === "F32") {
      throw new TypeError(
        `Cannot write "${file}": tensor "${t.name}" is F32 but data is a Uint16Array; pass a Float32Array`,
      );
    }
    if (!(t.data instanceof Float32Array) && !(t.data instanceof Uint16Array)) {
      throw new TypeError(
        `Cannot write "${file}": tensor "${t.name}" data must be a Float32Array or Uint16Array`,
      );
    }
    const bytes = count * (t.dtype === "F32" ? 4 : 2);
    header[t.name] = { dtype: t.dtype, shape: t.shape.slice(), data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  // Pad with spaces (JSON whitespace, allowed by the spec) so the data section starts 8-byte aligned.
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded).fill(0x20);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return { header: out, dataSize: offset };
}

/** One tensor's data section bytes, little-endian, in its storage dtype. */
function _tensorBytes(t: TensorToWrite): Uint8Array {
  let stored: Float32Array | Uint16Array;
  if (t.dtype === "F32") stored = t.data as Float32Array;
  else if (t.data instanceof Uint16Array) stored = t.data;
  else stored = t.dtype === "F16" ? f32ToF16(t.data) : f32ToBf16(t.data);
  if (LITTLE_ENDIAN) return new Uint8Array(stored.buffer, stored.byteOffset, stored.byteLength);
  const out = new Uint8Array(stored.byteLength);
  const view = new DataView(out.buffer);
  for (let i = 0; i < stored.length; i++) {
    if (stored instanceof Float32Array) view.setFloat32(4 * i, stored[i], true);
    else view.setUint16(2 * i, stored[i], true);
  }
  return out;
}

/**
 * Builds a whole safetensors file in memory (pure; usable in the browser). Tensors are laid out in the
 * order given; the header is space-padded to a multiple of 8 bytes.
 *
 * @param tensors the tensors to store
 * @param metadata string key/value pairs for `__metadata__` (omitted when empty)
 * @param file name used in error messages
 * @returns the file bytes
 * @throws TypeError or RangeError for a bad argument (duplicate name, data length ≠ shape, ...)
 *
 * @example Encoding a tiny file
 * ```ts
 * import { encodeSafetensors } from "./safetensors.ts";
 * const bytes = encodeSafetensors(
 *   [{ name: "w", dtype: "BF16", shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) }],
 *   { format: "pt" },
 * );
 * ```
 */
export function encodeSafetensors(
  tensors: readonly TensorToWrite[],
  metadata: Record<string, string> = {},
  file = "<memory>",
): Uint8Array {
  const plan = _plan(file, tensors, metadata);
  const out = new Uint8Array(plan.header.length + plan.dataSize);
  out.set(plan.header, 0);
  let offset = plan.header.length;
  for (const t of tensors) {
    const bytes = _tensorBytes(t);
    out.set(bytes, offset);
    offset += bytes.length;
  }
  return out;
}

/**
 * The bytes of a safetensors file as chunks, the header first, then one tensor at a time (pure; a
 * writer streams them to disk without building the file in memory: model/deno_files.ts).
 *
 * @param tensors the tensors to store, in layout order
 * @param metadata string key/value pairs for `__metadata__`
 * @param file name used in error messages
 * @throws TypeError or RangeError for a bad argument, before the first chunk
 *
 * @example Chunks of a tiny file
 * ```ts
 * import { safetensorsChunks } from "./safetensors.ts";
 * const chunks = [...safetensorsChunks([{ name: "w", dtype: "F32", shape: [1], data: new Float32Array([1]) }])];
 * console.log(chunks.length); // 2
 * ```
 */
export function safetensorsChunks(
  tensors: readonly TensorToWrite[],
  metadata: Record<string, string> = {},
  file = "<memory>",
): Uint8Array[] & Iterable<Uint8Array> {
  const plan = _plan(file, tensors, metadata); // validate before anything is produced
  // An array of lazily made chunks would hold every tensor at once; a generator does not.
  const lazy = function* () {
    yield plan.header;
    for (const t of tensors) yield _tensorBytes(t);
  };
  return lazy() as unknown as Uint8Array[] & Iterable<Uint8Array>;
}
