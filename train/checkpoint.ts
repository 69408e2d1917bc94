/**
 * Training checkpoints on disk: write one, find the newest complete one, load its optimizer state.
 *
 * A checkpoint `out/checkpoint-<step>/` is a model directory in Hugging Face layout (weights,
 * config.json, the tokenizer files, generation_config.json) plus `optimizer.safetensors` (AdamW
 * moments), `trainer_state.json` (step, data order, PRNG, loss history) and `loss.svg`.
 * `out/latest.json` names the checkpoint to resume from.
 *
 * Crash safety: at every moment `latest.json` names a complete checkpoint (or does not exist yet).
 * The writer builds the new checkpoint in a temporary directory, renames it into place, then
 * replaces `latest.json` (temporary file + rename), and only then removes older checkpoints. A kill
 * at any point leaves either the old or the new checkpoint named, and at worst a stray temporary
 * directory that the next write clears. The files copied into every checkpoint (tokenizer and
 * generation config) are read once when training starts, so a checkpoint never depends on a
 * directory that may have been removed since (the starting model may itself be a checkpoint).
 * {@linkcode findLatestCheckpoint} checks that what `latest.json` names is complete, and otherwise
 * falls back to the newest complete checkpoint in the folder.
 *
 * @module
 */

import { directoryOpener, fileSource, writeSafetensors } from "../model/deno_files.ts";
import { llamaConfigToJson } from "../model/config.ts";
import { openSafetensors } from "../model/safetensors.ts";
import type { Tensor } from "../core/mod.ts";
import {
  CHECKPOINT_REQUIRED,
  type CheckpointContents,
  type CheckpointStore,
  MODEL_SIDE_FILES,
  type TrainerState,
} from "./checkpoint_store.ts";

export * from "./checkpoint_store.ts";

/** The writer's steps, in order; a fault-injection hook is called before each. */
export const CHECKPOINT_WRITE_STEPS = [
  "clear-temp",
  "write-weights",
  "write-optimizer",
  "write-config",
  "write-side-files",
  "write-trainer-state",
  "write-loss-chart",
  "rename-into-place",
  "point-latest",
  "remove-older",
] as const;

/** One step of {@linkcode writeCheckpoint}. */
export type CheckpointWriteStep = typeof CHECKPOINT_WRITE_STEPS[number];

/** Options of {@linkcode writeCheckpoint}. */
export interface WriteCheckpointOptions {
  /** Called before each step (tests inject faults by throwing here). */
  beforeStep?: (step: CheckpointWriteStep) => void | Promise<void>;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function writeTextAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, text);
  await Deno.rename(tmp, path);
}

/** The checkpoint directory name `latest.json` points at, or null. */
async function readLatestName(out: string): Promise<string | null> {
  try {
    const latest = JSON.parse(await Deno.readTextFile(`${out}/latest.json`));
    return typeof latest.checkpoint === "string" ? latest.checkpoint : null;
  } catch {
    return null;
  }
}

/**
 * Reads the side files of a model directory (tokenizer.json required) for
 * {@linkcode CheckpointContents.sideFiles}.
 *
 * @throws Error naming the directory when tokenizer.json is missing
 */
export async function readSideFiles(modelDir: string): Promise<Map<string, Uint8Array>> {
  const files = new Map<string, Uint8Array>();
  for (const name of MODEL_SIDE_FILES) {
    try {
      files.set(name, await Deno.readFile(`${modelDir}/${name}`));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      if (name === "tokenizer.json") {
        throw new Deno.errors.NotFound(
          `Cannot train from "${modelDir}": it has no tokenizer.json, which every checkpoint needs; ` +
            "start from a complete model directory",
        );
      }
    }
  }
  return files;
}

/**
 * Writes `out/checkpoint-<step>/` and points `out/latest.json` at it (see the module's notes on
 * crash safety); then removes older checkpoints. Returns the new checkpoint's directory.
 *
 * @example
 * ```ts ignore
 * const dir = await writeCheckpoint("runs/cllm", contents);
 * ```
 */
export async function writeCheckpoint(
  out: string,
  contents: CheckpointContents,
  options: WriteCheckpointOptions = {},
): Promise<string> {
  const hook = options.beforeStep ?? (() => {});
  if (!contents.sideFiles.has("tokenizer.json")) {
    throw new RangeError("A checkpoint needs tokenizer.json among its side files");
  }
  await Deno.mkdir(out, { recursive: true });
  const latest = await readLatestName(out);
  // The directory name: checkpoint-<step>, unless that is the one latest.json names (a resumed run
  // writing its starting step again): then a fresh name, so the named one stays until replaced.
  let name = `checkpoint-${contents.state.step}`;
  for (let k = 2; name === latest; k++) name = `checkpoint-${contents.state.step}-${k}`;
  const tmp = `${out}/.${name}.tmp`;
  const final = `${out}/${name}`;

  await hook("clear-temp");
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await Deno.mkdir(tmp, { recursive: true });
  await hook("write-weights");
  await writeSafetensors(
    `${tmp}/model.safetensors`,
    contents.weights.map((t) => ({ ...t, dtype: "F32" as const })),
  );
  await hook("write-optimizer");
  await writeSafetensors(
    `${tmp}/optimizer.safetensors`,
    contents.optimizer.map((t) => ({ ...t, dtype: "F32" as const })),
  );
  await hook("write-config");
  await Deno.writeTextFile(
    `${tmp}/config.json`,
    JSON.stringify(llamaConfigToJson(contents.config), null, 2) + "\n",
  );
  await hook("write-side-files");
  for (const [file, bytes] of contents.sideFiles) await Deno.writeFile(`${tmp}/${file}`, bytes);
  await hook("write-trainer-state");
  await Deno.writeTextFile(`${tmp}/trainer_state.json`, JSON.stringify(contents.state, null, 2) + "\n");
  await hook("write-loss-chart");
  await Deno.writeTextFile(`${tmp}/loss.svg`, contents.lossChart);
  await hook("rename-into-place");
  // A directory of this name that latest.json does not name is a leftover: nothing relies on it.
  await Deno.remove(final, { recursive: true }).catch(() => {});
  await Deno.rename(tmp, final);
  await hook("point-latest");
  await writeTextAtomic(
    `${out}/latest.json`,
    JSON.stringify({ checkpoint: name, step: contents.state.step }) + "\n",
  );
  await hook("remove-older");
  for await (const e of Deno.readDir(out)) {
    const stale = e.name.startsWith("checkpoint-") ||
      (e.name.startsWith(".checkpoint-") && e.name.endsWith(".tmp"));
    if (e.isDirectory && stale && e.name !== name) {
      await Deno.remove(`${out}/${e.name}`, { recursive: true });
    }
  }
  return final;
}

/**
 * Why `dir` is not a complete checkpoint, or null when it is: every required file is there, both
 * safetensors files parse and match their sizes, and trainer_state.json parses.
 */
export async function checkpointProblem(dir: string): Promise<string | null> {
  for (const f of CHECKPOINT_REQUIRED) {
    if (!(await exists(`${dir}/${f}`))) return `${f} is missing`;
  }
  for (const f of ["model.safetensors", "optimizer.safetensors"]) {
    try {
      await openSafetensors(await fileSource(`${dir}/${f}`));
    } catch (e) {
      return `${f}: ${(e as Error).message}`;
    }
  }
  try {
    const state = JSON.parse(await Deno.readTextFile(`${dir}/trainer_state.json`));
    if (!Number.isInteger(state.step)) return "trainer_state.json has no integer step";
  } catch (e) {
    return `trainer_state.json: ${(e as Error).message}`;
  }
  return null;
}

/** A checkpoint found by {@linkcode findLatestCheckpoint}. */
export interface FoundCheckpoint {
  /** Its directory. */
  dir: string;
  /** The trainer's position saved in it. */
  state: TrainerState;
  /** True when it is not the one latest.json names (that one was missing or incomplete). */
  fellBack: boolean;
}

/**
 * The checkpoint to resume from in `out`: the one `latest.json` names when it is complete, else
 * the complete checkpoint with the highest step; null when there is none.
 *
 * @example
 * ```ts ignore
 * const found = await findLatestCheckpoint("runs/cllm");
 * if (found) console.log(`resuming at step ${found.state.step} from ${found.dir}`);
 * ```
 */
export async function findLatestCheckpoint(out: string): Promise<FoundCheckpoint | null> {
  const named = await readLatestName(out);
  const load = async (name: string) => {
    const dir = `${out}/${name}`;
    if (await checkpointProblem(dir)) return null;
    return { dir, state: JSON.parse(await Deno.readTextFile(`${dir}/trainer_state.json`)) as TrainerState };
  };
  if (named) {
    const found = await load(named);
    if (found) return { ...found, fellBack: false };
  }
  const candidates: { dir: string; state: TrainerState }[] = [];
  try {
    for await (const e of Deno.readDir(out)) {
      if (!e.isDirectory || !e.name.startsWith("checkpoint-") || e.name === named) continue;
      const found = await load(e.name);
      if (found) candidates.push(found);
    }
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  candidates.sort((a, b) => b.state.step - a.state.step);
  return candidates.length ? { ...candidates[0], fellBack: true } : null;
}

/**
 * Loads f32 tensors of a checkpoint file into GPU tensors of the same names (optionally prefixed:
 * `m.` and `v.` for the optimizer's moments).
 */
export async function loadCheckpointTensors(
  path: string,
  tensors: ReadonlyMap<string, Tensor>,
  prefix = "",
): Promise<void> {
  const file = await openSafetensors(await fileSource(path));
  for (const [name, t] of tensors) t.write((await file.readTensor(`${prefix}${name}`)).data);
}

/**
 * The checkpoints of a run in a directory (Deno): `out/checkpoint-<step>/`, written crash-safe by
 * {@linkcode writeCheckpoint}, found by {@linkcode findLatestCheckpoint}; the side files come from
 * `modelDir`. What `train` uses when given `out` and `modelDir`.
 */
export function directoryCheckpointStore(
  out: string,
  modelDir: string,
  hooks: WriteCheckpointOptions = {},
): CheckpointStore {
  return {
    name: out,
    async sideFiles() {
      await Deno.mkdir(out, { recursive: true });
      return await readSideFiles(modelDir);
    },
    async latest() {
      const found = await findLatestCheckpoint(out);
      return found ? { id: found.dir, state: found.state, open: directoryOpener(found.dir) } : null;
    },
    save: (contents) => writeCheckpoint(out, contents, hooks),
  };
}
