/**
 * The full CLLM loop on stories260K (issue: consistency training acceptance), reproducible:
 *   deno run -A dev/stories_cllm.ts WORKDIR [--prompts 300] [--epochs 3] [--lr 1e-3] [--ar-weight 10]
 *   [--out cllm] [--skip convert,prompts,trajectory,train]
 * 1. convert ../shared/models/stories260K to WORKDIR/base;
 * 2. sample 320 story openings from the model itself (seeded, temperature 1, 10 tokens);
 *    300 for training, 20 held out;
 * 3. collect Jacobi trajectories (n = 16, M = 128) for the 300;
 * 4. consistency-train into WORKDIR/cllm;
 * 5. bench decode (AR and Jacobi) on the 20 held-out openings for the base and the trained
 *    model, and the base model's perplexity on each model's greedy text.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { readTensors, requestGpu, Step, Tensor } from "../core/mod.ts";
import { generateGreedy, generateSampled, runToEnd } from "../decode/mod.ts";
import { convertLlama2c, directoryFiles, type Llama, loadPretrained } from "../model/mod.ts";
import { main } from "../cli/main.ts";

const { positionals, values } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    prompts: { type: "string", default: "300" },
    epochs: { type: "string", default: "3" },
    lr: { type: "string", default: "1e-3" },
    "ar-weight": { type: "string", default: "10" },
    out: { type: "string", default: "cllm" },
    block: { type: "string", default: "16" },
    "max-new-tokens": { type: "string", default: "128" },
    skip: { type: "string", default: "" },
  },
});
const work = positionals[0] ?? "/tmp/stories_cllm";
const skip = new Set((values.skip as string).split(","));
const shared = new URL("../../shared/models/stories260K/", import.meta.url).pathname;
await Deno.mkdir(work, { recursive: true });
const run = async (args: string[]) => {
  console.log(`$ cllm ${args.join(" ")}`);
  const code = await main(args);
  if (code !== 0) throw new Error(`cllm ${args[0]} failed with ${code}`);
};

if (!skip.has("convert")) {
  await convertLlama2c({
    checkpoint: `${shared}stories260K.bin`,
    tokenizer: `${shared}tok512.bin`,
    out: `${work}/base`,
    force: true,
  });
}

// 2. Openings sampled from the model itself.
const trainCount = Number(values.prompts);
if (!skip.has("prompts")) {
  const gpu = await requestGpu();
  const p = await loadPretrained(gpu, directoryFiles(`${work}/base`), { maxLength: 512 });
  const openings: string[] = [];
  for (let i = 0; openings.length < trainCount + 20; i++) {
    const gen = generateSampled(p.model, [p.tokenizer.bosId!], {
      maxNewTokens: 10,
      temperature: 1,
      seed: 1000 + i,
      eosIds: p.eosIds,
    });
    const r = { value: (await runToEnd(gen)).result };
    const text = p.tokenizer.decode(r.value.tokens).replace(/\n/g, " ").trim();
    if (text.length > 8 && !openings.includes(text)) openings.push(text);
  }
  await Deno.writeTextFile(`${work}/train_prompts.txt`, openings.slice(0, trainCount).join("\n") + "\n");
  await Deno.writeTextFile(`${work}/heldout_prompts.txt`, openings.slice(trainCount).join("\n") + "\n");
  p.model.destroy();
  gpu.destroy();
}

// 3-4. Trajectories and consistency training.
const n = values.block as string, M = values["max-new-tokens"] as string;
if (!skip.has("trajectory")) {
  await run([
    "trajectory",
    "--model",
    `${work}/base`,
    "--prompts",
    `${work}/train_prompts.txt`,
    "--out",
    `${work}/trajectories.jsonl`,
    "--block",
    n,
    "--max-new-tokens",
    M,
  ]);
}
if (!skip.has("train")) {
  await run([
    "train",
    "--model",
    `${work}/base`,
    "--trajectories",
    `${work}/trajectories.jsonl`,
    "--out",
    `${work}/${values.out}`,
    "--epochs",
    values.epochs as string,
    "--lr",
    values.lr as string,
    "--ar-weight",
    values["ar-weight"] as string,
    "--batch",
    "4",
    "--checkpoint-every",
    "200",
    "--log-every",
    "20",
  ]);
}
const latest = JSON.parse(await Deno.readTextFile(`${work}/${values.out}/latest.json`)).checkpoint;
const cllmDir = `${work}/${values.out}/${latest}`;

// 5. Speed and quality, measured in one run.
for (const [name, dir] of [["base", `${work}/base`], ["cllm", cllmDir]]) {
  await run([
    "bench",
    "decode",
    "--model",
    dir,
    "--prompts",
    `${work}/heldout_prompts.txt`,
    "--block",
    n,
    "--max-new-tokens",
    M,
    "--decoders",
    "ar,jacobi",
    "--out",
    `${work}/bench_${name === "cllm" ? values.out : name}.json`,
  ]);
}

/** Mean NLL per token of `model` on `seq` (all tokens after the first), on the GPU, logits read once. */
async function nll(model: Llama, seq: number[], from: number): Promise<number> {
  const gpu = model.gpu;
  const cache = model.createCache(seq.length + model.maxRows);
  const tokens = Tensor.from(gpu, Uint32Array.from(seq), [seq.length], "seq");
  const V = model.config.vocabSize;
  const logits: Tensor[] = [];
  const step = new Step(gpu, "nll");
  for (let start = 0; start < seq.length; start += model.maxRows) {
    const rows = Math.min(model.maxRows, seq.length - start);
    const l = new Tensor(gpu, [rows, V], "f32", "nll logits");
    model.forward(step, { tokens, tokenOffset: start, rows, position: cache.at(start), cache, logits: l });
    logits.push(l);
  }
  step.submit();
  const rows = (await readTensors(gpu, logits)).flatMap((l) =>
    Array.from({ length: l.length / V }, (_, i) => l.subarray(i * V, (i + 1) * V))
  );
  let total = 0, count = 0;
  for (let t = from; t + 1 < seq.length; t++) {
    const row = rows[t] as Float32Array;
    let max = -Infinity;
    for (const x of row) max = Math.max(max, x);
    let s = 0;
    for (const x of row) s += Math.exp(x - max);
    total += max + Math.log(s) - row[seq[t + 1]];
    count++;
  }
  for (const l of logits) l.destroy();
  cache.destroy();
  tokens.destroy();
  return total / Math.max(1, count);
}

const gpu = await requestGpu();
const base = await loadPretrained(gpu, directoryFiles(`${work}/base`), { maxLength: 512 });
const cllm = await loadPretrained(gpu, directoryFiles(cllmDir), { maxLength: 512 });
const heldout = (await Deno.readTextFile(`${work}/heldout_prompts.txt`)).trim().split("\n");
const quality: Record<string, number> = {};
for (const [name, p] of [["base", base], ["cllm", cllm]] as const) {
  let sum = 0;
  for (const text of heldout) {
    const prompt = p.tokenizer.encode(text);
    const gen = generateGreedy(p.model, prompt, { maxNewTokens: Number(M), eosIds: p.eosIds });
    const r = { value: (await runToEnd(gen)).result };
    sum += await nll(base.model, [...prompt, ...r.value.tokens], prompt.length - 1);
  }
  quality[name] = Math.exp(sum / heldout.length);
}
const summary = {
  base: JSON.parse(await Deno.readTextFile(`${work}/bench_base.json`)),
  cllm: JSON.parse(await Deno.readTextFile(`${work}/bench_${values.out}.json`)),
  basePerplexityOnGreedyText: quality,
};
await Deno.writeTextFile(`${work}/summary_${values.out}.json`, JSON.stringify(summary, null, 2) + "\n");
console.log(
  `base-model perplexity on greedy text: base ${quality.base.toFixed(3)}, cllm ${quality.cllm.toFixed(3)}`,
);
for (const k of ["base", "cllm"] as const) {
  for (const d of summary[k].decoders) {
    console.log(
      `${k} ${d.decoder}: ${d.tokensPerSecond.toFixed(1)} tok/s, ${
        d.tokensPerForward.toFixed(3)
      } tok/forward`,
    );
  }
}
