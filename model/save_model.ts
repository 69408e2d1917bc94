/**
 * Saving a model directory with its weights in another dtype (Deno only: it writes files).
 *
 * @module
 */

import { fileSource, writeSafetensors } from "./deno_files.ts";
import { openSafetensors } from "./safetensors.ts";

/** Files of a model directory copied as they are (those present). */
const MODEL_DIR_FILES = [
  "config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "generation_config.json",
] as const;

/** Options of {@linkcode saveModel}. */
export interface SaveModelOptions {
  /** Storage dtype of the weights (default "F16": half the size; loading widens as asked). */
  dtype?: "F16" | "F32";
  /** A model card written as README.md. */
  readme?: string;
}

/**
 * Copies the model directory `from` (single `model.safetensors`) to `to`, converting the weights
 * to `dtype`. The copy is built in `<to>.tmp` and renamed into place, replacing `to`, so a crash
 * never leaves a half-written model at `to`.
 *
 * @example Publishing a training checkpoint in f16
 * ```ts ignore
 * await saveModel("runs/cllm/checkpoint-1200", "models/my-cllm", { dtype: "F16", readme: "# my-cllm\n" });
 * ```
 */
export async function saveModel(from: string, to: string, options: SaveModelOptions = {}): Promise<void> {
  const tmp = `${to}.tmp`;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await Deno.mkdir(tmp, { recursive: true });
  const file = await openSafetensors(await fileSource(`${from}/model.safetensors`));
  const tensors = [];
  for (const [name, info] of file.tensors) {
    tensors.push({
      name,
      dtype: options.dtype ?? "F16",
      shape: info.shape,
      data: (await file.readTensor(name)).data,
    });
  }
  await writeSafetensors(`${tmp}/model.safetensors`, tensors);
  for (const f of MODEL_DIR_FILES) {
    await Deno.copyFile(`${from}/${f}`, `${tmp}/${f}`).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
  }
  if (options.readme !== undefined) await Deno.writeTextFile(`${tmp}/README.md`, options.readme);
  await Deno.remove(to, { recursive: true }).catch(() => {});
  await Deno.rename(tmp, to);
}
