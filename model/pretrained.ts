/**
 * Loading everything a model directory holds: config, weights, tokenizer and generation defaults.
 *
 * @module
 */

import type { Gpu } from "../core/mod.ts";
import { type GenerationConfig, parseGenerationConfig } from "./config.ts";
import { FormatError } from "./format_error.ts";
import { Llama, type LoadOptions } from "./llama.ts";
import type { ModelFiles } from "./model_files.ts";
import { loadTokenizer, type TextTokenizer } from "./tokenizer.ts";

/** A model ready to generate: weights on the GPU, its tokenizer and generation defaults. */
export interface Pretrained {
  /** The model. */
  model: Llama;
  /** Its tokenizer. */
  tokenizer: TextTokenizer;
  /** generation_config.json, when present. */
  generation: GenerationConfig;
  /** Ids that end generation: generation_config, then config.json, then the tokenizer. */
  eosIds: number[];
}

/**
 * Loads a Hugging Face-layout model directory (or in-memory files).
 *
 * @example Loading a directory
 * ```ts ignore
 * import { requestGpu } from "../core/mod.ts";
 * import { directoryFiles, loadPretrained } from "./mod.ts";
 * const gpu = await requestGpu();
 * const { model, tokenizer } = await loadPretrained(gpu, directoryFiles("models/demo-cllm"));
 * ```
 */
export async function loadPretrained(
  gpu: Gpu,
  files: ModelFiles,
  options: LoadOptions = {},
): Promise<Pretrained> {
  // The tokenizer first: it is cheap, and a broken one should fail before gigabytes are read.
  const tokenizer = await loadTokenizer((name) => files.text(name), files.name);
  let generation: GenerationConfig = {};
  const genText = await files.text("generation_config.json");
  if (genText !== null) {
    let json: unknown;
    try {
      json = JSON.parse(genText);
    } catch (e) {
      throw new FormatError(
        `${files.name}/generation_config.json`,
        `malformed JSON (${(e as Error).message})`,
        "fix or delete the file",
      );
    }
    generation = parseGenerationConfig(json, `${files.name}/generation_config.json`);
  }
  const model = await Llama.load(gpu, files, options);
  const eosIds = [generation.eosTokenIds, model.config.eosTokenIds, tokenizer.eosIds]
    .find((ids) => ids !== undefined && ids.length > 0) ?? [];
  if (tokenizer.vocabSize > model.config.vocabSize) {
    throw new FormatError(
      `${files.name}/tokenizer.json`,
      `the tokenizer has ${tokenizer.vocabSize} ids but config.json's vocab_size is ${model.config.vocabSize}`,
      "use the tokenizer that belongs to this checkpoint",
    );
  }
  return { model, tokenizer, generation, eosIds: [...eosIds] };
}
