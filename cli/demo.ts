/**
 * `deno task demo`: the project's point in one command, offline. On the embedded models
 * (`models/gsm-tiny-base`, `models/gsm-tiny-cllm`), it streams held-out arithmetic problems with AR
 * decoding on the base model and Jacobi decoding on the CLLM, draws the Jacobi iterations of one
 * answer, and prints a summary: tokens/s, accepted tokens per forward, speedup and accuracy.
 * Without the embedded models it runs a kernel self-test instead.
 *
 * @module
 */

import { readTensors, requestGpu, Step, Tensor } from "../core/mod.ts";
import {
  generateGreedy,
  generateJacobi,
  type GenerationResult,
  type JacobiResult,
  runToEnd,
} from "../decode/mod.ts";
import { matmulForward, matmulReference } from "../kernels/matmul.ts";
import { directoryFiles, formatPrompt, loadPretrained, type Pretrained } from "../model/mod.ts";
import { generateProblems } from "../train/gsm_synth.ts";
import { scoreGeneration } from "../train/gsm8k_eval.ts";
import { numberOption, parse } from "./args.ts";
import { DEMO_MAX_VALUE } from "./demo_models.ts";
import { renderJacobi } from "./show_jacobi.ts";

const HELP = `Usage: deno task demo [--problems K] [--block N] [--models DIR]

Streams K held-out problems (default 4) with AR on the base model and Jacobi decoding on the CLLM,
shows the Jacobi iterations of the first answer, then a summary table (with the CLLM's own AR and
its sliding-window Jacobi decoding at n and n/2, run without printing).`;

const MODELS = new URL("../models/", import.meta.url).pathname;

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Per-decoder totals for the summary. */
interface Totals {
  tokens: number;
  forwards: number;
  seconds: number;
  correct: number;
  outputs: number[][];
}

const enc = new TextEncoder();
const write = (s: string) => Deno.stdout.writeSync(enc.encode(s));

async function solve(
  p: Pretrained,
  question: string,
  answer: string,
  decoder: "ar" | "jacobi" | "jacobi-sliding",
  block: number,
  totals: Totals,
  echo: boolean,
): Promise<GenerationResult | JacobiResult> {
  const ids = p.tokenizer.encode(formatPrompt("gsm8k", { question }));
  const opts = { maxNewTokens: 200, eosIds: p.eosIds };
  const gen = decoder === "ar"
    ? generateGreedy(p.model, ids, opts)
    : generateJacobi(p.model, ids, { ...opts, blockSize: block, sliding: decoder === "jacobi-sliding" });
  const stream = p.tokenizer.createStreamDecoder();
  const t0 = performance.now();
  let r = await gen.next();
  while (!r.done) {
    if (echo) { for (const id of r.value) write(stream.push(id)); }
    r = await gen.next();
  }
  totals.seconds += (performance.now() - t0) / 1000;
  if (echo) write(`${stream.flush()}\n`);
  totals.tokens += r.value.tokens.length;
  totals.forwards += r.value.stats.forwards;
  totals.outputs.push(r.value.tokens);
  if (scoreGeneration(p.tokenizer.decode(r.value.tokens), answer).correct) totals.correct++;
  return r.value;
}

/** Runs the demo. */
export async function demoCommand(args: string[]): Promise<void> {
  const v = parse("demo", args, {
    problems: { type: "string" },
    block: { type: "string" },
    models: { type: "string" },
  });
  if (v.help) return console.log(HELP);
  const dir = (v.models as string | undefined) ?? MODELS;
  const count = numberOption(v, "problems", 4, { integer: true, min: 1 });
  const block = numberOption(v, "block", 16, { integer: true, min: 2, max: 64 });
  if (
    !(await exists(`${dir}/gsm-tiny-base/config.json`)) || !(await exists(`${dir}/gsm-tiny-cllm/config.json`))
  ) {
    console.log(`(no embedded models in ${dir}; running the kernel self-test instead)`);
    return await selfTest();
  }
  const gpu = await requestGpu();
  console.log(`adapter: ${gpu.adapter.description}${gpu.adapter.isFallbackAdapter ? " (software)" : ""}`);
  // Weights kept in f16, as stored: the fastest AR path on this project's machines (fewer bytes per load).
  const load = (name: string) =>
    loadPretrained(gpu, directoryFiles(`${dir}/${name}`), { maxLength: 512, dtype: "f16" });
  const base = await load("gsm-tiny-base");
  const cllm = await load("gsm-tiny-cllm");
  // Held-out problems: the generator's held-out split never overlaps the training problems.
  const problems = generateProblems({ seed: 7, count, split: "heldout", maxValue: DEMO_MAX_VALUE });
  // Compile every pipeline before timing anything.
  const warm = formatPrompt("gsm8k", { question: problems[0].question });
  for (const p of [base, cllm]) {
    const ids = p.tokenizer.encode(warm);
    await runToEnd(generateGreedy(p.model, ids, { maxNewTokens: 20 }));
    for (const [n, sliding] of [[block, false], [block, true], [Math.max(2, block >> 1), true]] as const) {
      await runToEnd(generateJacobi(p.model, ids, { maxNewTokens: 2 * block, blockSize: n, sliding }));
    }
  }
  const empty = (): Totals => ({ tokens: 0, forwards: 0, seconds: 0, correct: 0, outputs: [] });
  const half = Math.max(2, block >> 1);
  const ar = empty(), jacobi = empty();
  // Run without printing: the CLLM's own greedy AR (for the equality check) and the sliding window
  // at n and n/2 (on a CPU adapter every extra row of a forward costs compute, so n/2 can be faster).
  const hidden: [string, "ar" | "jacobi-sliding", number, Totals][] = [
    ["CLLM, AR", "ar", block, empty()],
    [`CLLM, Jacobi sliding n=${block}`, "jacobi-sliding", block, empty()],
    [`CLLM, Jacobi sliding n=${half}`, "jacobi-sliding", half, empty()],
  ];
  for (const [i, problem] of problems.entries()) {
    console.log(`\n--- problem ${i + 1}: ${problem.question}`);
    write("base model, AR decoding:\n");
    await solve(base, problem.question, problem.answer, "ar", block, ar, true);
    write("CLLM, Jacobi decoding:\n");
    const r = await solve(
      cllm,
      problem.question,
      problem.answer,
      "jacobi",
      block,
      jacobi,
      true,
    ) as JacobiResult;
    for (const [, decoder, n, totals] of hidden) {
      await solve(cllm, problem.question, problem.answer, decoder, n, totals, false);
    }
    if (i === 0) {
      const color = Deno.stdout.isTerminal() && !Deno.env.get("NO_COLOR");
      console.log(
        `\nJacobi iterations of the first two blocks (verified prefix ${
          color ? "in green" : "plain, guesses in [ ]"
        }):`,
      );
      console.log(renderJacobi(r.trajectory.slice(0, 2), cllm.tokenizer, color).join("\n"));
    }
    console.log(`gold answer: ${problem.answer.split("####").pop()!.trim()}`);
  }
  const width = 26;
  const row = (name: string, t: Totals) =>
    `${name.padEnd(width)} ${(t.tokens / t.seconds).toFixed(1).padStart(9)} ${
      (t.tokens / t.forwards).toFixed(2).padStart(12)
    } ` +
    `${((t.tokens / t.seconds) / (ar.tokens / ar.seconds)).toFixed(2).padStart(8)}x ` +
    `${t.correct}/${problems.length}`.padStart(9);
  console.log(
    `\n${"".padEnd(width)} ${"tokens/s".padStart(9)} ${"tok/forward".padStart(12)} ${"speedup".padStart(9)} ${
      "correct".padStart(9)
    }`,
  );
  console.log(row("base, AR", ar));
  console.log(row(hidden[0][0], hidden[0][3]));
  console.log(row(`CLLM, Jacobi n=${block}`, jacobi));
  for (const [name, , , totals] of hidden.slice(1)) console.log(row(name, totals));
  const cllmAr = JSON.stringify(hidden[0][3].outputs);
  const same = [jacobi, ...hidden.slice(1).map((h) => h[3])].every((t) =>
    JSON.stringify(t.outputs) === cllmAr
  );
  console.log(`CLLM Jacobi output identical to its greedy AR output: ${same ? "yes" : "NO"}`);
  base.model.destroy();
  cllm.model.destroy();
  gpu.destroy();
}

function pseudoRandom(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 32 - 0.5;
  }
  return out;
}

/** The fallback: adapter, a matmul checked against its CPU reference, and its throughput. */
async function selfTest(): Promise<void> {
  const gpu = await requestGpu();
  console.log(`adapter: ${gpu.adapter.description}${gpu.adapter.isFallbackAdapter ? " (software)" : ""}`);
  const [T, N, K] = [37, 101, 67];
  const x = pseudoRandom(T * K, 1), w = pseudoRandom(N * K, 2);
  const ty = new Tensor(gpu, [T, N], "f32", "y");
  const check = new Step(gpu, "demo check");
  matmulForward(check, Tensor.from(gpu, x, [T, K], "x"), Tensor.from(gpu, w, [N, K], "w"), ty);
  check.submit();
  const [y] = await readTensors(gpu, [ty]);
  const ref = matmulReference(x, w, T, N, K);
  let maxErr = 0;
  for (let i = 0; i < ref.length; i++) maxErr = Math.max(maxErr, Math.abs(y[i] - ref[i]));
  console.log(
    `matmul ${T}x${N}x${K} vs CPU reference: max error ${maxErr.toExponential(2)} ${
      maxErr < 1e-4 ? "ok" : "WRONG"
    }`,
  );
  const n = 512, reps = 8;
  const a = Tensor.from(gpu, pseudoRandom(n * n, 3), [n, n], "a");
  const b = Tensor.from(gpu, pseudoRandom(n * n, 4), [n, n], "b");
  const c = new Tensor(gpu, [n, n], "f32", "c");
  const warm = new Step(gpu, "demo warm-up");
  matmulForward(warm, a, b, c);
  warm.submit();
  await readTensors(gpu, [c]);
  const t0 = performance.now();
  const step = new Step(gpu, "demo matmul");
  for (let i = 0; i < reps; i++) matmulForward(step, a, b, c);
  step.submit();
  await readTensors(gpu, [c]);
  console.log(
    `matmul ${n}^3: ${((2 * n * n * n * reps) / ((performance.now() - t0) / 1000) / 1e9).toFixed(1)} GFLOP/s`,
  );
  gpu.destroy();
  if (maxErr >= 1e-4) {
    throw new RangeError("The matmul kernel disagrees with its CPU reference on this adapter");
  }
}
