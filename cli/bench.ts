/**
 * `cllm bench decode`: AR, Jacobi (and their per-readback baselines) on the same prompts in one
 * run; checks that the greedy outputs are identical; prints tokens/s, accepted tokens per forward
 * and the speedup over the fastest AR path; writes JSON and an SVG bar chart.
 *
 * @module
 */

import {
  generateGreedy,
  generateJacobi,
  generateLookahead,
  type GenerationResult,
  runToEnd,
} from "../decode/mod.ts";
import { formatPrompt } from "../model/mod.ts";
import { choiceOption, CliError, numberOption, parse, required } from "./args.ts";
import { readPrompts, writeTextAtomic } from "./files.ts";
import { loadModelDir } from "./load.ts";
import { Progress } from "./progress.ts";
import { barChart } from "./svg_chart.ts";

const HELP = `Usage: deno task cllm bench decode --model DIR --prompts FILE [options]

Options:
  --prompts FILE         JSONL ("question", "prompt" or "turns" field) or one prompt per line
  --limit K              use the first K prompts (default all)
  --block N              Jacobi block size (default 16)
  --max-new-tokens M     budget per prompt (default 128)
  --format NAME          wrap prompts in a built-in format: gsm8k, vicuna (default: as they are)
  --decoders LIST        comma-separated subset of ar,ar-readback,jacobi,jacobi-readback,jacobi-sliding,lookahead
                         (default all)
  --ngram N --window W --guesses G   lookahead settings (default 4, 5, 5)
  --jacobi-guesses random|context   new Jacobi guesses: random context tokens (default) or copied spans
  --dtype f32|f16        weight storage (default f32)
  --out FILE.json        write the figures there, and the chart beside it as FILE.svg`;

type Decoder = "ar" | "ar-readback" | "jacobi" | "jacobi-readback" | "jacobi-sliding" | "lookahead";
const ALL: Decoder[] = ["ar", "ar-readback", "jacobi", "jacobi-readback", "jacobi-sliding", "lookahead"];

/** Per-decoder totals. */
export interface DecoderFigures {
  decoder: Decoder;
  tokens: number;
  forwards: number;
  seconds: number;
  readbacks: number;
  tokensPerSecond: number;
  tokensPerForward: number;
  forwardsPerReadback: number;
  speedupOverFastestAr: number;
}

/** Runs `bench`. */
export async function benchCommand(args: string[]): Promise<void> {
  const [what, ...rest] = args;
  if (what === "--help" || what === "-h" || what === undefined) return console.log(HELP);
  if (what !== "decode") throw new CliError(`bench: unknown benchmark "${what}"; use "bench decode"`);
  const v = parse("bench decode", rest, {
    model: { type: "string" },
    prompts: { type: "string" },
    limit: { type: "string" },
    block: { type: "string" },
    "max-new-tokens": { type: "string" },
    format: { type: "string" },
    decoders: { type: "string" },
    ngram: { type: "string" },
    window: { type: "string" },
    guesses: { type: "string" },
    "jacobi-guesses": { type: "string" },
    out: { type: "string" },
    dtype: { type: "string" },
  });
  if (v.help) return console.log(HELP);
  const dir = required(v, "model", "bench decode");
  const promptsPath = required(v, "prompts", "bench decode");
  const limit = numberOption(v, "limit", Infinity, { integer: false, min: 1 });
  const blockSize = numberOption(v, "block", 16, { integer: true, min: 1, max: 64 });
  const maxNewTokens = numberOption(v, "max-new-tokens", 128, { integer: true, min: 1 });
  const format = v.format as string | undefined;
  const lookahead = {
    ngram: numberOption(v, "ngram", 4, { integer: true, min: 3 }),
    window: numberOption(v, "window", 5, { integer: true, min: 1 }),
    guesses: numberOption(v, "guesses", 5, { integer: true, min: 1 }),
  };
  const jacobiGuesses = choiceOption(v, "jacobi-guesses", ["random", "context"] as const, "random");
  const decoders = ((v.decoders as string | undefined)?.split(",") ?? ALL) as Decoder[];
  for (const d of decoders) if (!ALL.includes(d)) throw new CliError(`bench decode: unknown decoder "${d}"`);
  let texts = (await readPrompts(promptsPath)).slice(0, limit);
  if (format) texts = texts.map((q) => formatPrompt(format, { question: q }));

  const p = await loadModelDir(dir, { dtype: v.dtype as string | undefined });
  try {
    const prompts = texts.map((t) => p.tokenizer.encode(t));
    const run = (d: Decoder, prompt: number[]): Promise<GenerationResult> => {
      const common = { maxNewTokens, eosIds: p.eosIds };
      const jacobi = { ...common, blockSize, guesses: jacobiGuesses };
      switch (d) {
        case "ar":
          return runToEnd(generateGreedy(p.model, prompt, { ...common, forwardsPerReadback: 16 })).then((r) =>
            r.result
          );
        case "ar-readback":
          return runToEnd(generateGreedy(p.model, prompt, { ...common, forwardsPerReadback: 1 })).then((r) =>
            r.result
          );
        case "jacobi":
          return runToEnd(generateJacobi(p.model, prompt, { ...jacobi, iterationsPerReadback: 8 }))
            .then((r) => r.result);
        case "jacobi-readback":
          return runToEnd(generateJacobi(p.model, prompt, { ...jacobi, iterationsPerReadback: 1 }))
            .then((r) => r.result);
        case "jacobi-sliding":
          return runToEnd(
            generateJacobi(p.model, prompt, {
              ...jacobi,
              iterationsPerReadback: 8,
              sliding: true,
            }),
          ).then((r) => r.result);
        case "lookahead":
          return runToEnd(
            generateLookahead(p.model, prompt, { ...common, ...lookahead, iterationsPerReadback: 8 }),
          ).then((r) => r.result);
      }
    };
    // Warm-up: compile every pipeline outside the timed runs.
    for (const d of decoders) await run(d, prompts[0].slice(0, 8));

    const outputs = new Map<Decoder, number[][]>();
    const figures: DecoderFigures[] = [];
    const progress = new Progress("bench decode", decoders.length * prompts.length, "runs");
    let done = 0;
    for (const d of decoders) {
      const f = { decoder: d, tokens: 0, forwards: 0, seconds: 0, readbacks: 0 };
      const outs: number[][] = [];
      for (const prompt of prompts) {
        const t0 = performance.now();
        const r = await run(d, prompt);
        f.seconds += (performance.now() - t0) / 1000;
        f.tokens += r.tokens.length;
        f.forwards += r.stats.forwards;
        f.readbacks += r.stats.readbacks;
        outs.push(r.tokens);
        progress.update(++done, d);
      }
      outputs.set(d, outs);
      figures.push({
        ...f,
        tokensPerSecond: f.tokens / f.seconds,
        tokensPerForward: f.tokens / f.forwards,
        forwardsPerReadback: f.readbacks ? f.forwards / f.readbacks : 0,
        speedupOverFastestAr: 0,
      });
    }
    progress.done();
    // Greedy outputs must agree token for token.
    const reference = outputs.get(decoders[0])!;
    const mismatches: string[] = [];
    for (const d of decoders) {
      outputs.get(d)!.forEach((out, i) => {
        if (JSON.stringify(out) !== JSON.stringify(reference[i])) mismatches.push(`${d} on prompt ${i}`);
      });
    }
    const arSpeeds = figures.filter((f) => f.decoder.startsWith("ar")).map((f) => f.tokensPerSecond);
    const fastestAr = arSpeeds.length ? Math.max(...arSpeeds) : NaN;
    for (const f of figures) f.speedupOverFastestAr = f.tokensPerSecond / fastestAr;

    console.log(
      `model ${dir}, ${prompts.length} prompts, block ${blockSize}, max ${maxNewTokens} new tokens, ` +
        `adapter ${p.gpu.adapter.description}`,
    );
    console.log(
      `${"decoder".padEnd(16)} ${"tokens/s".padStart(9)} ${"tok/forward".padStart(11)} ` +
        `${"fwd/readback".padStart(12)} ${"speedup".padStart(8)}`,
    );
    for (const f of figures) {
      console.log(
        `${f.decoder.padEnd(16)} ${f.tokensPerSecond.toFixed(1).padStart(9)} ${
          f.tokensPerForward.toFixed(3).padStart(11)
        } ` +
          `${f.forwardsPerReadback.toFixed(1).padStart(12)} ${
            (Number.isFinite(f.speedupOverFastestAr) ? f.speedupOverFastestAr.toFixed(2) + "x" : "-")
              .padStart(8)
          }`,
      );
    }
    console.log(
      mismatches.length === 0 ? "outputs identical: yes" : `outputs identical: NO (${mismatches.join(", ")})`,
    );
    const out = v.out as string | undefined;
    if (out) {
      const summary = {
        model: dir,
        adapter: p.gpu.adapter.description,
        prompts: prompts.length,
        blockSize,
        maxNewTokens,
        identical: mismatches.length === 0,
        decoders: figures,
      };
      await writeTextAtomic(out, JSON.stringify(summary, null, 2) + "\n");
      const svg = barChart(
        `decoding tokens/s (${p.gpu.adapter.description})`,
        figures.map((f) => ({
          label: f.decoder,
          value: f.tokensPerSecond,
          note: `${f.tokensPerSecond.toFixed(1)} tok/s, ${f.tokensPerForward.toFixed(2)} tok/fwd`,
        })),
      );
      await writeTextAtomic(out.replace(/\.json$/, "") + ".svg", svg);
      console.log(`wrote ${out}`);
    }
    if (mismatches.length > 0) throw new RangeError("Decoders disagree on greedy outputs; see above");
  } finally {
    p.model.destroy();
    p.gpu.destroy();
  }
}
