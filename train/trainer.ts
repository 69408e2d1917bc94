/**
 * The training loop shared by `cllm train` (consistency + AR losses on Jacobi trajectories) and
 * `cllm pretrain` (AR only): one submit per sample, optimizer on the GPU, losses read back every
 * `logEvery` steps, atomic checkpoints that resume bit for bit.
 *
 * One training step (batch B = gradient accumulation over B samples):
 * 1. zero gradients;
 * 2. per sample: upload its sequences; AR loss forward + backward; for CLLM samples, a detached
 *    forward on the fixed point and a forward + backward on one random non-final state with the
 *    soft cross-entropy from the first wrong token on (train/losses.ts);
 * 3. global gradient norm → clip scale, then AdamW (PyTorch's formula) with the cosine schedule's lr.
 *
 * @module
 */

import { readTensors, SeededRandom, Step, Tensor } from "../core/mod.ts";
import { adamwUpdate } from "../kernels/adamw.ts";
import { fillForward } from "../kernels/fill.ts";
import { clipScale, sumSquares } from "../kernels/grad_norm.ts";
import {
  fileSource,
  llamaConfigToJson,
  openSafetensors,
  type Pretrained,
  writeSafetensors,
} from "../model/mod.ts";
import { TrainableLlama } from "../model/llama_train.ts";
import { arLabels, arLossStep, consistencyLossStep, consistencyRows, LOSS_SLOTS } from "./losses.ts";
import { lineChart } from "./loss_chart.ts";
import { cosineSchedule } from "./schedule.ts";

/** One training item: a CLLM trajectory sample, or a plain token sequence for AR training. */
export type TrainItem =
  | { kind: "cllm"; context: number[]; states: number[][]; fixedPoint: number[]; labels?: number[] }
  | { kind: "ar"; tokens: number[]; weight?: number };

/** Options of {@linkcode train}. */
export interface TrainOptions {
  /** Output directory (checkpoints and the final model). */
  out: string;
  /** Directory of the starting model (its tokenizer files are copied into checkpoints). */
  modelDir: string;
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
  /** Seed of the data order and the state choice. */
  seed?: number;
  /** Steps between checkpoints (rounded up to a multiple of logEvery). */
  checkpointEvery?: number;
  /** Steps between loss readbacks (default 10). */
  logEvery?: number;
  /** EOS ids (AR labels after the first EOS are masked). */
  eosIds: number[];
  /** Continue from the latest checkpoint in `out`. */
  resume?: boolean;
  /** Called after each readback. */
  onLog?: (entry: LogEntry, totalSteps: number) => void;
  /** Polled after each step with the steps done; true writes a checkpoint and stops (Ctrl-C). */
  shouldStop?: (step: number) => boolean;
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

/** What trainer_state.json holds. */
interface TrainerState {
  step: number;
  epoch: number;
  index: number;
  rng: number;
  history: LogEntry[];
}

/** The outcome of a training run. */
export interface TrainResult {
  /** Steps done. */
  steps: number;
  /** Every logged point. */
  history: LogEntry[];
  /** Why it stopped. */
  stopReason: "done" | "interrupted" | "nan";
  /** The last checkpoint directory written. */
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

async function writeAtomic(path: string, data: string): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, data);
  await Deno.rename(tmp, path);
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Trains `pretrained.model` in place on `items`.
 *
 * @example CLLM training
 * ```ts ignore
 * const result = await train(pretrained, samples, { out: "runs/cllm", modelDir: "models/base", steps: 100,
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
  const cfg = model.config;
  if (items.length === 0) throw new RangeError("No training samples");
  const logEvery = Math.max(1, options.logEvery ?? 10);
  const checkpointEvery = Math.ceil(Math.max(1, options.checkpointEvery ?? 100) / logEvery) * logEvery;
  const arWeight = options.arWeight ?? 10;
  const smoothing = options.labelSmoothing ?? 0.1;
  const seed = options.seed ?? 0;
  const eos = options.eosIds;
  const maxSeq = Math.max(
    ...items.map((it) => it.kind === "ar" ? it.tokens.length : it.context.length + it.fixedPoint.length),
    ...items.map((it) => it.kind === "cllm" && it.labels ? it.labels.length : 0),
  );
  const schedule = cosineSchedule({
    baseLr: options.lr,
    warmupSteps: Math.round((options.warmupRatio ?? 0.03) * options.steps),
    totalSteps: options.steps,
  });
  await Deno.mkdir(options.out, { recursive: true });

  // GPU state: trainable model, optimizer moments, loss accumulators, token/label buffers.
  const trainable = new TrainableLlama(model, maxSeq);
  const names = [...model.weights.keys()];
  const m = new Map(
    names.map((n) => [n, new Tensor(gpu, model.weights.get(n)!.shape, "f32", `adam m ${n}`)]),
  );
  const v = new Map(
    names.map((n) => [n, new Tensor(gpu, model.weights.get(n)!.shape, "f32", `adam v ${n}`)]),
  );
  const loss = new Tensor(gpu, [4], "f32", "loss accumulators");
  const norm = new Tensor(gpu, [4], "f32", "grad norm"); // [0] sum of squares, [1] clip scale, [2] norm
  const tokens = new Tensor(gpu, [3 * maxSeq], "u32", "train tokens");
  const labels = new Tensor(gpu, [maxSeq], "u32", "train labels");
  const V = cfg.vocabSize;
  const buffers = {
    tokens,
    labels,
    logits: new Tensor(gpu, [maxSeq, V], "f32", "train logits"),
    targetLogits: new Tensor(gpu, [maxSeq, V], "f32", "target logits"),
    loss,
  };
  const params = names.reduce((a, n) => a + model.weights.get(n)!.size, 0);

  let state: TrainerState = { step: 0, epoch: 0, index: 0, rng: seed >>> 0, history: [] };
  let lastCheckpoint: string | null = null;
  if (options.resume) {
    const latest = `${options.out}/latest.json`;
    if (await exists(latest)) {
      const dir = JSON.parse(await Deno.readTextFile(latest)).checkpoint as string;
      state = JSON.parse(await Deno.readTextFile(`${options.out}/${dir}/trainer_state.json`));
      await loadOptimizer(`${options.out}/${dir}`, m, v);
      lastCheckpoint = `${options.out}/${dir}`;
      // The model passed in must be the checkpoint's weights (the CLI loads it from there).
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
  fillForward(zeroLoss, loss, 0);
  zeroLoss.submit();

  try {
    while (state.step < options.steps) {
      // 1-2. Gradients of B samples, one submit each (their uploads must not overlap in time).
      for (let b = 0; b < options.batch; b++) {
        const item = nextItem();
        const step = new Step(gpu, "train sample");
        if (b === 0) trainable.zeroGrads(step);
        if (item.kind === "ar") {
          const lab = arLabels(item.tokens, eos);
          tokens.write(Uint32Array.from(item.tokens));
          labels.write(lab);
          const labeled = lab.filter((x) => x !== 0xffffffff).length;
          arLossStep(step, trainable, buffers, {
            offset: 0,
            length: item.tokens.length,
            labeledRows: labeled,
            weight: item.weight ?? 1,
            smoothing,
          });
          windowRows += item.tokens.length;
          windowFlops += 6 * params * item.tokens.length;
        } else {
          const target = [...item.context, ...item.fixedPoint];
          const arSeq = options.arTargets === "gold" && item.labels ? item.labels : target;
          const lab = arLabels(arSeq, eos);
          tokens.write(Uint32Array.from(arSeq), 0);
          labels.write(lab);
          const labeled = lab.filter((x) => x !== 0xffffffff).length;
          arLossStep(step, trainable, buffers, {
            offset: 0,
            length: arSeq.length,
            labeledRows: labeled,
            weight: arWeight,
            smoothing,
          });
          windowRows += arSeq.length;
          windowFlops += 6 * params * arSeq.length;
          // A random non-final state (a trajectory with only its fixed point has none: skip).
          if (item.states.length >= 2) {
            const i = Math.floor(rng.next() * (item.states.length - 1));
            const goal = options.consistency === "local" ? item.states[i + 1] : item.fixedPoint;
            const goalSeq = [...item.context, ...goal];
            const stateSeq = [...item.context, ...item.states[i]];
            const rows = consistencyRows(stateSeq, goalSeq, eos);
            if (rows) {
              tokens.write(Uint32Array.from(goalSeq), maxSeq);
              tokens.write(Uint32Array.from(stateSeq), 2 * maxSeq);
              consistencyLossStep(step, trainable, buffers, {
                stateOffset: 2 * maxSeq,
                targetOffset: maxSeq,
                length: stateSeq.length,
                first: rows.first,
                last: rows.last,
              });
              windowRows += stateSeq.length;
              windowFlops += 8 * params * stateSeq.length;
            }
          }
        }
        step.submit();
      }
      // 3. Clip and update.
      const lr = schedule(state.step);
      const opt = new Step(gpu, "optimizer");
      fillForward(opt, norm, 0);
      sumSquares(opt, [...trainable.grads.values()], norm, { slot: 0 });
      clipScale(opt, norm, norm, {
        maxNorm: options.maxGradNorm ?? 1,
        sumSlot: 0,
        scaleSlot: 1,
        normSlot: 2,
      });
      for (const name of names) {
        adamwUpdate(
          opt,
          model.weights.get(name)!,
          trainable.grads.get(name)!,
          m.get(name)!,
          v.get(name)!,
          norm,
          {
            lr,
            weightDecay: options.weightDecay ?? 0,
            t: state.step + 1,
            scaleSlot: 1,
          },
        );
      }
      opt.submit();
      state.step++;
      state.rng = rng.state;

      const interrupted = options.shouldStop?.(state.step) ?? false;
      if (state.step % logEvery === 0 || state.step === options.steps || interrupted) {
        const [l] = await readTensors(gpu, [loss]);
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
        fillForward(z, loss, 0);
        z.submit();
        windowStart = performance.now();
        windowRows = 0;
        windowFlops = 0;
        if (state.step % checkpointEvery === 0 || state.step === options.steps || interrupted) {
          lastCheckpoint = await writeCheckpoint(pretrained, options, state, m, v);
        }
        if (interrupted) {
          stopReason = "interrupted";
          break;
        }
      }
    }
  } finally {
    trainable.destroy();
    for (
      const t of [
        ...m.values(),
        ...v.values(),
        loss,
        norm,
        tokens,
        labels,
        buffers.logits,
        buffers.targetLogits,
      ]
    ) {
      t.destroy();
    }
  }
  return { steps: state.step, history: state.history, stopReason, checkpoint: lastCheckpoint };
}

/**
 * Writes `out/checkpoint-<step>/` (HF layout + optimizer.safetensors + trainer_state.json + loss
 * curve SVG) through a temporary directory and a rename, then points `out/latest.json` at it and
 * removes older checkpoints. The final model is the last checkpoint's directory.
 */
async function writeCheckpoint(
  pretrained: Pretrained,
  options: TrainOptions,
  state: TrainerState,
  m: Map<string, Tensor>,
  v: Map<string, Tensor>,
): Promise<string> {
  const model = pretrained.model;
  const names = [...model.weights.keys()];
  const all = await readTensors(model.gpu, [
    ...names.map((n) => model.weights.get(n)!),
    ...names.map((n) => m.get(n)!),
    ...names.map((n) => v.get(n)!),
  ]);
  const name = `checkpoint-${state.step}`;
  const tmp = `${options.out}/.${name}.tmp`;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await Deno.mkdir(tmp, { recursive: true });
  const tensor = (n: string, i: number) => ({
    name: n,
    dtype: "F32" as const,
    shape: [...model.weights.get(names[i % names.length])!.shape],
    data: all[i] as Float32Array,
  });
  await writeSafetensors(`${tmp}/model.safetensors`, names.map((n, i) => tensor(n, i)));
  await writeSafetensors(`${tmp}/optimizer.safetensors`, [
    ...names.map((n, i) => tensor(`m.${n}`, names.length + i)),
    ...names.map((n, i) => tensor(`v.${n}`, 2 * names.length + i)),
  ]);
  await Deno.writeTextFile(
    `${tmp}/config.json`,
    JSON.stringify(llamaConfigToJson(model.config), null, 2) + "\n",
  );
  for (const f of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
    if (await exists(`${options.modelDir}/${f}`)) {
      await Deno.copyFile(`${options.modelDir}/${f}`, `${tmp}/${f}`);
    }
  }
  await Deno.writeTextFile(`${tmp}/trainer_state.json`, JSON.stringify(state, null, 2) + "\n");
  await Deno.writeTextFile(
    `${tmp}/loss.svg`,
    lineChart("training loss", state.history.map((h) => h.step), [
      { label: "AR (weighted)", values: state.history.map((h) => h.arLoss) },
      { label: "consistency", values: state.history.map((h) => h.consistencyLoss) },
    ]),
  );
  const final = `${options.out}/${name}`;
  await Deno.remove(final, { recursive: true }).catch(() => {});
  await Deno.rename(tmp, final);
  await writeAtomic(
    `${options.out}/latest.json`,
    JSON.stringify({ checkpoint: name, step: state.step }) + "\n",
  );
  for await (const e of Deno.readDir(options.out)) {
    if (e.isDirectory && e.name.startsWith("checkpoint-") && e.name !== name) {
      await Deno.remove(`${options.out}/${e.name}`, { recursive: true });
    }
  }
  return final;
}

/** Loads AdamW moments from a checkpoint's optimizer.safetensors. */
async function loadOptimizer(dir: string, m: Map<string, Tensor>, v: Map<string, Tensor>): Promise<void> {
  const file = await openSafetensors(await fileSource(`${dir}/optimizer.safetensors`));
  for (const [name, t] of m) t.write((await file.readTensor(`m.${name}`)).data);
  for (const [name, t] of v) t.write((await file.readTensor(`v.${name}`)).data);
}
