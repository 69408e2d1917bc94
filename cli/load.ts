/**
 * Loading a model for a command: the device, the files, progress for large checkpoints.
 *
 * @module
 */

import { type Gpu, requestGpu } from "../core/mod.ts";
import { directoryFiles, loadPretrained, type Pretrained, type WeightStorage } from "../model/mod.ts";
import { CliError, numberOption } from "./args.ts";
import { HubError, parseHubModelRef, resolveHubModel } from "./hub.ts";
import { Progress } from "./progress.ts";

/** The flags of every command that loads a model for inference (parseArgs spec). */
export const LOAD_FLAGS = {
  dtype: { type: "string" },
  context: { type: "string" },
  memory: { type: "string" },
} as const;

/** Help lines for {@linkcode LOAD_FLAGS}. */
export const LOAD_HELP =
  `  --dtype f32|f16|bf16|q8|q4 weight matrices on the GPU (default: as the checkpoint stores them)
  --context N                KV cache positions (default: the model's context, at most 2048)
  --memory GB                memory the model may take: weights + KV cache (default: the free host
                             memory on a software adapter; unchecked on a GPU, whose memory WebGPU
                             does not report)`;

/** How to load, from {@linkcode LOAD_FLAGS}' values. */
export interface LoadFlags {
  dtype?: string;
  maxLength?: number;
  memoryBytes?: number;
}

/** Reads {@linkcode LOAD_FLAGS}' values. */
export function loadFlags(values: Record<string, unknown>): LoadFlags {
  return {
    dtype: values.dtype as string | undefined,
    maxLength: values.context === undefined
      ? undefined
      : numberOption(values, "context", 0, { integer: true, min: 16 }),
    memoryBytes: values.memory === undefined
      ? undefined
      : numberOption(values, "memory", 0, { min: 0.001 }) * 1e9,
  };
}

/**
 * The directory of `--model`: a local directory as it is, or `org/name[@revision]` found in (or
 * downloaded into) the Hugging Face cache (cli/hub.ts).
 */
export async function modelDirectory(model: string): Promise<string> {
  try {
    const stat = await Deno.stat(model);
    if (!stat.isDirectory) throw new CliError(`--model "${model}" is not a directory`);
    return model;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const ref = parseHubModelRef(model);
  if (!ref) {
    throw new CliError(
      `--model "${model}" is neither a directory nor a Hub model name (org/name[@revision])`,
    );
  }
  let progress: Progress | null = null;
  let current = "";
  try {
    return await resolveHubModel(ref, {
      onProgress: (file, done, total) => {
        if (file !== current) {
          progress?.done();
          progress = Number.isFinite(total) && total > 1 << 20 ? new Progress(file, total, "B") : null;
          current = file;
        }
        progress?.update(done);
      },
    });
  } catch (e) {
    if (e instanceof HubError) throw new CliError(e.message);
    throw e;
  } finally {
    (progress as Progress | null)?.done();
  }
}

/**
 * Loads `dir` onto a new device, showing progress when the checkpoint is over 64 MiB. Without a
 * memory budget, a software adapter gets the host's free memory (its buffers live there).
 */
export async function loadModelDir(
  model: string,
  options: LoadFlags = {},
): Promise<Pretrained & { gpu: Gpu }> {
  if (options.dtype !== undefined && !["f32", "f16", "bf16", "q8", "q4"].includes(options.dtype)) {
    throw new CliError(`--dtype must be f32, f16, bf16, q8 or q4, not "${options.dtype}"`);
  }
  const dir = await modelDirectory(model);
  const gpu = await requestGpu();
  let progress: Progress | null = null;
  const pretrained = await loadPretrained(gpu, directoryFiles(dir), {
    maxLength: options.maxLength,
    dtype: options.dtype as WeightStorage | undefined,
    memoryBytes: options.memoryBytes ??
      (gpu.adapter.isFallbackAdapter ? Deno.systemMemoryInfo().available : undefined),
    onProgress: (done, total) => {
      if (total < 64 << 20) return;
      progress ??= new Progress("loading", total, "B");
      progress.update(done);
    },
  });
  (progress as Progress | null)?.done();
  return { ...pretrained, gpu };
}

/**
 * Frees a loaded model and its device once the GPU has finished what was queued: decoding loops
 * queue iterations behind their last read, and at a 7B model's size those run for seconds; a process
 * that exits before they end makes wgpu give up waiting and Deno report a panic.
 */
export async function closeModel(p: Pretrained & { gpu: Gpu }): Promise<void> {
  await p.gpu.device.queue.onSubmittedWorkDone();
  p.model.destroy();
  p.gpu.destroy();
}
