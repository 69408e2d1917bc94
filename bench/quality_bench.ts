/**
 * What weight storage costs in quality, in one run: perplexity of f32, f16, q8 and q4 weights on
 * held-out text (the embedded models on held-out problems; stories260K on its golden text, when
 * ../shared has it), stories260K's golden text under each (how many of its 200 greedy tokens
 * survive), and the embedded CLLM's GSM accuracy and tokens per forward under each (Jacobi output
 * checked against the same weights' greedy AR).
 *
 * @module
 */

import { type Gpu, readTensors, Step, Tensor } from "../core/mod.ts";
import { decode } from "../decode/decode.ts";
import { runToEnd } from "../decode/generation.ts";
import { DEMO_MAX_VALUE } from "../demo/demo_models.ts";
import { generateProblems } from "../demo/gsm_synth.ts";
import { formatPrompt } from "../model/chat_template.ts";
import { convertLlama2c, directoryFiles, type Llama, loadPretrained, type Pretrained } from "../model/mod.ts";
import { evaluateGsm8k } from "../train/gsm8k_eval.ts";

const MODELS = new URL("../demo/models/", import.meta.url).pathname;
const STORIES = new URL("../../shared/models/stories260K/", import.meta.url).pathname;
const DTYPES = ["f32", "f16", "q8", "q4"] as const;

/** exp(mean negative log-likelihood) of `ids[1..]` given the previous tokens, in chunks of maxRows. */
async function perplexity(model: Llama, ids: readonly number[]): Promise<number> {
  const gpu = model.gpu;
  const V = model.config.vocabSize;
  const cache = model.createCache(ids.length + model.maxRows);
  const tokens = Tensor.from(gpu, Uint32Array.from(ids), [ids.length], "ppl tokens");
  let nll = 0;
  let count = 0;
  for (let start = 0; start < ids.length - 1; start += model.maxRows) {
    const rows = Math.min(model.maxRows, ids.length - 1 - start);
    const logits = new Tensor(gpu, [rows, V], "f32", "ppl logits");
    const step = new Step(gpu, "perplexity");
    model.forward(step, { tokens, tokenOffset: start, rows, position: cache.at(start), cache, logits });
    step.submit();
    const [l] = await readTensors(gpu, [logits]);
    for (let t = 0; t < rows; t++) {
      const row = l.subarray(t * V, (t + 1) * V);
      let max = -Infinity;
      for (const v of row) max = Math.max(max, v);
      let sum = 0;
      for (const v of row) sum += Math.exp(v - max);
      nll += Math.log(sum) + max - row[ids[start + t + 1]];
      count++;
    }
    logits.destroy();
  }
  cache.destroy();
  tokens.destroy();
  return Math.exp(nll / count);
}

async function load(gpu: Gpu, dir: string, dtype: typeof DTYPES[number]): Promise<Pretrained> {
  return await loadPretrained(gpu, directoryFiles(dir), { maxLength: 1024, dtype });
}

/** Runs the quality section; returns its figures. */
export async function runQualityBench(gpu: Gpu): Promise<unknown> {
  const figures: Record<string, unknown> = {};
  // Held-out problems as one text per problem, prompt and answer (the models' own format).
  const heldout = generateProblems({ seed: 2, count: 200, split: "heldout", maxValue: DEMO_MAX_VALUE });
  for (const name of ["gsm-tiny-base", "gsm-tiny-cllm"]) {
    const row: Record<string, number> = {};
    for (const dtype of DTYPES) {
      const p = await load(gpu, `${MODELS}${name}`, dtype);
      let sum = 0;
      const texts = heldout.slice(100, 130); // not the 100 the accuracy rows use
      for (const q of texts) {
        const ids = p.tokenizer.encode(formatPrompt("gsm8k", { question: q.question }) + q.answer);
        sum += Math.log(await perplexity(p.model, ids));
      }
      row[dtype] = Math.exp(sum / texts.length);
      p.model.destroy();
    }
    console.log(
      `  ${name} perplexity on 30 held-out problems: ${
        DTYPES.map((d) => `${d} ${row[d].toFixed(4)}`).join(", ")
      }`,
    );
    figures[`${name} perplexity`] = row;
  }
  // stories260K: perplexity of its golden text and how much of the golden text each storage keeps.
  try {
    await Deno.stat(`${STORIES}stories260K.bin`);
    const dir = await Deno.makeTempDir();
    try {
      await convertLlama2c({
        checkpoint: `${STORIES}stories260K.bin`,
        tokenizer: `${STORIES}tok512.bin`,
        out: `${dir}/m`,
      });
      const golden = await Deno.readTextFile(`${STORIES}golden.txt`);
      const row: Record<string, number> = {};
      for (const dtype of DTYPES) {
        const p = await load(gpu, `${dir}/m`, dtype);
        const ids = [p.tokenizer.bosId!, ...p.tokenizer.encode(golden, { addBos: false })];
        row[dtype] = await perplexity(p.model, ids);
        if (dtype !== "f32") {
          const { result } = await runToEnd(
            decode(p.model, [p.tokenizer.bosId!], { kind: "ar" }, { maxNewTokens: 200 }),
          );
          const want = ids.slice(1, 201);
          let same = 0;
          while (same < want.length && result.tokens[same] === want[same]) same++;
          row[`${dtype} golden tokens kept`] = same;
        }
        p.model.destroy();
      }
      console.log(
        `  stories260K golden text: perplexity ${
          DTYPES.map((d) => `${d} ${row[d].toFixed(4)}`).join(", ")
        }; ` +
          `greedy tokens equal to golden.txt before the first difference: ${
            DTYPES.slice(1).map((d) => `${d} ${row[`${d} golden tokens kept`]}`).join(", ")
          } of 200`,
      );
      figures["stories260K"] = row;
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    console.log("  stories260K: not found beside the repository; skipped");
  }
  // The CLLM's accuracy and tokens per forward under each storage, on the 100 held-out problems.
  const items = heldout.slice(0, 100);
  for (const dtype of ["f16", "q8", "q4"] as const) {
    const p = await load(gpu, `${MODELS}gsm-tiny-cllm`, dtype);
    const ar = await evaluateGsm8k(p, items, { decoder: { kind: "ar" }, maxNewTokens: 200 });
    const jacobi = await evaluateGsm8k(p, items, {
      decoder: { kind: "jacobi", blockSize: 16 },
      maxNewTokens: 200,
    });
    const identical = ar.results.every((r, i) => r.output === jacobi.results[i].output);
    const row = {
      accuracy: jacobi.summary.accuracy,
      tokensPerForward: jacobi.summary.tokensPerForward,
      jacobiTokensPerSecond: jacobi.summary.tokensPerSecond,
      arTokensPerSecond: ar.summary.tokensPerSecond,
      identicalToAr: identical ? 1 : 0,
    };
    console.log(
      `  gsm-tiny-cllm ${dtype}: accuracy ${(100 * row.accuracy).toFixed(0)} %, Jacobi n=16 ${
        row.tokensPerForward.toFixed(2)
      } tokens/forward, ${row.jacobiTokensPerSecond.toFixed(1)} tok/s (AR ${
        row.arTokensPerSecond.toFixed(1)
      }); ` +
        `Jacobi identical to AR: ${identical ? "yes" : "NO"}`,
    );
    figures[`gsm-tiny-cllm ${dtype}`] = row;
    p.model.destroy();
  }
  return figures;
}
