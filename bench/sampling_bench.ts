/**
 * Sampling at full speed, on the embedded CLLM and held-out GSM8K-format problems, in one run:
 * greedy AR, GPU-resident sampled AR against the host-sampled baseline (one logits readback per
 * token), and lossless sampled Jacobi (fixed and sliding blocks), at temperatures 0.7 and 1.0.
 * Reports tokens/s, tokens per forward, the speedup over sampled AR at the same temperature and
 * the accuracy of each row (sampled rows: each problem drawn with its own seed).
 *
 * @module
 */

import type { Gpu } from "../core/mod.ts";
import {
  decode,
  type Decoder,
  decoderLabel,
  generateHostSampled,
  type GenerationResult,
  runToEnd,
} from "../decode/mod.ts";
import { directoryFiles, formatPrompt, loadPretrained } from "../model/mod.ts";
import { scoreGeneration } from "../train/gsm8k_eval.ts";
import { DEMO_MAX_VALUE } from "../demo/demo_models.ts";
import { generateProblems } from "../demo/gsm_synth.ts";

const MODEL = new URL("../demo/models/gsm-tiny-cllm/", import.meta.url).pathname;

/** make-models draws its held-out split with seed + 1; its default seed is 1. */
const HELDOUT_SEED = 2;
const MAX_NEW_TOKENS = 200;

interface Row {
  name: string;
  temperature: number;
  kind: "ar" | "ar host" | "jacobi";
  run: (prompt: number[], budget: number, seed: number) => Promise<GenerationResult>;
}

/** One row's totals. */
export interface SamplingFigures {
  temperature: number;
  accuracy: number;
  tokens: number;
  forwards: number;
  seconds: number;
  tokensPerSecond: number;
  tokensPerForward: number;
  /** tokens/s over the GPU-resident sampled AR row's at the same temperature (greedy: over greedy AR). */
  speedupOverSampledAr: number;
}

/** Runs the sampling section on `items` held-out problems. */
export async function runSamplingBench(gpu: Gpu, items = 30): Promise<unknown> {
  const problems = generateProblems({
    seed: HELDOUT_SEED,
    count: 200,
    split: "heldout",
    maxValue: DEMO_MAX_VALUE,
  })
    .slice(0, items);
  const p = await loadPretrained(gpu, directoryFiles(MODEL), { maxLength: 512, dtype: "f16" });
  try {
    const eosIds = p.eosIds;
    const viaDecode = (d: Decoder): Row["run"] => async (prompt, budget, seed) =>
      (await runToEnd(decode(p.model, prompt, d, { maxNewTokens: budget, eosIds, seed }))).result;
    const rows: Row[] = [{ name: "ar greedy", temperature: 0, kind: "ar", run: viaDecode({ kind: "ar" }) }];
    for (const temperature of [0.7, 1.0]) {
      const sampling = { temperature };
      const jacobi: Decoder[] = [
        { kind: "jacobi", blockSize: 16, sampling },
        { kind: "jacobi", blockSize: 8, sliding: true, sampling },
      ];
      rows.push(
        {
          name: decoderLabel({ kind: "ar", sampling }),
          temperature,
          kind: "ar",
          run: viaDecode({ kind: "ar", sampling }),
        },
        {
          name: `${decoderLabel({ kind: "ar", sampling })} (host draw, readback per token)`,
          temperature,
          kind: "ar host",
          run: async (prompt, budget, seed) =>
            (await runToEnd(
              generateHostSampled(p.model, prompt, { maxNewTokens: budget, eosIds, temperature, seed }),
            ))
              .result,
        },
        ...jacobi.map((d): Row => ({
          name: decoderLabel(d),
          temperature,
          kind: "jacobi",
          run: viaDecode(d),
        })),
      );
    }
    const prompts = problems.map((it) =>
      p.tokenizer.encode(formatPrompt("gsm8k", { question: it.question }))
    );
    const budgetFor = (P: number) => Math.min(MAX_NEW_TOKENS, p.model.maxLength - P - 17);
    for (const row of rows) await row.run(prompts[0], 4, 0); // compile pipelines
    const figures: Record<string, SamplingFigures> = {};
    console.log(`embedded CLLM, ${problems.length} held-out problems, adapter ${gpu.adapter.description}`);
    for (const row of rows) {
      let tokens = 0, forwards = 0, seconds = 0, correct = 0;
      for (let i = 0; i < prompts.length; i++) {
        const t0 = performance.now();
        const r = await row.run(prompts[i], budgetFor(prompts[i].length), i);
        seconds += (performance.now() - t0) / 1000;
        tokens += r.tokens.length;
        forwards += r.stats.forwards;
        if (scoreGeneration(p.tokenizer.decode(r.tokens), problems[i].answer).correct) correct++;
      }
      figures[row.name] = {
        temperature: row.temperature,
        accuracy: correct / prompts.length,
        tokens,
        forwards,
        seconds,
        tokensPerSecond: tokens / seconds,
        tokensPerForward: tokens / forwards,
        speedupOverSampledAr: 0,
      };
      const f = figures[row.name];
      console.log(
        `  ${row.name.padEnd(58)} ${(100 * f.accuracy).toFixed(0).padStart(3)} %  ${
          f.tokensPerSecond.toFixed(1).padStart(6)
        } tok/s  ${f.tokensPerForward.toFixed(2)} tok/forward`,
      );
    }
    for (const row of rows) {
      const base = rows.find((r) => r.kind === "ar" && r.temperature === row.temperature)!;
      figures[row.name].speedupOverSampledAr = figures[row.name].tokensPerSecond /
        figures[base.name].tokensPerSecond;
    }
    const greedy = figures["ar greedy"].tokensPerSecond;
    console.log("\n| decoder | accuracy | tokens/s | tokens/forward | vs AR at its temperature |");
    console.log("| --- | --- | --- | --- | --- |");
    for (const [name, f] of Object.entries(figures)) {
      console.log(
        `| ${name} | ${(100 * f.accuracy).toFixed(0)} % | ${f.tokensPerSecond.toFixed(1)} | ${
          f.tokensPerForward.toFixed(2)
        } | ${f.speedupOverSampledAr.toFixed(2)}x |`,
      );
    }
    const sampledAr = rows.filter((r) => r.kind === "ar" && r.temperature > 0)
      .map((r) => figures[r.name].tokensPerSecond / greedy);
    console.log(
      `\nGPU-resident sampled AR / greedy AR: ${
        sampledAr.map((x) => x.toFixed(2)).join(", ")
      } (t = 0.7, 1.0)`,
    );
    return { items: problems.length, adapter: gpu.adapter.description, rows: figures };
  } finally {
    p.model.destroy();
  }
}
