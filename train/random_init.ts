/**
 * A Llama with random weights, the starting point of pretraining from scratch.
 *
 * @module
 */

import { SeededRandom } from "../core/mod.ts";
import { expectedTensorShapes, llamaConfigToJson, parseLlamaConfig, writeSafetensors } from "../model/mod.ts";

/** A standard-normal draw (Box-Muller) from a seeded uniform source. */
function gaussian(next: () => number): number {
  const u = Math.max(1e-12, next()), w = next();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * w);
}

/**
 * Writes a model directory with random weights (normal σ=0.02, norms 1) for a config.json object,
 * and the tokenizer files of `tokenizerDir`: the starting point of pretraining.
 *
 * @param dir the new model directory
 * @param configJson a config.json object (Hugging Face Llama fields)
 * @param configFile where the config came from, for errors
 * @param tokenizerDir the directory with tokenizer.json (and tokenizer_config.json if any)
 * @param seed seed of the weights
 *
 * @example
 * ```ts ignore
 * await writeRandomModel("runs/init", config, "config.json", "tokenizer/", 1);
 * ```
 */
export async function writeRandomModel(
  dir: string,
  configJson: unknown,
  configFile: string,
  tokenizerDir: string,
  seed: number,
): Promise<void> {
  const cfg = parseLlamaConfig(configJson, configFile);
  const random = new SeededRandom(seed);
  const next = () => random.next();
  const tensors = [...expectedTensorShapes(cfg)].map(([name, shape]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (name.endsWith("norm.weight")) data.fill(1);
    else for (let i = 0; i < n; i++) data[i] = 0.02 * gaussian(next);
    return { name, dtype: "F32" as const, shape, data };
  });
  // Built in a temporary directory and renamed into place: `dir` is complete or absent.
  const tmp = `${dir}.tmp`;
  await Deno.remove(tmp, { recursive: true }).catch(() => {});
  await Deno.mkdir(tmp, { recursive: true });
  await writeSafetensors(`${tmp}/model.safetensors`, tensors);
  await Deno.writeTextFile(
    `${tmp}/config.json`,
    JSON.stringify({ ...llamaConfigToJson(cfg) }, null, 2) + "\n",
  );
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) {
    await Deno.copyFile(`${tokenizerDir}/${f}`, `${tmp}/${f}`).catch((e) => {
      if (f === "tokenizer.json") throw e;
    });
  }
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await Deno.rename(tmp, dir);
}
