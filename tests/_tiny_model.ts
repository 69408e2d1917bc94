/**
 * A tiny random Llama written to disk by the tests: config.json + safetensors (any dtype) + a
 * byte-level tokenizer, plus the exact f32 weights the file decodes to (for the CPU reference).
 *
 * @module
 */

import {
  expectedTensorShapes,
  type LlamaConfig,
  llamaConfigToJson,
  parseLlamaConfig,
} from "../model/config.ts";
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from "../model/safetensors.ts";
import { writeSafetensors } from "../model/deno_files.ts";
import { randomArray } from "./_assert.ts";
import type { Gpu } from "../core/mod.ts";
import { directoryFiles, Llama, type LoadOptions } from "../model/mod.ts";

/** Options of {@linkcode writeTinyModel}. */
export interface TinyModelOptions {
  hiddenSize?: number;
  intermediateSize?: number;
  numLayers?: number;
  numHeads?: number;
  numKvHeads?: number;
  vocabSize?: number;
  tie?: boolean;
  dtype?: "F32" | "F16" | "BF16";
  seed?: number;
  maxPositionEmbeddings?: number;
  /** Scale of the random weights (larger = more peaked logits). */
  scale?: number;
}

/** Writes the model into `dir` and returns its config and decoded f32 weights. */
export async function writeTinyModel(
  dir: string,
  o: TinyModelOptions = {},
): Promise<{ config: LlamaConfig; weights: Map<string, Float32Array> }> {
  const json = {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: o.hiddenSize ?? 32,
    intermediate_size: o.intermediateSize ?? 48,
    num_hidden_layers: o.numLayers ?? 2,
    num_attention_heads: o.numHeads ?? 4,
    num_key_value_heads: o.numKvHeads ?? 2,
    vocab_size: o.vocabSize ?? 64,
    max_position_embeddings: o.maxPositionEmbeddings ?? 256,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: o.tie ?? false,
    bos_token_id: 1,
    eos_token_id: 2,
    hidden_act: "silu",
  };
  const config = parseLlamaConfig(json);
  const dtype = o.dtype ?? "F32";
  const weights = new Map<string, Float32Array>();
  const tensors = [];
  let seed = o.seed ?? 1;
  for (const [name, shape] of expectedTensorShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    let data = name.endsWith("norm.weight")
      ? randomArray(n, seed++, 0.2).map((v) => 1 + v)
      : randomArray(n, seed++, (o.scale ?? 1) / Math.sqrt(shape[shape.length - 1]));
    // The reference sees exactly the values the file decodes to.
    if (dtype === "BF16") data = bf16ToF32(f32ToBf16(data));
    if (dtype === "F16") data = f16ToF32(f32ToF16(data));
    weights.set(name, data);
    tensors.push({ name, dtype, shape, data });
  }
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...llamaConfigToJson(config), ...json }));
  await writeSafetensors(`${dir}/model.safetensors`, tensors);
  await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(byteTokenizer(config.vocabSize)));
  await Deno.writeTextFile(
    `${dir}/tokenizer_config.json`,
    JSON.stringify({ add_bos_token: true, bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>" }),
  );
  return { config, weights };
}

/** A word-level tokenizer over "t3", "t4", ... so any id sequence decodes and re-encodes. */
function byteTokenizer(vocabSize: number): unknown {
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  for (let i = 3; i < vocabSize; i++) vocab[`t${i}`] = i;
  const special = (id: number, content: string) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
    normalizer: null,
    pre_tokenizer: { type: "WhitespaceSplit" },
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: { type: "WordPiece", prefix: "##", cleanup: false },
    model: { type: "WordLevel", vocab, unk_token: "<unk>" },
  };
}

/**
 * Runs `fn` on a tiny Llama with peaked logits (scale 4, so top-2 gaps stay far above f32
 * summation-order noise and every decoder must agree with greedy AR exactly), written to a
 * temporary directory and loaded with `load`; removes both afterwards.
 */
export async function withPeakedTinyLlama(
  gpu: Gpu,
  seed: number,
  load: LoadOptions,
  fn: (model: Llama) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await writeTinyModel(dir, { numHeads: 4, numKvHeads: 2, vocabSize: 48, scale: 4, seed });
    const model = await Llama.load(gpu, directoryFiles(dir), load);
    try {
      await fn(model);
    } finally {
      model.destroy();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
