/**
 * The training loop shared by `cllm train` (consistency + AR losses on Jacobi trajectories),
 * `cllm pretrain` (AR only) and the demo's model factory: one submit per sample, the optimizer on
 * the GPU (train/train_step.ts), losses read back every `logEvery` steps, crash-safe checkpoints
 * that resume bit for bit (train/checkpoint.ts).
 *
 * One training step (batch B = gradient accumulation over B samples):
 * 1. per sample: `TrainingStep.recordSample` (zero gradients on the first; AR loss; consistency loss);
 * 2. `TrainingStep.recordUpdate` with the cosine schedule's learning rate;
 * 3. every `logEvery` steps: read the losses back, log, and every `checkpointEvery` steps write a
 *    checkpoint.
 *
 * @module
 */

import { readTensors, SeededRandom, Step } from "../core/mod.ts";
import type { Pretrained } from "../model/pretrained.ts";
import {
  type CheckpointContents,
  type CheckpointStore,
  loadStoredTensors,
  type LogEntry,
  type TrainerState,
} from "./checkpoint_store.ts";
import { LOSS_SLOTS } from "./losses.ts";
import { lineChart } from "./loss_chart.ts";
import { cosineSchedule } from "./schedule.ts";
import { type NoiseSchedule, packedLength } from "./jacobi_forcing.ts";
import { TrainingStep, type TrainItem } from "./train_step.ts";

export type { TrainItem } from "./train_step.ts";
export type { LogEntry } from "./checkpoint_store.ts";

/** Options of {@linkcode train}. */
export interface TrainOptions {
  /**
   * Where checkpoints go and come back from (train/checkpoint_store.ts): a directory in Deno
   * (`directoryCheckpointStore(out, modelDir)`, train/checkpoint.ts), `memoryCheckpointStore` in a
   * browser tab, or any store of the caller's.
   */
  store: CheckpointStore;
  /** Optimizer steps. */
  steps: number;
  /** Peak learning rate. */
  lr: number;
  /** Samples per step (gradient accumulation). */
  batch: number;
  /** Warmup as a fraction of the steps (default 0.03). */
  warmupRatio?: number;
  /** AdamW weight decay (default 0). */
  weightDecay?: number;
  /** Global gradient-norm clip (default 1). */
  maxGradNorm?: number;
  /** AR loss weight (default 10, as the reference). */
  arWeight?: number;
  /** Label smoothing of the AR loss (default 0.1). */
  labelSmoothing?: number;
  /** Consistency loss: "global" (state → fixed point) or "local" (state → next state). */
  consistency?: "global" | "local";
  /** AR targets for CLLM samples: the teacher (context ⊕ fixed point) or gold labels. */
  arTargets?: "teacher" | "gold";
  /** Noise schedule of Jacobi Forcing items (default: progressive, window 4). */
  noise?: NoiseSchedule;
  /** Weight of the progressive consistency loss of Jacobi Forcing items (default 1). */
  consistencyWeight?: number;
  /** Seed of the data order and the state choice. */
  seed?: number;
  /** Steps between checkpoints (rounded up to a multiple of logEvery). */
  checkpointEvery?: number;
  /** Steps between loss readbacks (default 10). */
  logEvery?: number;
  /** EOS ids (AR labels after the first EOS are masked). */
  eosIds: number[];
  /**
   * Continue from the newest complete checkpoint in `out` (train/checkpoint.ts), if there is one:
   * its weights replace the model's, its optimizer state and trainer position are restored.
   */
  resume?: boolean;
  /** Called after each readback. */
  onLog?: (entry: LogEntry, totalSteps: number) => void;
  /** Polled after each step with the steps done; true writes a checkpoint and stops (Ctrl-C). */
  shouldStop?: (step: number) => boolean;
}

/** The outcome of a training run. */
export interface TrainResult {
  /** Steps done. */
  steps: number;
  /** Every logged point. */
  history: LogEntry[];
  /** Why it stopped. */
  stopReason: "done" | "interrupted" | "nan";
  /** The last checkpoint written: its directory, or its id in the store. */
  checkpoint: string | null;
}

/** The data order of an epoch: a permutation seeded by (seed, epoch). */
function permutation(n: number, seed: number, epoch: number): number[] {
  const rng = new SeededRandom((seed * 1000003 + epoch * 7919) >>> 0);
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

/**
 * Trains `pretrained.model` in place on `items`.
 *
 * @example CLLM training
 * ```ts ignore
 * const store = directoryCheckpointStore("runs/cllm", "models/base");
 * const result = await train(pretrained, samples, { store, steps: 100,
 *   lr: 2e-5, batch: 4, eosIds: pretrained.eosIds });
 * ```
 */
export async function train(
  pretrained: Pretrained,
  items: readonly TrainItem[],
  options: TrainOptions,
): Promise<TrainResult> {
  const model = pretrained.model;
  const gpu = model.gpu;
  if (items.length === 0) throw new RangeError("No training samples");
  const logEvery = Math.max(1, options.logEvery ?? 10);
  const checkpointEvery = Math.ceil(Math.max(1, options.checkpointEvery ?? 100) / logEvery) * logEvery;
  const arWeight = options.arWeight ?? 10;
  const smoothing = options.labelSmoothing ?? 0.1;
  const seed = options.seed ?? 0;
  const eos = options.eosIds;
  const maxSeq = Math.max(
    ...items.map((it) =>
      it.kind === "ar"
        ? it.tokens.length
        : it.kind === "jacobi-forcing"
        ? packedLength(it)
        : it.context.length + it.fixedPoint.length
    ),
    ...items.map((it) => it.kind === "cllm" && it.labels ? it.labels.length : 0),
  );
  const schedule = cosineSchedule({
    baseLr: options.lr,
    warmupSteps: Math.round((options.warmupRatio ?? 0.03) * options.steps),
    totalSteps: options.steps,
  });
  const store = options.store;
  const sideFiles = await store.sideFiles();
  const losses = {
    arWeight,
    labelSmoothing: smoothing,
    consistency: options.consistency ?? "global",
    arTargets: options.arTargets ?? "teacher",
    eosIds: eos,
    noise: options.noise,
    consistencyWeight: options.consistencyWeight,
  } as const;

  const ts = new TrainingStep(model, maxSeq);
  let state: TrainerState = { step: 0, epoch: 0, index: 0, rng: seed >>> 0, history: [] };
  let lastCheckpoint: string | null = null;
  try {
    if (options.resume) {
      const found = await store.latest();
      if (found) {
        state = found.state;
        await loadStoredTensors(found.open, "model.safetensors", model.weights);
        await loadStoredTensors(found.open, "optimizer.safetensors", ts.m, "m.");
        await loadStoredTensors(found.open, "optimizer.safetensors", ts.v, "v.");
        lastCheckpoint = found.id;
      }
    }
    const rng = new SeededRandom(state.rng);
    let order = permutation(items.length, seed, state.epoch);
    const nextItem = (): TrainItem => {
      if (state.index >= order.length) {
        state.epoch++;
        state.index = 0;
        order = permutation(items.length, seed, state.epoch);
      }
      return items[order[state.index++]];
    };

    let stopReason: TrainResult["stopReason"] = "done";
    let windowStart = performance.now();
    let windowRows = 0;
    let windowFlops = 0;
    const zeroLoss = new Step(gpu, "zero loss");
    ts.recordZeroLoss(zeroLoss);
    zeroLoss.submit();

    while (state.step < options.steps) {
      // 1. Gradients of B samples, one submit each (their uploads must not overlap in time).
      for (let b = 0; b < options.batch; b++) {
        const step = new Step(gpu, "train sample");
        try {
          const work = ts.recordSample(step, nextItem(), b === 0, losses, rng);
          windowRows += work.rows;
          windowFlops += work.flops;
        } catch (e) {
          step.abandon();
          throw e;
        }
        step.submit();
      }
      // 2. Clip and update.
      const lr = schedule(state.step);
      const opt = new Step(gpu, "optimizer");
      ts.recordUpdate(opt, {
        lr,
        t: state.step + 1,
        maxGradNorm: options.maxGradNorm ?? 1,
        weightDecay: options.weightDecay ?? 0,
      });
      opt.submit();
      state.step++;
      state.rng = rng.state;

      // 3. Log and checkpoint.
      const interrupted = options.shouldStop?.(state.step) ?? false;
      if (state.step % logEvery !== 0 && state.step !== options.steps && !interrupted) continue;
      const [l] = await readTensors(gpu, [ts.loss]);
      const seconds = (performance.now() - windowStart) / 1000;
      const stepsInWindow = state.step - (state.history.at(-1)?.step ?? 0);
      const samples = Math.max(1, stepsInWindow * options.batch);
      const entry: LogEntry = {
        step: state.step,
        arLoss: l[LOSS_SLOTS.ar] / samples,
        consistencyLoss: l[LOSS_SLOTS.consistency] / samples,
        lr,
        tokensPerSecond: windowRows / seconds,
        gflops: windowFlops / seconds / 1e9,
      };
      if (!Number.isFinite(entry.arLoss) || !Number.isFinite(entry.consistencyLoss)) {
        stopReason = "nan";
        break; // the last checkpoint (written after finite losses only) is kept as it is
      }
      state.history.push(entry);
      options.onLog?.(entry, options.steps);
      const z = new Step(gpu, "zero loss");
      ts.recordZeroLoss(z);
      z.submit();
      windowStart = performance.now();
      windowRows = 0;
      windowFlops = 0;
      if (state.step % checkpointEvery === 0 || state.step === options.steps || interrupted) {
        lastCheckpoint = await store.save(await checkpointContents(pretrained, ts, sideFiles, state));
      }
      if (interrupted) {
        stopReason = "interrupted";
        break;
      }
    }
    return { steps: state.step, history: state.history, stopReason, checkpoint: lastCheckpoint };
  } finally {
    ts.destroy();
  }
}

/** Reads the weights and optimizer state back and assembles a checkpoint. */
async function checkpointContents(
  pretrained: Pretrained,
  ts: TrainingStep,
  sideFiles: ReadonlyMap<string, Uint8Array>,
  state: TrainerState,
): Promise<CheckpointContents> {
  const model = pretrained.model;
  const names = ts.names;
  const all = await readTensors(model.gpu, [
    ...names.map((n) => model.weights.get(n)!),
    ...names.map((n) => ts.m.get(n)!),
    ...names.map((n) => ts.v.get(n)!),
  ]);
  const tensor = (name: string, i: number) => ({
    name,
    shape: [...model.weights.get(names[i % names.length])!.shape],
    data: all[i] as Float32Array,
  });
  const history = state.history;
  return {
    weights: names.map((n, i) => tensor(n, i)),
    optimizer: [
      ...names.map((n, i) => tensor(`m.${n}`, names.length + i)),
      ...names.map((n, i) => tensor(`v.${n}`, 2 * names.length + i)),
    ],
    config: model.config,
    sideFiles,
    state: structuredClone(state),
    lossChart: lineChart("training loss", history.map((h) => h.step), [
      { label: "AR (weighted)", values: history.map((h) => h.arLoss) },
      { label: "consistency", values: history.map((h) => h.consistencyLoss) },
    ]),
  };
}
