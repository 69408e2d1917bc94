/**
 * `deno task make-models`: makes the embedded demo models from nothing, reproducibly (fixed seeds),
 * through the library's public API (mod.ts):
 * 1. generate GSM8K-style problems (train and held-out splits share none) — demo/gsm_synth.ts;
 * 2. train a BPE tokenizer on the training corpus — demo/bpe.ts;
 * 3. pretrain a small Llama from random weights on the problems (AR loss) — `train`;
 * 4. collect its Jacobi trajectories on training questions — `collectTrajectoryFile`;
 * 5. consistency-train it into the CLLM — `train`;
 * 6. train the same base on the same trajectories with the Jacobi Forcing objective (packed noisy
 *    and clean blocks, train/jacobi_forcing.ts) — `train`;
 * 7. write `demo/models/<name>-base`, `<name>-cllm` and `<name>-jf` (HF layout, f16 safetensors,
 *    `saveModel`) with model cards holding the recipe and the figures measured on held-out problems.
 * `--base DIR` / `--cllm DIR` take an existing model instead of making it (that stage is skipped and
 * the folder is not rewritten): `--base demo/models/gsm-tiny-base --cllm demo/models/gsm-tiny-cllm`
 * adds the Jacobi Forcing model to the published pair.
 * Intermediate files live in `--work` (default .make-models/, git-ignored); each stage is skipped
 * when its output exists, and the training and trajectory stages resume from their checkpoints
 * and files, so an interrupted run continues.
 *
 * @module
 */

import {
  type CollectPrompt,
  collectTrajectoryFile,
  directoryCheckpointStore,
  directoryFiles,
  encodeDocuments,
  findLatestCheckpoint,
  formatPrompt,
  jacobiForcingSamples,
  loadPretrained,
  loadTokenizer,
  readGsm8k,
  readTrajectories,
  requestGpu,
  saveModel,
  train,
  type TrainItem,
  writeRandomModel,
} from "../mod.ts";
import { numberOption, parse } from "../cli/args.ts";
import { Progress, trainingProgress } from "../cli/progress.ts";
import { trainBpe, writeTokenizer } from "./bpe.ts";
import { DEMO_MAX_VALUE } from "./demo_models.ts";
import { compareBaseAndCllm, type Comparison, standardRuns } from "./gsm8k_compare.ts";
import { generateProblems, problemsToJsonl } from "./gsm_synth.ts";

const HELP =
  `Usage: deno task make-models [--name gsm-tiny] [--work .make-models] [--out demo/models] [options]

Options:
  --problems N           training problems (default 60000)
  --max-value N          largest number in a problem (default 50: arithmetic a 1M-parameter model learns here)
  --pretrain-steps N     AR steps of 8 problems, one per sequence (default 4000)
  --pretrain-lr X        their peak learning rate (default 2e-3)
  --trajectories N       training questions whose Jacobi trajectories are collected (default 1200)
  --cllm-epochs E        consistency-training epochs (default 6)
  --cllm-lr X            consistency-training peak learning rate (default 5e-4)
  --cllm-ar-weight W     weight of its AR loss against the consistency loss (default 2; the reference: 10)
  --jf-epochs E          Jacobi Forcing epochs over the prompts (default 5)
  --jf-lr X              its peak learning rate (default 5e-4)
  --jf-ar-weight W       weight of its AR loss (default: --cllm-ar-weight; the reference: 10)
  --jf-consistency-weight W
                         weight of its consistency loss (default 1; the reference: about 0.3 here)
  --noise progressive|random
                         its noise schedule (default progressive)
  --noise-window W       blocks per noise window (default 4)
  --noise-context noisy|clean
                         what a noisy block sees before it: the earlier noisy blocks (default, the
                         reference's mask) or the clean ones (CLLM's context)
  --base DIR             use this base model instead of pretraining one (not rewritten)
  --cllm DIR             use this CLLM instead of training one (not rewritten)
  --block N              Jacobi block size (default 16)
  --seed S               everything is seeded from it (default 1)`;

/** Problems per pretraining step. */
const PRETRAIN_BATCH = 8;

/** The demo model's architecture: sized so pretraining takes about an hour on llvmpipe. */
export const DEMO_CONFIG = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_size: 128,
  intermediate_size: 352,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 512,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: true,
  hidden_act: "silu",
  bos_token_id: 1,
  eos_token_id: 2,
};

const exists = (path: string): Promise<boolean> => Deno.stat(path).then(() => true, () => false);

/** The newest complete checkpoint of a training run's folder. */
async function latest(out: string): Promise<string> {
  const found = await findLatestCheckpoint(out);
  if (!found) {
    throw new Error(`No complete checkpoint in ${out}; delete the folder to start that stage again`);
  }
  return found.dir;
}

/** Runs `make-models`. */
export async function makeModelsCommand(args: string[]): Promise<void> {
  const v = parse("make-models", args, {
    name: { type: "string" },
    work: { type: "string" },
    out: { type: "string" },
    "pretrain-steps": { type: "string" },
    "pretrain-lr": { type: "string" },
    problems: { type: "string" },
    "max-value": { type: "string" },
    "cllm-epochs": { type: "string" },
    "cllm-lr": { type: "string" },
    "cllm-ar-weight": { type: "string" },
    trajectories: { type: "string" },
    block: { type: "string" },
    seed: { type: "string" },
    "jf-epochs": { type: "string" },
    "jf-lr": { type: "string" },
    "jf-ar-weight": { type: "string" },
    "jf-consistency-weight": { type: "string" },
    noise: { type: "string" },
    "noise-window": { type: "string" },
    "noise-context": { type: "string" },
    base: { type: "string" },
    cllm: { type: "string" },
  });
  if (v.help) return console.log(HELP);
  const name = (v.name as string | undefined) ?? "gsm-tiny";
  const work = (v.work as string | undefined) ?? ".make-models";
  const outRoot = (v.out as string | undefined) ?? new URL("./models", import.meta.url).pathname;
  const seed = numberOption(v, "seed", 1, { integer: true });
  const pretrainSteps = numberOption(v, "pretrain-steps", 4000, { integer: true, min: 1 });
  const pretrainLr = numberOption(v, "pretrain-lr", 2e-3, { min: 0 });
  const problemCount = numberOption(v, "problems", 60000, { integer: true, min: 10 });
  const maxValue = numberOption(v, "max-value", DEMO_MAX_VALUE, { integer: true, min: 10 });
  const cllmEpochs = numberOption(v, "cllm-epochs", 6, { min: 0 });
  const cllmLr = numberOption(v, "cllm-lr", 5e-4, { min: 0 });
  const cllmArWeight = numberOption(v, "cllm-ar-weight", 2, { min: 0 });
  const trajectoryPrompts = numberOption(v, "trajectories", 1200, { integer: true, min: 1 });
  const block = numberOption(v, "block", 16, { integer: true, min: 2, max: 64 });
  const jfEpochs = numberOption(v, "jf-epochs", 5, { min: 0 });
  const jfLr = numberOption(v, "jf-lr", 5e-4, { min: 0 });
  const jfArWeight = numberOption(v, "jf-ar-weight", cllmArWeight, { min: 0 });
  const jfConsistencyWeight = numberOption(v, "jf-consistency-weight", 1, { min: 0 });
  const noiseKind = (v.noise as string | undefined) ?? "progressive";
  if (noiseKind !== "progressive" && noiseKind !== "random") {
    throw new Error(`make-models: --noise must be progressive or random, not "${noiseKind}"`);
  }
  const noiseContext = (v["noise-context"] as string | undefined) ?? "noisy";
  if (noiseContext !== "noisy" && noiseContext !== "clean") {
    throw new Error(`make-models: --noise-context must be noisy or clean, not "${noiseContext}"`);
  }
  const noise = {
    kind: noiseKind,
    window: numberOption(v, "noise-window", 4, { integer: true, min: 2 }),
    context: noiseContext,
  } as const;
  const givenBase = v.base as string | undefined;
  const givenCllm = v.cllm as string | undefined;
  await Deno.mkdir(work, { recursive: true });
  // Seconds each stage took when it last ran, kept across interrupted and resumed runs so that the
  // model card can say how long the whole recipe takes (a skipped stage keeps its earlier time).
  const timingsFile = `${work}/timings.json`;
  const timings: Record<string, number> = (await exists(timingsFile))
    ? JSON.parse(await Deno.readTextFile(timingsFile))
    : {};
  const stage = async (label: string, fn: () => Promise<void>) => {
    const t0 = performance.now();
    console.log(`\n== ${label}`);
    await fn();
    const seconds = (performance.now() - t0) / 1000;
    if (seconds > 2 || !(label in timings)) {
      timings[label] = Math.round(seconds);
      await Deno.writeTextFile(timingsFile, JSON.stringify(timings, null, 2) + "\n");
    }
  };

  // 1-2. Data and tokenizer.
  await stage("data and tokenizer", async () => {
    if (await exists(`${work}/tokenizer/tokenizer.json`)) return;
    const trainSet = generateProblems({ seed, count: problemCount, split: "train", maxValue });
    const heldout = generateProblems({ seed: seed + 1, count: 200, split: "heldout", maxValue });
    await Deno.writeTextFile(`${work}/train.jsonl`, problemsToJsonl(trainSet));
    await Deno.writeTextFile(`${work}/heldout.jsonl`, problemsToJsonl(heldout));
    const texts = trainSet.map((p) => formatPrompt("gsm8k", { question: p.question }) + p.answer);
    const tok = trainBpe(texts, { vocabSize: 1024 });
    console.log(`tokenizer: ${tok.stats.vocabSize} tokens, ${tok.stats.seconds.toFixed(1)} s`);
    await writeTokenizer(`${work}/tokenizer`, tok);
  });
  const trainSet = (await Deno.readTextFile(`${work}/train.jsonl`)).trim().split("\n").map((l) =>
    JSON.parse(l)
  );
  const heldout = (await Deno.readTextFile(`${work}/heldout.jsonl`)).trim().split("\n").map((l) =>
    JSON.parse(l)
  );
  const tokenizer = await loadTokenizer(
    (f) => Deno.readTextFile(`${work}/tokenizer/${f}`).catch(() => null),
    `${work}/tokenizer`,
  );

  // 3. Pretraining from random weights, one whole problem per sequence (resumable). Measured here:
  // packing problems into 512-token sequences let each attend to the ones before it, and 5000 such
  // steps (45 minutes) gave 4 % held-out accuracy; single problems reach more in less time.
  if (!givenBase) {
    await stage("pretrain", async () => {
      const resume = await exists(`${work}/base/latest.json`);
      if (resume && JSON.parse(await Deno.readTextFile(`${work}/base/latest.json`)).step >= pretrainSteps) {
        return;
      }
      // The random initial weights; a resumed run loads them too, then `train` replaces them with
      // its newest complete checkpoint's.
      const init = `${work}/init`;
      if (!(await exists(`${init}/model.safetensors`))) {
        const config = { ...DEMO_CONFIG, vocab_size: tokenizer.vocabSize };
        await writeRandomModel(init, config, "demo config", `${work}/tokenizer`, seed);
      }
      const gpu = await requestGpu();
      const p = await loadPretrained(gpu, directoryFiles(init), { maxRows: 64, dtype: "f32" });
      const items: TrainItem[] = encodeDocuments(tokenizer, trainSet).map((tokens) => ({
        kind: "ar",
        tokens,
      }));
      const progress = trainingProgress(
        "pretrain",
        (e) =>
          `loss ${e.arLoss.toFixed(3)} ${e.tokensPerSecond.toFixed(0)} tok/s ${e.gflops.toFixed(2)} GFLOP/s`,
      );
      const result = await train(p, items, {
        store: directoryCheckpointStore(`${work}/base`, init),
        steps: pretrainSteps,
        lr: pretrainLr,
        batch: PRETRAIN_BATCH,
        warmupRatio: 0.02,
        weightDecay: 0.01,
        labelSmoothing: 0,
        seed: seed + 1, // the data order's stream, apart from the initial weights'
        logEvery: 25,
        checkpointEvery: 250,
        eosIds: p.eosIds,
        resume,
        onLog: progress.onLog,
      });
      progress.done();
      p.model.destroy();
      gpu.destroy();
      if (result.stopReason !== "done") throw new Error(`pretraining stopped: ${result.stopReason}`);
    });
  }
  const baseDir = givenBase ?? await latest(`${work}/base`);

  // 4. Trajectories (resumable: the writer picks up what an interrupted run left in the file).
  await stage("trajectories", async () => {
    if (await exists(`${work}/trajectories.done`)) return;
    const chosen = trainSet.slice(0, trajectoryPrompts);
    const prompts: CollectPrompt[] = chosen.map((p, id) => ({ id, text: p.question, label: p.answer }));
    const gpu = await requestGpu();
    const model = await loadPretrained(gpu, directoryFiles(baseDir));
    let bar: Progress | null = null;
    try {
      const { summary } = await collectTrajectoryFile({
        model,
        prompts,
        texts: prompts.map((p) => p.text),
        out: `${work}/trajectories.jsonl`,
        blockSize: block,
        maxNewTokens: 256,
        labels: true,
        seed,
        format: "gsm8k",
        onNote: (m) => console.error(`trajectory: ${m}`),
        onProgress: (finished, total, records) => {
          bar ??= new Progress("trajectory", total, "prompts");
          bar.update(finished, `${records} records`);
        },
      });
      (bar as Progress | null)?.done();
      console.log(
        `trajectories: ${summary.records} records from ${summary.prompts} prompts; ` +
          `${summary.tokensPerForward.toFixed(3)} tokens per forward`,
      );
    } finally {
      model.model.destroy();
      gpu.destroy();
    }
    // A finished stage is skipped outright (resuming would only load the model and scan its file),
    // which keeps the stage's recorded time.
    await Deno.writeTextFile(`${work}/trajectories.done`, "");
  });

  // 5. Consistency training: global consistency + AR loss on the gold answers, with as many fresh
  // training problems mixed in as AR samples (resumable from its checkpoints).
  if (!givenCllm) {
    await stage("consistency training", async () => {
      if (await exists(`${work}/cllm/DONE`)) return;
      const gpu = await requestGpu();
      const p = await loadPretrained(gpu, directoryFiles(baseDir), { maxRows: 64, dtype: "f32" });
      try {
        const trajPath = `${work}/trajectories.jsonl`;
        const samples = readTrajectories(await Deno.readTextFile(trajPath), {
          vocabSize: p.model.config.vocabSize,
          file: trajPath,
        });
        const items: TrainItem[] = samples.map((s) => ({
          kind: "cllm",
          context: s.context,
          states: s.states,
          fixedPoint: s.fixedPoint,
          labels: s.labels,
        }));
        const mixed = (await readGsm8k(`${work}/train.jsonl`)).slice(0, samples.length);
        for (const tokens of encodeDocuments(p.tokenizer, mixed)) {
          items.push({ kind: "ar", tokens, weight: cllmArWeight });
        }
        const batch = 4;
        const progress = trainingProgress(
          "train",
          (e) =>
            `ar ${e.arLoss.toFixed(3)} cons ${e.consistencyLoss.toFixed(3)} ${
              e.tokensPerSecond.toFixed(0)
            } tok/s`,
        );
        const result = await train(p, items, {
          store: directoryCheckpointStore(`${work}/cllm`, baseDir),
          steps: Math.max(1, Math.ceil((cllmEpochs * items.length) / batch)),
          lr: cllmLr,
          batch,
          arWeight: cllmArWeight,
          arTargets: "gold",
          seed,
          checkpointEvery: 200,
          logEvery: 20,
          eosIds: p.eosIds,
          resume: true,
          onLog: progress.onLog,
        });
        progress.done();
        if (result.stopReason !== "done") {
          throw new Error(`consistency training stopped: ${result.stopReason}`);
        }
      } finally {
        p.model.destroy();
        gpu.destroy();
      }
      await Deno.writeTextFile(`${work}/cllm/DONE`, "");
    });
  }
  const cllmDir = givenCllm ?? await latest(`${work}/cllm`);

  // 6. Jacobi Forcing: the same base and trajectories, one packed sequence per prompt (all its
  // blocks, noisy and clean), AR on the clean chain, as many fresh training problems mixed in as AR
  // samples as there are prompts (resumable).
  await stage("jacobi forcing training", async () => {
    if (await exists(`${work}/jf/DONE`)) return;
    const gpu = await requestGpu();
    const p = await loadPretrained(gpu, directoryFiles(baseDir), { maxRows: 64, dtype: "f32" });
    try {
      const trajPath = `${work}/trajectories.jsonl`;
      const samples = jacobiForcingSamples(
        readTrajectories(await Deno.readTextFile(trajPath), {
          vocabSize: p.model.config.vocabSize,
          file: trajPath,
        }),
      );
      const items: TrainItem[] = samples.map((s) => ({ kind: "jacobi-forcing", ...s }));
      const mixed = (await readGsm8k(`${work}/train.jsonl`)).slice(0, samples.length);
      for (const tokens of encodeDocuments(p.tokenizer, mixed)) {
        items.push({ kind: "ar", tokens, weight: jfArWeight });
      }
      const batch = 4;
      const progress = trainingProgress(
        "jacobi forcing",
        (e) =>
          `ar ${e.arLoss.toFixed(3)} cons ${e.consistencyLoss.toFixed(3)} ${
            e.tokensPerSecond.toFixed(0)
          } tok/s`,
      );
      const result = await train(p, items, {
        store: directoryCheckpointStore(`${work}/jf`, baseDir),
        steps: Math.max(1, Math.ceil((jfEpochs * items.length) / batch)),
        lr: jfLr,
        batch,
        arWeight: jfArWeight,
        consistencyWeight: jfConsistencyWeight,
        noise,
        seed,
        checkpointEvery: 100,
        logEvery: 20,
        eosIds: p.eosIds,
        resume: true,
        onLog: progress.onLog,
      });
      progress.done();
      if (result.stopReason !== "done") {
        throw new Error(`Jacobi Forcing training stopped: ${result.stopReason}`);
      }
    } finally {
      p.model.destroy();
      gpu.destroy();
    }
    await Deno.writeTextFile(`${work}/jf/DONE`, "");
  });
  const jfDir = await latest(`${work}/jf`);

  // 6. Evaluate on 100 held-out problems and publish with model cards.
  let comparison!: Comparison; // set by the stage, which always runs
  await stage("evaluation", async () => {
    const gpu = await requestGpu();
    comparison = await compareBaseAndCllm(
      gpu,
      { base: directoryFiles(baseDir), cllm: directoryFiles(cllmDir), jf: directoryFiles(jfDir) },
      heldout.slice(0, 100),
      {
        runs: standardRuns(block),
        onRow: (row, s) =>
          console.log(`${row}: ${(100 * s.accuracy).toFixed(0)} %, ${s.tokensPerSecond.toFixed(1)} tokens/s`),
      },
    );
    gpu.destroy();
  });
  const { table, identical } = comparison;
  const summary = `${table}\n\nJacobi output identical to the same model's greedy AR output, every ` +
    `setting: Jacobi Forcing ${identical.jf ? "yes" : "NO"}, CLLM ${identical.cllm ? "yes" : "NO"}, base ${
      identical.base ? "yes" : "NO"
    }.`;
  const minutes = Object.values(timings).reduce((a, b) => a + b, 0) / 60;
  const recipe =
    `Made by \`deno task make-models\` (seed ${seed}) in about ${minutes.toFixed(0)} minutes on this ` +
    `project's build machine (WebGPU on llvmpipe, 2 CPU cores, shared with other work). Seconds per stage: ${
      JSON.stringify(timings)
    }.\n\n` +
    `Data: ${problemCount} generated GSM8K-style problems with numbers up to ${maxValue} (train/gsm_synth.ts), held-out split disjoint. Tokenizer: BPE, ` +
    `${tokenizer.vocabSize} tokens, digits split (train/bpe.ts). Architecture: ${
      JSON.stringify(DEMO_CONFIG)
    }.\n\n` +
    `Pretraining: ${pretrainSteps} AdamW steps x ${PRETRAIN_BATCH} problems (one per sequence), lr ${pretrainLr} cosine. CLLM: Jacobi trajectories (n = ${block}) of ` +
    `${trajectoryPrompts} training questions, ${cllmEpochs} epochs of global consistency + ${cllmArWeight}x AR loss on the gold answers (--labels gold) with as many fresh training problems mixed in as AR samples (--mix), lr ${cllmLr}. ` +
    `Jacobi Forcing (jf): the same base and trajectories, ${jfEpochs} epochs over the prompts of one packed sequence each (prompt, then a noisy and a clean copy of every block under the noise-conditioned mask, ${noise.context} context; ${noise.kind} noise over windows of ${noise.window} blocks), ${jfArWeight}x AR loss on the clean chain + ${
      jfConsistencyWeight === 1 ? "" : `${jfConsistencyWeight}x `
    }the progressive consistency loss, as many fresh training problems mixed in as AR samples as there are prompts, lr ${jfLr}.` +
    (givenBase || givenCllm
      ? ` This run took ${
        [givenBase && `the base from ${givenBase}`, givenCllm && `the CLLM from ${givenCllm}`].filter(Boolean)
          .join(" and ")
      } (their stages' times are not in the figure above).`
      : "") +
    `\n\nMeasured on 100 held-out problems, greedy, max 200 new tokens, same run:\n\n${summary}\n`;
  const written: string[] = [];
  if (!givenBase) {
    await saveModel(baseDir, `${outRoot}/${name}-base`, {
      dtype: "F16",
      readme: `# ${name}-base\n\nA tiny Llama pretrained from scratch on generated grade-school ` +
        `arithmetic word problems.\n\n${recipe}`,
    });
    written.push(`${outRoot}/${name}-base`);
  }
  if (!givenCllm) {
    await saveModel(cllmDir, `${outRoot}/${name}-cllm`, {
      dtype: "F16",
      readme: `# ${name}-cllm\n\n${name}-base after consistency training (CLLM): it ` +
        `decodes several tokens per forward with Jacobi decoding, with the same greedy output.\n\n${recipe}`,
    });
    written.push(`${outRoot}/${name}-cllm`);
  }
  await saveModel(jfDir, `${outRoot}/${name}-jf`, {
    dtype: "F16",
    readme: `# ${name}-jf\n\n${name}-base after Jacobi Forcing (progressive consistency training on packed ` +
      `noisy and clean blocks): it decodes several tokens per forward with Jacobi, multiblock and recycling ` +
      `decoders, with the same greedy output.\n\n${recipe}`,
  });
  written.push(`${outRoot}/${name}-jf`);
  console.log(
    `\n${summary}\nwrote ${written.join(", ")} (the whole recipe: about ${minutes.toFixed(0)} minutes)`,
  );
}
