/**
 * Loading a model for a command: the device, the files, progress for large checkpoints.
 *
 * @module
 */

import { type Gpu, requestGpu } from "../core/mod.ts";
import { directoryFiles, loadPretrained, type Pretrained, type WeightStorage } from "../model/mod.ts";
import { CliError } from "./args.ts";
import { Progress } from "./progress.ts";

/** Loads `dir` onto a new device, showing progress when the checkpoint is over 64 MiB. */
export async function loadModelDir(
  dir: string,
  options: { maxLength?: number; dtype?: string } = {},
): Promise<Pretrained & { gpu: Gpu }> {
  if (options.dtype !== undefined && !["f32", "f16", "bf16", "q8", "q4"].includes(options.dtype)) {
    throw new CliError(`--dtype must be f32, f16, bf16, q8 or q4, not "${options.dtype}"`);
  }
  try {
    const stat = await Deno.stat(dir);
    if (!stat.isDirectory) throw new CliError(`--model "${dir}" is not a directory`);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new CliError(`--model "${dir}" does not exist`);
    throw e;
  }
  const gpu = await requestGpu();
  let progress: Progress | null = null;
  const pretrained = await loadPretrained(gpu, directoryFiles(dir), {
    maxLength: options.maxLength,
    dtype: options.dtype as WeightStorage | undefined,
    onProgress: (done, total) => {
      if (total < 64 << 20) return;
      progress ??= new Progress("loading", total, "B");
      progress.update(done);
    },
  });
  (progress as Progress | null)?.done();
  return { ...pretrained, gpu };
}
