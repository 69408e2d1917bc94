/**
 * `cllm train` (consistency training on Jacobi trajectories) and `cllm pretrain` (AR training from
 * scratch on a text corpus), both on train/trainer.ts.
 *
 * @module
 */

import { requestGpu } from "../core/mod.ts";
import { directoryFiles, FormatError, loadPretrained, loadTokenizer } from "../model/mod.ts";
import { directoryCheckpointStore, findLatestCheckpoint } from "../train/checkpoint.ts";
import { encodeDocuments, readGsm8k } from "../train/gsm8k_eval.ts";
import { readTrajectories } from "../train/trajectory_file.ts";
import { jacobiForcingSamples } from "../train/jacobi_forcing.ts";
import { train, type TrainItem, type TrainResult } from "../train/trainer.ts";
import { writeRandomModel } from "../train/random_init.ts";
import { CliError, numberOption, parse, required } from "./args.ts";
import { trainingProgress } from "./progress.ts";
import { modelDirectory } from "./load.ts";

const TRAIN_HELP = `Usage: deno task cllm train --model DIR --trajectories FILE --out DIR [options]

Options:
  --objective cllm|jacobi-forcing
                           cllm (default): one sample per block trajectory, the consistency loss on a
                           random state; jacobi-forcing: one packed sequence per prompt holding a noisy
                           and a clean copy of every block (train/jacobi_forcing.ts)
  --noise progressive|random
                           jacobi-forcing: how each block's noisy state is picked (default progressive)
  --noise-window W         jacobi-forcing: blocks per noise window, ratios 0..1 over it (default 4)
  --noise-context noisy|clean
                           jacobi-forcing: a noisy block's rows see the noisy copies of the blocks before
                           it (default: the reference's noise-conditioned mask) or their clean copies
  --consistency-weight X   jacobi-forcing: weight of the progressive consistency loss (default 1)
  --steps N | --epochs E   optimizer steps, or passes over the samples (default 1 epoch)
  --lr X                   peak learning rate (default 2e-5), cosine schedule, 3% warmup
  --batch B                samples per step (gradient accumulation; default 4)
  --ar-weight W            AR loss weight (default 10)
  --label-smoothing E      AR label smoothing (default 0.1)
  --loss global|local      consistency loss (default global)
  --labels teacher|gold    AR targets: the teacher output or the trajectories' labels_ids (default teacher)
  --mix FILE.jsonl         GSM8K-style problems ("question", "answer") mixed in as AR samples weighted
                           like the AR loss: fresh text keeps the model's quality where the trajectories'
                           few questions, seen once per block, would be overfitted
  --mix-count N            how many of them (default: as many as trajectory samples)
  --max-grad-norm X        gradient clipping (default 1)
  --checkpoint-every N     steps between checkpoints (default 100)
  --log-every K            steps between loss readbacks (default 10)
  --seed S                 data order and state choice (default 0)
  --resume                 continue from the latest checkpoint in --out`;

const PRETRAIN_HELP =
  `Usage: deno task cllm pretrain --corpus FILE --config JSON --tokenizer DIR --out DIR [options]

Trains a Llama from random weights with the AR loss on windows of a text corpus.
Options:
  --seq-len N              tokens per training window (default 128)
  --steps N                optimizer steps (default 1000)
  --lr X                   peak learning rate (default 1e-3)
  --batch B                windows per step (default 8)
  --checkpoint-every N, --log-every K, --seed S, --resume as for train`;

function stopOnCtrlC(): { shouldStop: () => boolean; dispose: () => void } {
  let stop = false;
  const handler = () => {
    if (stop) Deno.exit(130); // a second Ctrl-C does not wait for the checkpoint
    stop = true;
    console.error("\nstopping after this step; writing a checkpoint (Ctrl-C again to quit at once)");
  };
  Deno.addSignalListener("SIGINT", handler);
  return { shouldStop: () => stop, dispose: () => Deno.removeSignalListener("SIGINT", handler) };
}

function summarize(result: TrainResult): void {
  const last = result.history.at(-1);
  console.log(
    `${
      result.stopReason === "done"
        ? "finished"
        : result.stopReason === "nan"
        ? "stopped: loss became NaN/Inf"
        : "interrupted"
    } ` +
      `after ${result.steps} steps${
        last
          ? `; AR loss ${last.arLoss.toFixed(4)}, consistency loss ${last.consistencyLoss.toFixed(4)}, ` +
            `${last.tokensPerSecond.toFixed(0)} tokens/s, ${last.gflops.toFixed(2)} GFLOP/s`
          : ""
      }`,
  );
  if (result.checkpoint) console.log(`checkpoint: ${result.checkpoint}`);
  if (result.stopReason === "nan") {
    throw new RangeError("Training diverged (NaN/Inf loss); the last good checkpoint is kept");
  }
}

/** Runs `train`. */
export async function trainCommand(args: string[]): Promise<void> {
  const v = parse("train", args, {
    model: { type: "string" },
    trajectories: { type: "string" },
    out: { type: "string" },
    steps: { type: "string" },
    epochs: { type: "string" },
    lr: { type: "string" },
    batch: { type: "string" },
    "ar-weight": { type: "string" },
    "label-smoothing": { type: "string" },
    loss: { type: "string" },
    objective: { type: "string" },
    noise: { type: "string" },
    "noise-window": { type: "string" },
    "noise-context": { type: "string" },
    "consistency-weight": { type: "string" },
    mix: { type: "string" },
    "mix-count": { type: "string" },
    labels: { type: "string" },
    "max-grad-norm": { type: "string" },
    "checkpoint-every": { type: "string" },
    "log-every": { type: "string" },
    seed: { type: "string" },
    resume: { type: "boolean" },
  });
  if (v.help) return console.log(TRAIN_HELP);
  const modelDir = await modelDirectory(required(v, "model", "train"));
  const trajPath = required(v, "trajectories", "train");
  const out = required(v, "out", "train");
  const loss = (v.loss as string | undefined) ?? "global";
  if (loss !== "global" && loss !== "local") {
    throw new CliError(`train: --loss must be global or local, not "${loss}"`);
  }
  const objective = (v.objective as string | undefined) ?? "cllm";
  if (objective !== "cllm" && objective !== "jacobi-forcing") {
    throw new CliError(`train: --objective must be cllm or jacobi-forcing, not "${objective}"`);
  }
  const noiseKind = (v.noise as string | undefined) ?? "progressive";
  if (noiseKind !== "progressive" && noiseKind !== "random") {
    throw new CliError(`train: --noise must be progressive or random, not "${noiseKind}"`);
  }
  const noiseContext = (v["noise-context"] as string | undefined) ?? "noisy";
  if (noiseContext !== "noisy" && noiseContext !== "clean") {
    throw new CliError(`train: --noise-context must be noisy or clean, not "${noiseContext}"`);
  }
  const noise = {
    kind: noiseKind,
    window: numberOption(v, "noise-window", 4, { integer: true, min: 2 }),
    context: noiseContext,
  } as const;
  const labels = (v.labels as string | undefined) ?? "teacher";
  if (labels !== "teacher" && labels !== "gold") {
    throw new CliError(`train: --labels must be teacher or gold, not "${labels}"`);
  }
  const batch = numberOption(v, "batch", 4, { integer: true, min: 1 });
  const resume = v.resume === true;
  if (resume) {
    const found = await findLatestCheckpoint(out);
    if (found) console.error(`resuming from ${found.dir} (step ${found.state.step})`);
  }
  const gpu = await requestGpu();
  const pretrained = await loadPretrained(gpu, directoryFiles(modelDir), { maxRows: 64, dtype: "f32" });
  const skipped: string[] = [];
  const samples = readTrajectories(await Deno.readTextFile(trajPath), {
    vocabSize: pretrained.model.config.vocabSize,
    file: trajPath,
    onSkip: (message: string) => skipped.push(message),
  });
  for (const s of skipped.slice(0, 10)) console.error(`skipped: ${s}`);
  if (skipped.length > 10) console.error(`skipped ${skipped.length - 10} more lines`);
  if (samples.length === 0) {
    throw new FormatError(trajPath, "no usable trajectory records", "collect them with `cllm trajectory`");
  }
  const items: TrainItem[] = objective === "jacobi-forcing"
    ? jacobiForcingSamples(samples).map((s) => ({ kind: "jacobi-forcing", ...s }))
    : samples.map((s) => ({
      kind: "cllm",
      context: s.context,
      states: s.states,
      fixedPoint: s.fixedPoint,
      labels: s.labels,
    }));
  const arWeight = numberOption(v, "ar-weight", 10, { min: 0 });
  if (v.mix) {
    const problems = await readGsm8k(v.mix as string);
    const count = numberOption(v, "mix-count", samples.length, { integer: true, min: 0 });
    for (const tokens of encodeDocuments(pretrained.tokenizer, problems.slice(0, count))) {
      items.push({ kind: "ar", tokens, weight: arWeight });
    }
  }
  const epochs = numberOption(v, "epochs", 1, { min: 0 });
  const steps = numberOption(v, "steps", Math.max(1, Math.ceil((epochs * items.length) / batch)), {
    integer: true,
    min: 1,
  });
  const ctrlC = stopOnCtrlC();
  const report = trainingProgress("train");
  try {
    const result = await train(pretrained, items, {
      store: directoryCheckpointStore(out, modelDir),
      steps,
      lr: numberOption(v, "lr", 2e-5, { min: 0 }),
      batch,
      arWeight,
      labelSmoothing: numberOption(v, "label-smoothing", 0.1, { min: 0, max: 1 }),
      consistency: loss,
      noise,
      consistencyWeight: numberOption(v, "consistency-weight", 1, { min: 0 }),
      arTargets: labels,
      maxGradNorm: numberOption(v, "max-grad-norm", 1, { min: 0 }),
      checkpointEvery: numberOption(v, "checkpoint-every", 100, { integer: true, min: 1 }),
      logEvery: numberOption(v, "log-every", 10, { integer: true, min: 1 }),
      seed: numberOption(v, "seed", 0, { integer: true }),
      eosIds: pretrained.eosIds,
      resume,
      onLog: report.onLog,
      shouldStop: ctrlC.shouldStop,
    });
    report.done();
    console.log(`${items.length} samples (${skipped.length} lines skipped)`);
    summarize(result);
  } finally {
    ctrlC.dispose();
    pretrained.model.destroy();
    gpu.destroy();
  }
}

/** Runs `pretrain`. */
export async function pretrainCommand(args: string[]): Promise<void> {
  const v = parse("pretrain", args, {
    corpus: { type: "string" },
    config: { type: "string" },
    tokenizer: { type: "string" },
    out: { type: "string" },
    "seq-len": { type: "string" },
    steps: { type: "string" },
    lr: { type: "string" },
    batch: { type: "string" },
    "checkpoint-every": { type: "string" },
    "log-every": { type: "string" },
    seed: { type: "string" },
    resume: { type: "boolean" },
  });
  if (v.help) return console.log(PRETRAIN_HELP);
  const corpus = required(v, "corpus", "pretrain");
  const configPath = required(v, "config", "pretrain");
  const tokenizerDir = required(v, "tokenizer", "pretrain");
  const out = required(v, "out", "pretrain");
  const seqLen = numberOption(v, "seq-len", 128, { integer: true, min: 2 });
  const seed = numberOption(v, "seed", 0, { integer: true });
  let configJson: unknown;
  try {
    configJson = JSON.parse(await Deno.readTextFile(configPath));
  } catch (e) {
    throw new FormatError(configPath, `malformed JSON (${(e as Error).message})`, "fix the config file");
  }
  // The random initial weights (written once; a resumed run loads them, then its checkpoint's).
  const initDir = `${out}/init`;
  const haveInit = await Deno.stat(initDir).then(() => true, () => false);
  if (!haveInit) await writeRandomModel(initDir, configJson, configPath, tokenizerDir, seed);
  const tokenizer = await loadTokenizer(
    (name) => Deno.readTextFile(`${tokenizerDir}/${name}`).catch(() => null),
    tokenizerDir,
  );
  const ids = tokenizer.encode(await Deno.readTextFile(corpus), { addBos: false });
  const items: TrainItem[] = [];
  for (let i = 0; i + seqLen <= ids.length; i += seqLen) {
    items.push({ kind: "ar", tokens: ids.slice(i, i + seqLen) });
  }
  if (items.length === 0) {
    throw new FormatError(corpus, `the corpus has ${ids.length} tokens, fewer than --seq-len ${seqLen}`);
  }
  const gpu = await requestGpu();
  const pretrained = await loadPretrained(gpu, directoryFiles(initDir), { maxRows: 64, dtype: "f32" });
  const ctrlC = stopOnCtrlC();
  const report = trainingProgress("pretrain");
  try {
    const result = await train(pretrained, items, {
      store: directoryCheckpointStore(out, initDir),
      steps: numberOption(v, "steps", 1000, { integer: true, min: 1 }),
      lr: numberOption(v, "lr", 1e-3, { min: 0 }),
      batch: numberOption(v, "batch", 8, { integer: true, min: 1 }),
      labelSmoothing: 0,
      checkpointEvery: numberOption(v, "checkpoint-every", 100, { integer: true, min: 1 }),
      logEvery: numberOption(v, "log-every", 10, { integer: true, min: 1 }),
      seed,
      eosIds: pretrained.eosIds,
      resume: v.resume === true,
      onLog: report.onLog,
      shouldStop: ctrlC.shouldStop,
    });
    report.done();
    console.log(`${items.length} windows of ${seqLen} tokens`);
    summarize(result);
  } finally {
    ctrlC.dispose();
    pretrained.model.destroy();
    gpu.destroy();
  }
}
