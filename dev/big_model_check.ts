/**
 * A real-size run end to end: writes a random checkpoint of a named real shape to a temporary folder
 * (dev/random_checkpoint.ts), loads it with a chosen weight storage, decodes N tokens with greedy AR
 * and with Jacobi, and reports the load time, the GPU weight bytes, the peak resident memory, both
 * decoders' tokens/s and whether their outputs are identical. The checkpoint is deleted afterwards.
 *
 *     deno run -A dev/big_model_check.ts --shape llama-2-7b --stored f16 --dtype q4 --tokens 16
 *
 * (The Llama-2-7B figures in the README come from this run: 13.5 GB on disk, a few minutes here.)
 *
 * @module
 */

import { parseArgs } from "node:util";
import { readTensors, requestGpu } from "../core/mod.ts";
import { decode } from "../decode/decode.ts";
import { runToEnd } from "../decode/generation.ts";
import { directoryFiles, Llama } from "../model/mod.ts";
import type { LoadOptions } from "../model/llama.ts";
import { REAL_SHAPES, writeRandomCheckpoint } from "./random_checkpoint.ts";

/** Peak resident set size of this process (Linux), in GB. */
function peakRssGB(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
  return m ? (Number(m[1]) * 1024) / 1e9 : NaN;
}

const seconds = (t0: number) => (performance.now() - t0) / 1000;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    shape: { type: "string", default: "llama-2-7b" },
    layers: { type: "string" },
    stored: { type: "string", default: "f16" },
    dtype: { type: "string", default: "q4" },
    tokens: { type: "string", default: "16" },
    block: { type: "string", default: "4" },
  },
});
if (!REAL_SHAPES[values.shape]) {
  console.error(`--shape must be one of ${Object.keys(REAL_SHAPES).join(", ")}`);
  Deno.exit(2);
}
const tokens = Number(values.tokens);
const dir = await Deno.makeTempDir({ prefix: "big_model_check_" });
try {
  let t0 = performance.now();
  const bytes = await writeRandomCheckpoint(dir, {
    shape: values.shape,
    layers: values.layers ? Number(values.layers) : undefined,
    dtype: values.stored.toUpperCase() as "F32" | "F16" | "BF16",
    shards: 2,
  });
  console.log(
    `${values.shape} ${values.stored}: ${(bytes / 1e9).toFixed(2)} GB written in ${seconds(t0).toFixed(1)} s`,
  );
  const gpu = await requestGpu();
  t0 = performance.now();
  const model = await Llama.load(gpu, directoryFiles(dir), {
    dtype: values.dtype as LoadOptions["dtype"],
    maxLength: 256,
    maxRows: 16,
  });
  await readTensors(gpu, [model.norm]); // the uploads and conversions have run
  let gpuBytes = 0;
  for (const t of [...model.weights.values(), ...[...model.splitWeights.values()].flat()]) {
    gpuBytes += t.byteLength;
  }
  console.log(
    `--dtype ${values.dtype}: loaded in ${seconds(t0).toFixed(1)} s, GPU weights ${
      (gpuBytes / 1e9).toFixed(2)
    } GB, ` +
      `peak RSS ${peakRssGB().toFixed(2)} GB`,
  );
  const prompt = [1, 300, 400, 500, 600, 700, 800, 900];
  const outputs = [];
  for (const decoder of [{ kind: "ar" }, { kind: "jacobi", blockSize: Number(values.block) }] as const) {
    t0 = performance.now();
    const { result } = await runToEnd(decode(model, prompt, decoder, { maxNewTokens: tokens }));
    const s = seconds(t0);
    console.log(
      `${decoder.kind}: ${result.tokens.length} tokens in ${s.toFixed(1)} s = ${
        (result.tokens.length / s).toFixed(3)
      } tokens/s`,
    );
    outputs.push(result.tokens);
  }
  // The iterations queued behind the last read (a 7B forward takes ~20 s here) must finish before
  // the process exits: wgpu gives up waiting for them at exit and Deno reports a panic.
  await gpu.device.queue.onSubmittedWorkDone();
  const identical = JSON.stringify(outputs[0]) === JSON.stringify(outputs[1]);
  console.log(`Jacobi identical to AR: ${identical ? "yes" : "NO"}; peak RSS ${peakRssGB().toFixed(2)} GB`);
  model.destroy();
  if (!identical) Deno.exitCode = 1;
} finally {
  await Deno.remove(dir, { recursive: true });
}
