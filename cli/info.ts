/**
 * `cllm info`: what a model directory holds and what it needs, without loading the weights.
 *
 * @module
 */

import {
  directoryFiles,
  expectedTensorShapes,
  FormatError,
  openCheckpointTensors,
  paramCount,
  parseLlamaConfig,
} from "../model/mod.ts";
import { parse, required } from "./args.ts";
import { modelDirectory } from "./load.ts";

const HELP = `Usage: deno task cllm info --model DIR [--json]

Prints the config, the parameter count, the stored dtypes and the GPU memory the model needs.`;

/** Runs `info`. */
export async function infoCommand(args: string[]): Promise<void> {
  const v = parse("info", args, { model: { type: "string" }, json: { type: "boolean" } });
  if (v.help) return console.log(HELP);
  const dir = await modelDirectory(required(v, "model", "info"));
  const files = directoryFiles(dir);
  const text = await files.text("config.json");
  if (text === null) {
    throw new FormatError(`${dir}/config.json`, "the file does not exist", "is this a model directory?");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new FormatError(
      `${dir}/config.json`,
      `malformed JSON (${(e as Error).message})`,
      "fix or regenerate it",
    );
  }
  const cfg = parseLlamaConfig(json, `${dir}/config.json`);
  const ckpt = await openCheckpointTensors((f) => files.source(f));
  const dtypes = new Map<string, number>();
  for (const name of ckpt.names()) {
    const d = ckpt.get(name)!.dtype;
    dtypes.set(d, (dtypes.get(d) ?? 0) + 1);
  }
  const params = paramCount(cfg);
  // Weight matrices load as stored (16-bit stays 16-bit), norms as f32; the KV cache is
  // 2 * L * S * KVH * D f32 values.
  const context = Math.min(cfg.maxPositionEmbeddings, 2048);
  const cacheBytes = 2 * cfg.numLayers * context * cfg.numKvHeads * cfg.headDim * 4;
  let largest = 0;
  let weightBytes = 0;
  for (const [name, shape] of expectedTensorShapes(cfg)) {
    const stored = ckpt.get(name)?.dtype;
    const bytes = shape.reduce((a, b) => a * b, 1) * (shape.length === 2 && stored !== "F32" ? 2 : 4);
    weightBytes += bytes;
    largest = Math.max(largest, bytes);
  }
  const summary = {
    model: dir,
    config: cfg,
    parameters: params,
    storedDtypes: Object.fromEntries(dtypes),
    gpuMemoryBytes: { weights: weightBytes, kvCache: cacheBytes, context, largestTensor: largest },
  };
  if (v.json) return console.log(JSON.stringify(summary, null, 2));
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  console.log(`model          ${dir}`);
  console.log(
    `architecture   Llama: ${cfg.numLayers} layers, hidden ${cfg.hiddenSize}, MLP ${cfg.intermediateSize}, ` +
      `${cfg.numHeads} heads (${cfg.numKvHeads} KV, head size ${cfg.headDim}), vocab ${cfg.vocabSize}`,
  );
  console.log(
    `rope           theta ${cfg.ropeTheta}${
      cfg.ropeScaling ? `, linear scaling ${cfg.ropeScaling.factor}` : ""
    }; ` +
      `rms eps ${cfg.rmsNormEps}; tied embeddings ${cfg.tieWordEmbeddings}`,
  );
  console.log(`parameters     ${params.toLocaleString("en-US")}`);
  console.log(`stored dtypes  ${[...dtypes].map(([d, n]) => `${d} (${n} tensors)`).join(", ")}`);
  console.log(
    `GPU memory     weights ${mib(weightBytes)} (as stored; ${mib(params * 4)} in f32) + KV cache ${
      mib(cacheBytes)
    } at ${context} positions; ` +
      `largest tensor ${mib(largest)}`,
  );
}
