/**
 * `deno task demo`: the project's point in one command, offline. On the embedded models
 * (`demo/models/gsm-tiny-base`, `demo/models/gsm-tiny-cllm`), it streams held-out arithmetic problems
 * with AR decoding on the base model and Jacobi decoding on the CLLM, draws the Jacobi iterations of
 * one answer, and prints a summary: tokens/s, accepted tokens per forward, speedup and accuracy.
 * It uses the library only through its public API (mod.ts).
 *
 * @module
 */

import {
  decode,
  type Decoder,
  directoryFiles,
  formatPrompt,
  type GenerationResult,
  type JacobiResult,
  loadPretrained,
  type Pretrained,
  requestGpu,
  runToEnd,
  scoreGeneration,
} from "../mod.ts";
import { numberOption, parse } from "../cli/args.ts";
import { renderJacobi } from "../cli/show_jacobi.ts";
import { DEMO_MAX_VALUE } from "./demo_models.ts";
import { generateProblems } from "./gsm_synth.ts";

const HELP = `Usage: deno task demo [--problems K] [--block N] [--models DIR]

Streams K held-out problems (default 4) with AR on the base model and Jacobi decoding on the CLLM,
shows the Jacobi iterations of the first answer, then a summary table (with the CLLM's own AR and
its sliding-window Jacobi decoding at n and n/2, and the Jacobi Forcing model's AR, Jacobi, sliding
and multiblock + recycling decoders, run without printing).`;

const MODELS = new URL("./models/", import.meta.url).pathname;

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
  decoder: Decoder,
  totals: Totals,
  echo: boolean,
): Promise<GenerationResult | JacobiResult> {
  const ids = p.tokenizer.encode(formatPrompt("gsm8k", { question }));
  const gen = decode(p.model, ids, decoder, { maxNewTokens: 200, eosIds: p.eosIds });
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
  const gpu = await requestGpu();
  console.log(`adapter: ${gpu.adapter.description}${gpu.adapter.isFallbackAdapter ? " (software)" : ""}`);
  // Weights kept in f16, as stored: the fastest AR path on this project's machines (fewer bytes per load).
  const load = (name: string) =>
    loadPretrained(gpu, directoryFiles(`${dir}/${name}`), { maxLength: 512, dtype: "f16" });
  const base = await load("gsm-tiny-base");
  const cllm = await load("gsm-tiny-cllm");
  // The Jacobi Forcing model, when make-models has made it: its rows run without printing.
  const jf = await Deno.stat(`${dir}/gsm-tiny-jf/model.safetensors`).then(
    () => load("gsm-tiny-jf"),
    () => null,
  );
  // Held-out problems: the generator's held-out split never overlaps the training problems.
  const problems = generateProblems({ seed: 7, count, split: "heldout", maxValue: DEMO_MAX_VALUE });
  // Compile every pipeline before timing anything.
  const warm = formatPrompt("gsm8k", { question: problems[0].question });
  const half = Math.max(2, block >> 1);
  const ar: Decoder = { kind: "ar" };
  const jacobiN: Decoder = { kind: "jacobi", blockSize: block };
  const slidingN: Decoder = { kind: "jacobi", blockSize: block, sliding: true };
  const slidingHalf: Decoder = { kind: "jacobi", blockSize: half, sliding: true };
  const multiRecycle: Decoder = { kind: "jacobi", blockSize: half, blocks: 2, recycle: 1 };
  for (const p of [base, cllm, ...(jf ? [jf] : [])]) {
    const ids = p.tokenizer.encode(warm);
    await runToEnd(decode(p.model, ids, { kind: "ar" }, { maxNewTokens: 20 }));
    for (const d of [jacobiN, slidingN, slidingHalf, multiRecycle]) {
      await runToEnd(decode(p.model, ids, d, { maxNewTokens: 2 * block }));
    }
  }
  const empty = (): Totals => ({ tokens: 0, forwards: 0, seconds: 0, correct: 0, outputs: [] });
  const arTotals = empty(), jacobi = empty();
  // Run without printing: the CLLM's own greedy AR (for the equality check) and the sliding window
  // at n and n/2 (on a CPU adapter every extra row of a forward costs compute, so n/2 can be faster).
  const hidden: [string, Decoder, Totals][] = [
    ["CLLM, AR", ar, empty()],
    [`CLLM, Jacobi sliding n=${block}`, slidingN, empty()],
    [`CLLM, Jacobi sliding n=${half}`, slidingHalf, empty()],
  ];
  // The Jacobi Forcing model's AR (for its equality check) and parallel decoders, also unprinted.
  const jfRows: [string, Decoder, Totals][] = jf
    ? [
      ["Jacobi Forcing, AR", ar, empty()],
      [`Jacobi Forcing, Jacobi n=${block}`, jacobiN, empty()],
      [`Jacobi Forcing, sliding n=${block}`, slidingN, empty()],
      [`Jacobi Forcing, n=${half} blocks=2 recycle=1`, multiRecycle, empty()],
    ]
    : [];
  for (const [i, problem] of problems.entries()) {
    console.log(`\n--- problem ${i + 1}: ${problem.question}`);
    write("base model, AR decoding:\n");
    await solve(base, problem.question, problem.answer, ar, arTotals, true);
    write("CLLM, Jacobi decoding:\n");
    const r = await solve(
      cllm,
      problem.question,
      problem.answer,
      jacobiN,
      jacobi,
      true,
    ) as JacobiResult;
    for (const [, decoder, totals] of hidden) {
      await solve(cllm, problem.question, problem.answer, decoder, totals, false);
    }
    for (const [, decoder, totals] of jfRows) {
      await solve(jf!, problem.question, problem.answer, decoder, totals, false);
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
  const width = jf ? 40 : 26;
  const row = (name: string, t: Totals) =>
    `${name.padEnd(width)} ${(t.tokens / t.seconds).toFixed(1).padStart(9)} ${
      (t.tokens / t.forwards).toFixed(2).padStart(12)
    } ` +
    `${((t.tokens / t.seconds) / (arTotals.tokens / arTotals.seconds)).toFixed(2).padStart(8)}x ` +
    `${t.correct}/${problems.length}`.padStart(9);
  console.log(
    `\n${"".padEnd(width)} ${"tokens/s".padStart(9)} ${"tok/forward".padStart(12)} ${"speedup".padStart(9)} ${
      "correct".padStart(9)
    }`,
  );
  console.log(row("base, AR", arTotals));
  console.log(row(hidden[0][0], hidden[0][2]));
  console.log(row(`CLLM, Jacobi n=${block}`, jacobi));
  for (const [name, , totals] of hidden.slice(1)) console.log(row(name, totals));
  const cllmAr = JSON.stringify(hidden[0][2].outputs);
  const same = [jacobi, ...hidden.slice(1).map((h) => h[2])].every((t) =>
    JSON.stringify(t.outputs) === cllmAr
  );
  console.log(`CLLM Jacobi output identical to its greedy AR output: ${same ? "yes" : "NO"}`);
  if (jf) {
    for (const [name, , totals] of jfRows) console.log(row(name, totals));
    const jfAr = JSON.stringify(jfRows[0][2].outputs);
    const jfSame = jfRows.slice(1).every((h) => JSON.stringify(h[2].outputs) === jfAr);
    console.log(`Jacobi Forcing output identical to its greedy AR output: ${jfSame ? "yes" : "NO"}`);
    jf.model.destroy();
  }
  base.model.destroy();
  cllm.model.destroy();
  gpu.destroy();
}
