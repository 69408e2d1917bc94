/**
 * One load of a checkpoint in a fresh process, for the scale bench: prints a JSON line with the
 * load time, the process's peak resident memory, the GPU weight bytes, and (with `--decode N`) the
 * greedy AR tokens/s and the cost of a 16-row forward relative to a 1-row one.
 *
 *     deno run -A bench/_load_once.ts DIR stored|f16|bf16|f32 [--decode N]
 *
 * @module
 */

import { readTensors, requestGpu, Step, Tensor } from "../core/mod.ts";
import { decode } from "../decode/decode.ts";
import { prefill, runToEnd } from "../decode/generation.ts";
import { directoryFiles, Llama } from "../model/mod.ts";

/** Peak resident set size of this process (Linux), in bytes. */
function peakRss(): number {
  const status = Deno.readTextFileSync("/proc/self/status");
  const m = /VmHWM:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) * 1024 : NaN;
}

const [dir, dtype, flag, count] = Deno.args;
const gpu = await requestGpu();
const t0 = performance.now();
const model = await Llama.load(gpu, directoryFiles(dir), {
  dtype: dtype as "f32" | "f16",
  maxLength: 256,
  maxRows: 16,
});
await readTensors(gpu, [model.norm]); // the uploads and conversions have run
const seconds = (performance.now() - t0) / 1000;
const rssAfterLoad = peakRss();
let gpuBytes = 0;
for (const t of [...model.weights.values(), ...[...model.splitWeights.values()].flat()]) {
  gpuBytes += t.byteLength;
}
const out: Record<string, number> = { seconds, peakRssBytes: rssAfterLoad, gpuWeightBytes: gpuBytes };

if (flag === "--decode") {
  const n = Number(count ?? 16);
  const prompt = [1, 300, 400, 500, 600, 700, 800, 900];
  await runToEnd(decode(model, prompt, { kind: "ar" }, { maxNewTokens: 2 })); // compile pipelines
  const t1 = performance.now();
  const { result } = await runToEnd(decode(model, prompt, { kind: "ar" }, { maxNewTokens: n }));
  out.arTokensPerSecond = result.tokens.length / ((performance.now() - t1) / 1000);
  // A 16-row forward against a 1-row one, several of each per submit.
  const s = prefill(model, prompt, 64);
  const time = async (rows: number) => {
    const logits = new Tensor(gpu, [rows, model.config.vocabSize], "f32", "bench logits");
    const run = async (reps: number) => {
      const step = new Step(gpu, `forward ${rows}`);
      for (let i = 0; i < reps; i++) {
        model.forward(step, {
          tokens: s.tokens,
          tokenOffset: 0,
          rows,
          position: s.cache.at(8),
          cache: s.cache,
          logits,
        });
      }
      step.submit();
      await readTensors(gpu, [s.lastLogits]);
    };
    await run(1);
    const t = performance.now();
    await run(4);
    logits.destroy();
    return (performance.now() - t) / 4;
  };
  const one = await time(1);
  const sixteen = await time(16);
  out.forwardMs1 = one;
  out.forwardMs16 = sixteen;
  out.rows16OverRows1 = sixteen / one;
}
console.log(JSON.stringify(out));
Deno.exit(0);
