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
export const UPLOAD_CHUNK_BYTES = 16 * 1024 * 1024;

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

/**
 * Allocates and fills the planned tensors (see the module's notes); `onProgress` gets file bytes
 * done and in all after each chunk. `sizes` sets the bytes of each file read and of each piece
 * converted (multiples of 4; the defaults suit every adapter).
 *
 * A tensor stored as it will live on the GPU is read straight into its buffer, mapped at creation
 * (on a software adapter that is the buffer's own memory: one copy from the page cache, no staging);
 * another is read the same way into a temporary buffer of its stored bytes, then converted on the GPU
 * into its own (kernels/convert.ts) and the temporary freed.
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
  const allTensors = () => [...weights.values()].flat();
  const total = plans.reduce((a, p) => a + p.fileBytes, 0);
  let done = 0;
  let pending: { unmap: () => void; tensor: Tensor } | null = null;
  /** Reads bytes [from, from + length) of a stored tensor into a mapped buffer, then unmaps it. */
  const fill = async (
    name: string,
    into: { bytes: Uint8Array; unmap: () => void },
    from: number,
    length: number,
  ) => {
    for (let offset = 0; offset < length; offset += chunkBytes) {
      const n = Math.min(chunkBytes, length - offset);
      await checkpoint.readRangeInto(name, from + offset, into.bytes.subarray(offset, offset + n));
      done += n;
      onProgress?.(done, total, name);
    }
    into.unmap();
    pending = null;
  };
  try {
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
        if (plan.stored === plan.dtype) {
          const mapped = Tensor.mapped(gpu, shape, plan.dtype as DType, label);
          pending = mapped;
          tensors.push(mapped.tensor);
          await fill(plan.name, mapped, fileStart, fileLength);
          continue;
        }
        // Converted in pieces of at most `convertBytes` stored bytes, each through its own temporary
        // (for q8 and q4: widened to f32, then quantised, in pieces of whole pairs of groups).
        const t = new Tensor(gpu, shape, plan.dtype as DType, label);
        tensors.push(t);
        const elementBytes = plan.stored === "f32" ? 4 : 2;
        const quantised = plan.dtype === "q8" || plan.dtype === "q4";
        const pieceBytes = quantised
          ? Math.max(64, Math.floor(Math.min(convertBytes / elementBytes, 1 << 24) / 64) * 64) * elementBytes
          : convertBytes;
        for (let from = 0; from < fileLength; from += pieceBytes) {
          const length = Math.min(pieceBytes, fileLength - from);
          const temp = Tensor.mapped(gpu, [Math.ceil(length / 4)], "u32", `${label} (stored ${plan.stored})`);
          pending = temp;
          await fill(plan.name, temp, fileStart + from, length);
          const step = new Step(gpu, `convert ${label}`);
          if (quantised) {
            const values = new Tensor(gpu, [length / elementBytes], "f32", `${label} (f32)`);
            convertFloats(step, temp.tensor, values, { from: plan.stored, count: values.size });
            quantizeQ8(step, values, t, { count: values.size, dstElement: from / elementBytes });
            step.submit();
            values.destroy();
          } else {
            convertFloats(step, temp.tensor, t, {
              from: plan.stored,
              count: length / elementBytes,
              dstElement: from / elementBytes,
            });
            step.submit();
          }
          // wgpu frees a destroyed buffer only once the work submitted with it has run.
          temp.tensor.destroy();
        }
      }
      if (plan.parts.length === 1) weights.set(plan.name, tensors[0]);
    }
    return weights;
  } catch (e) {
    const open = pending as { unmap: () => void; tensor: Tensor } | null;
    if (open) {
      open.unmap();
      if (!allTensors().includes(open.tensor)) open.tensor.destroy();
    }
    for (const t of allTensors()) t.destroy();
    throw e;
  }
}
