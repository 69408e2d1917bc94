/**
 * Streaming weight upload: a checkpoint's tensors go from the file to GPU buffers as raw bytes in
 * bounded chunks, with no per-element work on the host.
 *
 * 1. {@linkcode planWeights} checks every tensor the config needs before anything is allocated:
 *    present, of the right shape, stored as F32, F16 or BF16 (a checkpoint quantised elsewhere, such
 *    as GPTQ/AWQ int32 packs or F8 values, is refused naming the tensor), and small enough for one
 *    storage binding and buffer of this adapter; it returns each tensor's GPU dtype and bytes.
 * 2. {@linkcode uploadWeights} allocates each tensor and fills it chunk by chunk: a tensor stored in
 *    the dtype it gets on the GPU (f32 → f32, f16 → f16) is copied as it is; any other (bf16 → f32
 *    or f16, f16 → f32, f32 → f16) goes through one staging buffer and is converted on the GPU
 *    (kernels/convert.ts). Host memory stays at about one chunk; on a failure every tensor made so far
 *    is freed, so nothing half-loaded stays on the GPU.
 *
 * @module
 */

import { type DType, type Gpu, Step, Tensor } from "../core/mod.ts";
import { convertFloats, type StoredFloat } from "../kernels/convert.ts";
import { quantizeQ8 } from "../kernels/quantize.ts";
import { expectedTensorShapes, type LlamaConfig } from "./config.ts";
import { FormatError } from "./format_error.ts";
import type { CheckpointTensors } from "./safetensors.ts";

/** Bytes read from the file per call (a multiple of 4 and of every element size). */
export const UPLOAD_CHUNK_BYTES = 4 * 1024 * 1024;

/** Stored bytes converted per temporary buffer (under every adapter's binding limit of 128 MiB). */
const CONVERT_BYTES = 64 * 1024 * 1024;

/** One weight to upload: where it is stored, how, and what it becomes on the GPU. */
export interface WeightPlan {
  /** Tensor name, as in the checkpoint. */
  name: string;
  /** Dimensions. */
  shape: number[];
  /** How the file stores it. */
  stored: StoredFloat;
  /** Its dtype on the GPU. */
  dtype: WeightDtype;
  /** Bytes in the file. */
  fileBytes: number;
  /** Bytes on the GPU. */
  gpuBytes: number;
  /**
   * Row ranges of the parts it is split into when it exceeds one storage binding (only the
   * vocabulary-sized embedding and output head split; their kernels take the parts); one range
   * covering every row otherwise.
   */
  parts: { rowStart: number; rows: number }[];
}

/** Tensors that may be split by rows: the kernels that read them (embedding, output head) take parts. */
const SPLITTABLE = new Set(["model.embed_tokens.weight", "lm_head.weight"]);

const STORED: Record<string, StoredFloat> = { F32: "f32", F16: "f16", BF16: "bf16" };

/** A weight matrix's dtype on the GPU. */
export type WeightDtype = "f32" | "f16" | "bf16" | "q8" | "q4";

/**
 * How weight matrices are kept on the GPU: `"stored"` as the checkpoint stores them (the default:
 * no conversion, a 16-bit checkpoint stays 16-bit), or converted to one dtype. Norms are f32
 * always, and an f16 embedding needs the adapter's `shader-f16` (otherwise it stays f32). With
 * `"q8"` the layers' matrices whose rows are a multiple of 32 values become int8 (kernels/quantize.ts);
 * `"q4"` does the same with llama.cpp's Q4_0 int4 groups (a quarter of f16's bytes, plus scales).
 * The embedding, the output head and any other matrix stay as stored (16-bit; f16 if stored f32).
 */
export type WeightStorage = WeightDtype | "stored";

/** A readable size: `1.23 GB`, `45.6 MB`. */
export function formatBytes(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${n} B`;
}

/**
 * Checks the checkpoint against the config and the adapter, and plans the upload (see the module's
 * notes). `storage` says how weight matrices are kept (see {@linkcode WeightStorage}).
 *
 * @throws {FormatError} naming the file and tensor for a missing tensor, a wrong shape or a dtype
 *   that is not F32, F16 or BF16
 * @throws {RangeError} naming the tensor, its size, the adapter's limit and the fix, for a tensor
 *   too large for this adapter
 */
export function planWeights(
  gpu: Gpu,
  config: LlamaConfig,
  checkpoint: CheckpointTensors,
  storage: WeightStorage,
  where: string,
  bindingLimit?: number,
): WeightPlan[] {
  const plans: WeightPlan[] = [];
  const binding = Math.min(bindingLimit ?? Infinity, gpu.limits.maxStorageBufferBindingSize);
  const buffer = gpu.limits.maxBufferSize;
  for (const [name, shape] of expectedTensorShapes(config)) {
    const entry = checkpoint.get(name);
    if (!entry) {
      throw new FormatError(
        `${where}/model.safetensors`,
        `tensor "${name}" is missing`,
        "the checkpoint does not match config.json",
      );
    }
    const file = `${where}/${entry.shard}`;
    if (entry.shape.length !== shape.length || entry.shape.some((d, i) => d !== shape[i])) {
      throw new FormatError(
        file,
        `tensor "${name}" has shape [${entry.shape.join(", ")}] but config.json implies [${
          shape.join(", ")
        }]`,
        "the checkpoint does not match config.json",
      );
    }
    const stored = STORED[entry.dtype];
    if (!stored) {
      throw new FormatError(
        file,
        `tensor "${name}" is stored as ${entry.dtype}, not F32, F16 or BF16 (a checkpoint quantised elsewhere, ` +
          "such as GPTQ/AWQ packs or F8, cannot be loaded as it is)",
        "use the model's unquantised F16 or BF16 checkpoint",
      );
    }
    const size = shape.reduce((a, b) => a * b, 1);
    let target: WeightDtype = shape.length === 2 ? (storage === "stored" ? stored : storage) : "f32";
    // Quantised groups of 32 run along rows; the embedding and head stay 16-bit (they split instead).
    const quantisable = shape.length === 2 && !SPLITTABLE.has(name) && shape[1] % 32 === 0;
    if ((target === "q8" || target === "q4") && !quantisable) {
      target = stored === "f32" ? "f16" : stored;
    }
    if (target === "f16" && name === "model.embed_tokens.weight" && !gpu.features.f16) target = "f32";
    const gpuBytes = target === "q8" || target === "q4"
      ? (Math.ceil(size / (target === "q8" ? 4 : 8)) + Math.ceil(size / 64)) * 4
      : size * (target === "f32" ? 4 : 2);
    const limit = Math.min(binding, buffer);
    const rowBytes = (gpuBytes / shape[0]) || 1;
    // Rows per part: what fits, rounded down to an even count so 16-bit parts start on a word.
    const perPart = Math.max(2, Math.floor(limit / rowBytes / 2) * 2);
    if (gpuBytes > limit && SPLITTABLE.has(name) && perPart * rowBytes <= limit) {
      const parts = [];
      for (let r = 0; r < shape[0]; r += perPart) {
        parts.push({ rowStart: r, rows: Math.min(perPart, shape[0] - r) });
      }
      plans.push({ name, shape, stored, dtype: target, fileBytes: entry.end - entry.begin, gpuBytes, parts });
      continue;
    }
    if (gpuBytes > limit) {
      throw new RangeError(
        `Tensor "${name}" [${shape.join(", ")}] needs ${
          formatBytes(gpuBytes)
        } as ${target} on the GPU, over this ` +
          `adapter's limit of ${formatBytes(limit)} for one storage binding; ` +
          (target === "f32"
            ? 'load with --dtype f16 or bf16 (dtype: "f16"), or as stored if the file is 16-bit'
            : quantisable && (target === "f16" || target === "bf16")
            ? 'load with --dtype q8 or q4 (dtype: "q4"): about a half or a third of the 16-bit bytes'
            : quantisable && target === "q8"
            ? 'load with --dtype q4 (dtype: "q4")'
            : "this model is too large for this adapter"),
      );
    }
    plans.push({
      name,
      shape,
      stored,
      dtype: target,
      fileBytes: entry.end - entry.begin,
      gpuBytes,
      parts: [{ rowStart: 0, rows: shape[0] }],
    });
  }
  return plans;
}

/** Bytes of a KV cache (keys and values, f32) for `positions` positions of a model. */
export function kvCacheBytes(config: LlamaConfig, positions: number): number {
  return config.numLayers * 2 * positions * config.numKvHeads * config.headDim * 4;
}

/**
 * Stops a load before anything is allocated when the model needs more memory than `budget` bytes:
 * its weights as planned plus one KV cache of `positions` positions. The error names the need, the
 * budget and the fixes that would fit: 4-bit weights (`replan("q4")` gives their bytes) and the
 * longest context that fits.
 *
 * @param replan plans the same checkpoint with another weight dtype (for the q4 suggestion)
 */
export function checkMemory(
  config: LlamaConfig,
  plans: readonly WeightPlan[],
  positions: number,
  budget: number,
  source: string,
  replan: (dtype: WeightStorage) => readonly WeightPlan[],
): void {
  const weights = plans.reduce((a, p) => a + p.gpuBytes, 0);
  const cache = kvCacheBytes(config, positions);
  if (weights + cache <= budget) return;
  const fixes: string[] = [];
  if (!plans.every((p) => p.dtype === "q4" || p.parts.length > 1 || p.shape.length === 1)) {
    try {
      const q4 = replan("q4").reduce((a, p) => a + p.gpuBytes, 0);
      if (q4 < weights) {
        fixes.push(`--dtype q4 (weights ${formatBytes(q4)}${q4 + cache <= budget ? ", fits" : ""})`);
      }
    } catch { /* a checkpoint q4 cannot hold: no suggestion */ }
  }
  const perPosition = kvCacheBytes(config, 1);
  const context = Math.floor((budget - weights) / perPosition / 256) * 256;
  if (context >= 256) fixes.push(`a shorter --context (at most ${context} fits)`);
  fixes.push("a smaller model");
  throw new FormatError(
    source,
    `the model needs ${formatBytes(weights + cache)} (weights ${
      formatBytes(weights)
    } as planned + KV cache ` +
      `${formatBytes(cache)} for ${positions} positions), more than the ${formatBytes(budget)} available`,
    `use ${fixes.join(", or ")}`,
  );
}

/**
 * One read of stored bytes and where they go: `length` bytes of tensor `name` from byte `from`,
 * written at byte `at` of `into`; `then` runs once they are queued (a conversion's last chunk
 * submits the conversion).
 */
interface Chunk {
  name: string;
  from: number;
  length: number;
  into: GPUBuffer;
  at: number;
  then?: () => void;
}

/**
 * Allocates and fills the planned tensors (see the module's notes); `onProgress` gets file bytes
 * done and in all after each chunk. `sizes` sets the bytes of each file read and of each piece
 * converted (multiples of 4; the defaults suit every adapter).
 *
 * Every tensor is allocated first (unmapped: its memory is not touched until written), then the
 * stored bytes stream through a small ring of host chunks: up to {@linkcode READS_AHEAD} file reads
 * run while the main thread queues the previous chunk with `queue.writeBuffer` and submits it. That
 * way the buffers' memory is written once, by the GPU's copy, and staging stays a few chunks whatever
 * the model's size. (Mapping each tensor at creation, the obvious route, made wgpu allocate and
 * zero a staging buffer as large as the tensor and copy it over: every byte touched fresh twice;
 * measured 2x slower on a 2.2 GB checkpoint, with 0.5 GB more peak memory.)
 * A tensor stored in another dtype than its own goes, a piece at a time, into one reused staging
 * tensor of stored bytes and is converted from there on the GPU (kernels/convert.ts); queue order
 * makes the next piece's writes wait for the previous conversion.
 */
export async function uploadWeights(
  gpu: Gpu,
  checkpoint: CheckpointTensors,
  plans: readonly WeightPlan[],
  onProgress?: (done: number, total: number, name: string) => void,
  sizes: { chunkBytes?: number; convertBytes?: number } = {},
): Promise<Map<string, Tensor | Tensor[]>> {
  const chunkBytes = sizes.chunkBytes ?? UPLOAD_CHUNK_BYTES;
  const convertBytes = sizes.convertBytes ?? CONVERT_BYTES;
  for (const [what, n] of [["chunkBytes", chunkBytes], ["convertBytes", convertBytes]] as const) {
    if (!Number.isInteger(n) || n < 4 || n % 4 !== 0) {
      throw new RangeError(`uploadWeights: ${what} must be a positive multiple of 4, not ${n}`);
    }
  }
  const weights = new Map<string, Tensor | Tensor[]>();
  const scratch: Tensor[] = [];
  const chunks: Chunk[] = [];
  const total = plans.reduce((a, p) => a + p.fileBytes, 0);
  /** Queues reads of stored bytes [from, from + length) of `name` into `into` from byte `at`. */
  const fill = (name: string, into: GPUBuffer, at: number, from: number, length: number) => {
    for (let offset = 0; offset < length; offset += chunkBytes) {
      const n = Math.min(chunkBytes, length - offset);
      chunks.push({ name, from: from + offset, length: n, into, at: at + offset });
    }
  };
  try {
    // Staging for conversions, reused by every piece: sized for the largest piece any plan needs.
    const pieceBytes = (plan: WeightPlan) => {
      const elementBytes = plan.stored === "f32" ? 4 : 2;
      return plan.dtype === "q8" || plan.dtype === "q4"
        ? Math.max(64, Math.floor(Math.min(convertBytes / elementBytes, 1 << 24) / 64) * 64) * elementBytes
        : convertBytes;
    };
    const converted = plans.filter((p) => p.stored !== p.dtype);
    const largest = (f: (p: WeightPlan) => number) => converted.reduce((m, p) => Math.max(m, f(p)), 0);
    const stagingBytes = largest((p) => Math.min(pieceBytes(p), p.fileBytes));
    const staging = stagingBytes > 0
      ? new Tensor(gpu, [Math.ceil(stagingBytes / 4)], "u32", "weights staging (stored bytes)")
      : undefined;
    const quantisedValues = largest((p) =>
      p.dtype === "q8" || p.dtype === "q4"
        ? Math.min(pieceBytes(p), p.fileBytes) / (p.stored === "f32" ? 4 : 2)
        : 0
    );
    const values = quantisedValues > 0
      ? new Tensor(gpu, [quantisedValues], "f32", "weights staging (f32 values)")
      : undefined;
    for (const t of [staging, values]) if (t) scratch.push(t);

    for (const plan of plans) {
      const cols = plan.shape.length === 2 ? plan.shape[1] : plan.shape[0];
      const storedRow = cols * (plan.stored === "f32" ? 4 : 2);
      const tensors: Tensor[] = [];
      weights.set(plan.name, tensors); // before any allocation, so a failure frees every part
      for (const part of plan.parts) {
        const shape = plan.shape.length === 2 ? [part.rows, cols] : plan.shape;
        const label = plan.parts.length > 1
          ? `${plan.name} [rows ${part.rowStart}..${part.rowStart + part.rows})`
          : plan.name;
        const fileStart = part.rowStart * storedRow;
        const fileLength = plan.parts.length > 1 ? part.rows * storedRow : plan.fileBytes;
        const t = new Tensor(gpu, shape, plan.dtype as DType, label);
        tensors.push(t);
        if (plan.stored === plan.dtype) {
          fill(plan.name, t.buffer, 0, fileStart, fileLength);
          continue;
        }
        // Converted in pieces of at most `pieceBytes` stored bytes through the staging tensor (for
        // q8 and q4: widened to f32, then quantised, in pieces of whole pairs of groups).
        const elementBytes = plan.stored === "f32" ? 4 : 2;
        const quantised = plan.dtype === "q8" || plan.dtype === "q4";
        const piece = pieceBytes(plan);
        for (let from = 0; from < fileLength; from += piece) {
          const length = Math.min(piece, fileLength - from);
          fill(plan.name, staging!.buffer, 0, fileStart + from, length);
          const count = length / elementBytes;
          const dstElement = from / elementBytes;
          chunks[chunks.length - 1].then = () => {
            const step = new Step(gpu, `convert ${label}`);
            if (quantised) {
              convertFloats(step, staging!, values!, { from: plan.stored, count });
              quantizeQ8(step, values!, t, { count, dstElement });
            } else {
              convertFloats(step, staging!, t, { from: plan.stored, count, dstElement });
            }
            step.submit();
          };
        }
      }
      if (plan.parts.length === 1) weights.set(plan.name, tensors[0]);
    }
    await streamChunks(gpu, checkpoint, chunks, chunkBytes, (done, name) => onProgress?.(done, total, name));
    return weights;
  } catch (e) {
    for (const t of [...weights.values()].flat()) t.destroy();
    throw e;
  } finally {
    // wgpu frees a destroyed buffer only once the work submitted with it has run.
    for (const t of scratch) t.destroy();
  }
}

/** File reads kept in flight while the main thread queues earlier chunks. */
const READS_AHEAD = 2;

/**
 * Reads each chunk's bytes into a ring of host buffers, up to {@linkcode READS_AHEAD} ahead, and
 * queues them in order with `queue.writeBuffer` (which copies at once, so a buffer is free again
 * when the call returns), submitting after each so that wgpu's staging stays one chunk.
 */
async function streamChunks(
  gpu: Gpu,
  checkpoint: CheckpointTensors,
  chunks: readonly Chunk[],
  chunkBytes: number,
  onChunk: (done: number, name: string) => void,
): Promise<void> {
  const ring = Array.from({ length: READS_AHEAD + 1 }, () => new Uint8Array(chunkBytes + 4));
  const reads: Promise<void>[] = [];
  const start = (i: number) => {
    if (i >= chunks.length) return;
    const c = chunks[i];
    reads[i] = checkpoint.readRangeInto(c.name, c.from, ring[i % ring.length].subarray(0, c.length));
  };
  for (let i = 0; i < READS_AHEAD; i++) start(i);
  let done = 0;
  try {
    for (let i = 0; i < chunks.length; i++) {
      // The slot this read fills was last used by chunk i - 1, queued in the previous iteration.
      start(i + READS_AHEAD);
      await reads[i];
      const c = chunks[i];
      const bytes = ring[i % ring.length];
      // Queue writes are whole words: a tensor of an odd number of 16-bit values ends mid-word
      // (its buffer is padded, so the zeroed tail lands in the padding).
      const words = Math.ceil(c.length / 4) * 4;
      bytes.fill(0, c.length, words);
      gpu.device.queue.writeBuffer(c.into, c.at, bytes, 0, words);
      gpu.device.queue.submit([]);
      c.then?.();
      done += c.length;
      onChunk(done, c.name);
    }
  } finally {
    // No read may still be writing into the ring, nor fail unobserved, once this returns.
    await Promise.allSettled(reads);
  }
}
