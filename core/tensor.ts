/**
 * A tensor is a GPU storage buffer with a shape and a dtype. Data moves in with `write` (a queue
 * write, no sync) and out through {@linkcode readTensors}, which reads many tensors with one wait.
 *
 * @module
 */

import type { Gpu } from "./device.ts";

/**
 * Element types a tensor can hold. f16 needs the adapter's `shader-f16` feature to be computed on;
 * bf16 (weights as checkpoints store them) is read as packed u32 words and widened by a shift. q8
 * is a weight matrix quantised to int8 in groups of 32 along its rows, each group with an f16
 * scale: the int8 values (4 per u32 word) come first, then the scales (2 per word) from word
 * {@linkcode Tensor.q8ScaleWord} on (kernels/quantize.ts). q4 is the same with 4-bit values, eight
 * per word.
 */
export type DType = "f32" | "f16" | "bf16" | "q8" | "q4" | "u32" | "i32";

/** Typed arrays that can fill a tensor. f16 data is given as f32 and converted. */
export type TensorData = Float32Array | Uint32Array | Int32Array;

/** Bytes per element of each dtype. */
export const DTYPE_BYTES: Record<DType, number> = { f32: 4, f16: 2, bf16: 2, q8: 1, q4: 0.5, u32: 4, i32: 4 };

/** Rounds an f32 to the nearest f16 (ties to even) and returns its bits. */
export function f32ToF16Bits(value: number): number {
  const f = new Float32Array([value]);
  const x = new Uint32Array(f.buffer)[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf or nan
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow to inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow to zero
    mant |= 0x800000; // subnormal: shift the implicit bit in, round to nearest even
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let m = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && (m & 1))) m++;
    return sign | m;
  }
  let m = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (m & 1))) {
    m++;
    if (m === 0x400) {
      m = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | m;
}

/**
 * Rounds an f32 to the nearest bf16 (ties to even, as PyTorch) and returns its bits; NaN stays a
 * quiet NaN.
 *
 * @example
 * ```ts
 * import { f32ToBf16Bits } from "./tensor.ts";
 * f32ToBf16Bits(1).toString(16); // 3f80
 * ```
 */
export function f32ToBf16Bits(value: number): number {
  const f = new Float32Array([value]);
  const x = new Uint32Array(f.buffer)[0];
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Converts f16 bits to an f32 value. */
export function f16BitsToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

let nextTensorId = 1;

/**
 * A GPU buffer with a shape and a dtype. Row-major; the last dimension is contiguous.
 *
 * @example Creating, filling and reading a tensor
 * ```ts ignore
 * import { requestGpu } from "./device.ts";
 * import { Tensor, readTensors } from "./tensor.ts";
 * const gpu = await requestGpu();
 * const x = Tensor.from(gpu, new Float32Array([1, 2, 3, 4]), [2, 2], "x");
 * const [data] = await readTensors(gpu, [x]);
 * console.log(data); // Float32Array [1, 2, 3, 4]
 * ```
 */
export class Tensor {
  /** Unique id, used as a cache key for bind groups. */
  readonly id: number = nextTensorId++;
  /** The device this tensor lives on. */
  readonly gpu: Gpu;
  /** The storage buffer (usage STORAGE | COPY_SRC | COPY_DST). */
  readonly buffer: GPUBuffer;
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
  /** Name used in labels and error messages. */
  readonly label: string;

  /**
   * Allocates an uninitialised (zero-filled by WebGPU) tensor.
   *
   * @param gpu the device
   * @param shape dimensions
   * @param dtype element type
   * @param label name for labels and errors
   * @param buffer an existing buffer to view instead of allocating (see {@linkcode Tensor.view})
   */
  constructor(
    gpu: Gpu,
    shape: readonly number[],
    dtype: DType,
    label: string,
    buffer?: GPUBuffer,
    options: { mappedAtCreation?: boolean } = {},
  ) {
    for (const d of shape) {
      if (!Number.isSafeInteger(d) || d < 0) {
        throw new RangeError(`Tensor "${label}": shape [${shape.join(", ")}] has an invalid dimension ${d}`);
      }
    }
    this.gpu = gpu;
    this.shape = [...shape];
    this.dtype = dtype;
    this.label = label;
    const bytes = this.byteLength;
    if (buffer) {
      if (bytes > buffer.size) {
        throw new RangeError(
          `Tensor view "${label}" of ${bytes} bytes is larger than its buffer (${buffer.size})`,
        );
      }
      this.buffer = buffer;
      return;
    }
    const limit = gpu.limits.maxStorageBufferBindingSize;
    if (bytes > limit) {
      throw new RangeError(
        `Tensor "${label}" of shape [${shape.join(", ")}] (${dtype}) needs ${bytes} bytes, over this ` +
          `adapter's maxStorageBufferBindingSize of ${limit}; use f16 weights or a smaller model`,
      );
    }
    // Buffers are padded to 16 bytes so vec4 kernels and 4-byte queue writes never run off the end.
    const padded = Math.max(16, Math.ceil(bytes / 16) * 16);
    this.buffer = gpu.device.createBuffer({
      label,
      size: padded,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      mappedAtCreation: options.mappedAtCreation ?? false,
    });
  }

  /**
   * Allocates a tensor whose memory the host fills directly before the GPU uses it (the buffer is
   * mapped at creation: on a software adapter that is the buffer's own memory, so a file can be read
   * straight into it). Call `unmap()` when done; until then the tensor cannot be used on the GPU.
   *
   * @example Filling a tensor from a file without an intermediate copy
   * ```ts ignore
   * const { tensor, bytes, unmap } = Tensor.mapped(gpu, [n], "f32", "w");
   * await file.readInto(offset, bytes.subarray(0, tensor.byteLength));
   * unmap();
   * ```
   */
  static mapped(
    gpu: Gpu,
    shape: readonly number[],
    dtype: DType,
    label: string,
  ): { tensor: Tensor; bytes: Uint8Array; unmap: () => void } {
    const tensor = new Tensor(gpu, shape, dtype, label, undefined, { mappedAtCreation: true });
    const bytes = new Uint8Array(tensor.buffer.getMappedRange());
    return { tensor, bytes, unmap: () => tensor.buffer.unmap() };
  }

  /**
   * Creates a tensor holding `data`. Float data becomes f16 when `dtype` is "f16".
   *
   * @param gpu the device
   * @param data the values, row-major
   * @param shape dimensions; their product must equal `data.length`
   * @param label name for labels and errors
   * @param dtype element type (default from the array type)
   */
  static from(gpu: Gpu, data: TensorData, shape: readonly number[], label: string, dtype?: DType): Tensor {
    const t = new Tensor(gpu, shape, dtype ?? defaultDType(data), label);
    t.write(data);
    return t;
  }

  /**
   * A tensor of another shape over the same buffer (no copy), e.g. the first T rows of a scratch
   * buffer sized for the largest block.
   *
   * @param shape the view's dimensions; it must fit in the buffer
   * @param label name for labels and errors (default: this tensor's)
   */
  view(shape: readonly number[], label?: string): Tensor {
    return new Tensor(this.gpu, shape, this.dtype, label ?? this.label, this.buffer);
  }

  /** Number of elements. */
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }

  /** Bytes of data (without padding); a q8 tensor's scales included. */
  get byteLength(): number {
    if (this.dtype === "q8" || this.dtype === "q4") return (this.q8ScaleWord + Math.ceil(this.size / 64)) * 4;
    return this.size * DTYPE_BYTES[this.dtype];
  }

  /** Of a q8 or q4 tensor: the u32 word where its f16 scales start (after the int8 or int4 values). */
  get q8ScaleWord(): number {
    return Math.ceil(this.size / (this.dtype === "q4" ? 8 : 4));
  }

  /**
   * Writes values into the tensor starting at element `offset` (a queue write: ordered before the
   * next submit, no wait).
   *
   * @param data values to write
   * @param offset first element to write
   */
  write(data: TensorData, offset = 0): void {
    if (offset + data.length > this.size) {
      throw new RangeError(
        `Tensor "${this.label}": writing ${data.length} values at ${offset} overruns its ${this.size} elements`,
      );
    }
    let bytes: Uint8Array<ArrayBuffer>;
    if (this.dtype === "q8" || this.dtype === "q4") {
      throw new TypeError(`Tensor "${this.label}": ${this.dtype} tensors are written by quantizeQ8`);
    }
    if (this.dtype === "f16" || this.dtype === "bf16") {
      const half = new Uint16Array(data.length + (data.length & 1));
      const toBits = this.dtype === "f16" ? f32ToF16Bits : f32ToBf16Bits;
      for (let i = 0; i < data.length; i++) half[i] = toBits(data[i]);
      bytes = new Uint8Array(half.buffer);
      if (offset & 1) {
        throw new RangeError(`Tensor "${this.label}": ${this.dtype} writes must start at an even element`);
      }
    } else {
      bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    }
    this.gpu.device.queue.writeBuffer(this.buffer, offset * DTYPE_BYTES[this.dtype], bytes);
  }

  /**
   * Writes raw bytes into the tensor's buffer at `byteOffset` (a queue write, like
   * {@linkcode Tensor.write}): data already in the tensor's layout, e.g. weights streamed from a
   * file. A length that is not a multiple of 4 is padded with zeros (the buffer is padded too).
   */
  writeBytes(bytes: Uint8Array, byteOffset = 0): void {
    if (byteOffset % 4 !== 0) {
      throw new RangeError(`Tensor "${this.label}": byte writes start at a multiple of 4`);
    }
    const padded = (bytes.length + 3) & ~3;
    if (byteOffset + padded > this.buffer.size) {
      throw new RangeError(
        `Tensor "${this.label}": writing ${bytes.length} bytes at ${byteOffset} overruns its ${this.buffer.size} bytes`,
      );
    }
    let data = bytes as Uint8Array<ArrayBuffer>;
    if (padded !== bytes.length) {
      data = new Uint8Array(padded);
      data.set(bytes);
    }
    this.gpu.device.queue.writeBuffer(this.buffer, byteOffset, data);
  }

  /** Frees the GPU memory. */
  destroy(): void {
    this.buffer.destroy();
  }
}

function defaultDType(data: TensorData): DType {
  if (data instanceof Uint32Array) return "u32";
  if (data instanceof Int32Array) return "i32";
  return "f32";
}

/** What a readback returns for each dtype (f16 and bf16 are widened to f32). */
export type ReadData = Float32Array | Uint32Array | Int32Array;

/**
 * Reads several tensors back with one wait for the GPU (each wait costs ~10 ms in Deno, so batch
 * them). Raises any GPU error reported since the last readback first.
 *
 * @example Reading two tensors together
 * ```ts ignore
 * const [a, b] = await readTensors(gpu, [x, y]);
 * ```
 */
export async function readTensors(gpu: Gpu, tensors: readonly Tensor[]): Promise<ReadData[]> {
  const device = gpu.device;
  const encoder = device.createCommandEncoder({ label: "readback" });
  const staging = tensors.map((t) => {
    const size = Math.max(16, Math.ceil(t.byteLength / 16) * 16);
    const buffer = device.createBuffer({
      label: `readback ${t.label}`,
      size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    encoder.copyBufferToBuffer(t.buffer, 0, buffer, 0, size);
    return buffer;
  });
  device.queue.submit([encoder.finish()]);
  // mapAsync waits for all submitted work; awaiting them together shares one ~10 ms floor.
  await Promise.all(staging.map((b) => b.mapAsync(GPUMapMode.READ)));
  try {
    await gpu.throwIfFailed();
    return tensors.map((t, i) => {
      const raw = staging[i].getMappedRange(0, staging[i].size).slice(0);
      if (t.dtype === "f16") {
        const bits = new Uint16Array(raw, 0, t.size);
        const out = new Float32Array(t.size);
        for (let j = 0; j < t.size; j++) out[j] = f16BitsToF32(bits[j]);
        return out;
      }
      if (t.dtype === "bf16") {
        const bits = new Uint16Array(raw, 0, t.size);
        const out = new Uint32Array(t.size);
        for (let j = 0; j < t.size; j++) out[j] = bits[j] << 16;
        return new Float32Array(out.buffer);
      }
      if (t.dtype === "u32") return new Uint32Array(raw, 0, t.size);
      if (t.dtype === "q8" || t.dtype === "q4") return new Uint32Array(raw, 0, t.byteLength / 4); // values, scales
      if (t.dtype === "i32") return new Int32Array(raw, 0, t.size);
      return new Float32Array(raw, 0, t.size);
    });
  } finally {
    for (const b of staging) {
      b.unmap();
      b.destroy();
    }
  }
}
