/**
 * Where training checkpoints go, as an interface, so that training runs wherever the model does: a
 * directory in Deno (train/checkpoint.ts, crash-safe), memory in a browser tab
 * ({@linkcode memoryCheckpointStore}), or any sink a page provides (OPFS, IndexedDB, a download).
 * Also the checkpoint's contents and the trainer's state, which every store keeps alike. Nothing
 * here touches a file system.
 *
 * @module
 */

import type { Tensor } from "../core/mod.ts";
import { bufferSource, type OpenByName } from "../model/byte_source.ts";
import { type LlamaConfig, llamaConfigToJson } from "../model/config.ts";
import { encodeSafetensors, openSafetensors } from "../model/safetensors.ts";

/** Files copied from the starting model into every checkpoint (tokenizer.json is required). */
export const MODEL_SIDE_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "generation_config.json",
] as const;

/** The files a checkpoint must hold to be loaded as a model and resumed from. */
export const CHECKPOINT_REQUIRED = [
  "model.safetensors",
  "optimizer.safetensors",
  "config.json",
  "tokenizer.json",
  "trainer_state.json",
] as const;

/** The trainer's position, saved with every checkpoint so a resumed run continues bit for bit. */
export interface TrainerState {
  /** Optimizer steps done. */
  step: number;
  /** Epoch of the data order. */
  epoch: number;
  /** Index of the next item in the epoch's order. */
  index: number;
  /** State of the sample-choice PRNG. */
  rng: number;
  /** Every logged point so far. */
  history: LogEntry[];
}

/** One logged point. */
export interface LogEntry {
  /** Optimizer steps done. */
  step: number;
  /** Mean weighted AR loss per sample over the logged steps. */
  arLoss: number;
  /** Mean consistency loss per sample over the logged steps. */
  consistencyLoss: number;
  /** Learning rate of the last step. */
  lr: number;
  /** Training tokens (forward rows with gradient) per second over the logged steps. */
  tokensPerSecond: number;
  /** Estimated model GFLOP/s (6 × params per gradient row, 2 × params per detached row). */
  gflops: number;
}

/** One named f32 tensor as read back from the GPU. */
export interface HostTensor {
  /** Tensor name. */
  name: string;
  /** Shape. */
  shape: number[];
  /** Values. */
  data: Float32Array;
}

/** Everything one checkpoint holds. */
export interface CheckpointContents {
  /** Model weights (names as in the checkpoint format). */
  weights: HostTensor[];
  /** AdamW moments, named `m.<weight>` and `v.<weight>`. */
  optimizer: HostTensor[];
  /** The model's configuration. */
  config: LlamaConfig;
  /** The starting model's side files (tokenizer...) by file name, read when training started. */
  sideFiles: ReadonlyMap<string, Uint8Array>;
  /** The trainer's position. */
  state: TrainerState;
  /** The loss curve as SVG. */
  lossChart: string;
}

/** A checkpoint a store can resume from. */
export interface StoredCheckpoint {
  /** Its name in the store (a directory, a key). */
  id: string;
  /** The trainer's position saved in it. */
  state: TrainerState;
  /** Its files, for ranged reads (model.safetensors, optimizer.safetensors...). */
  open: OpenByName;
}

/** Where a training run's checkpoints go. */
export interface CheckpointStore {
  /** A name for messages. */
  readonly name: string;
  /** The starting model's side files (tokenizer.json required), copied into every checkpoint. */
  sideFiles(): Promise<Map<string, Uint8Array>>;
  /** The newest complete checkpoint, or null. */
  latest(): Promise<StoredCheckpoint | null>;
  /** Saves a checkpoint completely before it can be found by `latest`; returns its id. */
  save(contents: CheckpointContents): Promise<string>;
}

/**
 * A checkpoint's files, as a model directory holds them: model.safetensors and optimizer.safetensors
 * (f32), config.json, the side files, trainer_state.json and loss.svg.
 */
export function checkpointFiles(contents: CheckpointContents): Map<string, Uint8Array> {
  const text = (s: string) => new TextEncoder().encode(s);
  const files = new Map<string, Uint8Array>([
    ["model.safetensors", encodeSafetensors(contents.weights.map((t) => ({ ...t, dtype: "F32" as const })))],
    [
      "optimizer.safetensors",
      encodeSafetensors(contents.optimizer.map((t) => ({ ...t, dtype: "F32" as const }))),
    ],
    ["config.json", text(JSON.stringify(llamaConfigToJson(contents.config), null, 2) + "\n")],
  ]);
  for (const [name, bytes] of contents.sideFiles) files.set(name, bytes);
  files.set("trainer_state.json", text(JSON.stringify(contents.state, null, 2) + "\n"));
  files.set("loss.svg", text(contents.lossChart));
  return files;
}

/**
 * Checkpoints kept in memory (a browser tab has no directory): the newest `keep` (default 1), each
 * handed to `onSave` as its files, e.g. to put them in OPFS or offer them as a download.
 *
 * @example Training in a page
 * ```ts ignore
 * const store = memoryCheckpointStore(new Map([["tokenizer.json", tokenizerBytes]]), {
 *   onSave: (id, files) => console.log(id, [...files.keys()]),
 * });
 * await train(pretrained, items, { store, steps: 50, lr: 1e-4, eosIds: [2] });
 * ```
 */
export function memoryCheckpointStore(
  sideFiles: ReadonlyMap<string, Uint8Array>,
  options: { keep?: number; onSave?: (id: string, files: ReadonlyMap<string, Uint8Array>) => void } = {},
): CheckpointStore {
  if (!sideFiles.has("tokenizer.json")) {
    throw new RangeError("A checkpoint store needs tokenizer.json among its side files");
  }
  const saved: { id: string; state: TrainerState; files: Map<string, Uint8Array> }[] = [];
  return {
    name: "memory",
    sideFiles: () => Promise.resolve(new Map(sideFiles)),
    latest() {
      const last = saved.at(-1);
      if (!last) return Promise.resolve(null);
      const open: OpenByName = (name) => {
        const bytes = last.files.get(name);
        return Promise.resolve(bytes ? bufferSource(`${last.id}/${name}`, bytes) : null);
      };
      return Promise.resolve({ id: last.id, state: structuredClone(last.state), open });
    },
    save(contents) {
      const id = `checkpoint-${contents.state.step}`;
      const files = checkpointFiles(contents);
      saved.push({ id, state: structuredClone(contents.state), files });
      saved.splice(0, Math.max(0, saved.length - (options.keep ?? 1)));
      options.onSave?.(id, files);
      return Promise.resolve(id);
    },
  };
}

/**
 * Loads f32 tensors of a stored checkpoint's `file` into GPU tensors of the same names (optionally
 * prefixed: `m.` and `v.` for the optimizer's moments).
 */
export async function loadStoredTensors(
  open: OpenByName,
  file: string,
  tensors: ReadonlyMap<string, Tensor>,
  prefix = "",
): Promise<void> {
  const source = await open(file);
  if (!source) throw new Error(`The checkpoint has no ${file}`);
  const st = await openSafetensors(source);
  for (const [name, t] of tensors) t.write((await st.readTensor(`${prefix}${name}`)).data);
}
