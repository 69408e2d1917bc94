import assert from "node:assert/strict";
import {
  expectedTensorShapes,
  type LlamaConfig,
  llamaConfigToJson,
  paramCount,
  parseGenerationConfig,
  parseLlamaConfig,
} from "../../model/config.ts";
import { FormatError } from "../../model/format_error.ts";

/** meta-llama/Llama-2-7b-hf config.json, verbatim. */
const LLAMA2_7B = {
  architectures: ["LlamaForCausalLM"],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: "silu",
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 11008,
  max_position_embeddings: 4096,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 32,
  pretraining_tp: 1,
  rms_norm_eps: 1e-05,
  rope_scaling: null,
  tie_word_embeddings: false,
  torch_dtype: "float16",
  transformers_version: "4.31.0.dev0",
  use_cache: true,
  vocab_size: 32000,
};

/** TinyLlama-1.1B-Chat-v1.0 config.json (grouped-query attention: 32 query heads, 4 KV heads). */
const TINYLLAMA = {
  architectures: ["LlamaForCausalLM"],
  attention_bias: false,
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: "silu",
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 5632,
  max_position_embeddings: 2048,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 22,
  num_key_value_heads: 4,
  pretraining_tp: 1,
  rms_norm_eps: 1e-05,
  rope_scaling: null,
  rope_theta: 10000.0,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
  transformers_version: "4.35.0",
  use_cache: true,
  vocab_size: 32000,
};

/** Asserts a FormatError whose message names the file and contains every fragment. */
function throwsFormat(fn: () => unknown, file: string, ...fragments: string[]): void {
  let caught: unknown = undefined;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(
    caught instanceof FormatError,
    `expected FormatError containing ${JSON.stringify(fragments)}, got ${caught}`,
  );
  assert.ok(caught.message.startsWith(`Cannot load "${file}": `), caught.message);
  for (const frag of fragments) {
    assert.ok(
      caught.message.includes(frag),
      `message ${JSON.stringify(caught.message)} lacks ${JSON.stringify(frag)}`,
    );
  }
}

Deno.test("a real Llama-2-7B config parses with the right values", () => {
  const cfg = parseLlamaConfig(LLAMA2_7B);
  const want: LlamaConfig = {
    hiddenSize: 4096,
    intermediateSize: 11008,
    numLayers: 32,
    numHeads: 32,
    numKvHeads: 32,
    headDim: 128,
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    vocabSize: 32000,
    maxPositionEmbeddings: 4096,
    tieWordEmbeddings: false,
    bosTokenId: 1,
    eosTokenIds: [2],
    hiddenAct: "silu",
    torchDtype: "float16",
  };
  assert.deepEqual(cfg, want);
  // 6.74B parameters, as published for Llama-2-7B.
  assert.equal(paramCount(cfg), 6738415616);
  const shapes = expectedTensorShapes(cfg);
  assert.equal(shapes.size, 2 + 32 * 9 + 1);
  assert.deepEqual(shapes.get("model.layers.31.mlp.down_proj.weight"), [4096, 11008]);
  assert.deepEqual(shapes.get("lm_head.weight"), [32000, 4096]);
});

Deno.test("grouped-query attention: TinyLlama's key/value projections are narrower", () => {
  const cfg = parseLlamaConfig(TINYLLAMA);
  assert.equal(cfg.numKvHeads, 4);
  assert.equal(cfg.headDim, 64);
  assert.equal(cfg.torchDtype, "bfloat16");
  const shapes = expectedTensorShapes(cfg);
  assert.deepEqual(shapes.get("model.layers.0.self_attn.q_proj.weight"), [2048, 2048]);
  assert.deepEqual(shapes.get("model.layers.0.self_attn.k_proj.weight"), [256, 2048]);
  assert.deepEqual(shapes.get("model.layers.0.self_attn.v_proj.weight"), [256, 2048]);
  assert.deepEqual(shapes.get("model.layers.0.self_attn.o_proj.weight"), [2048, 2048]);
  assert.equal(paramCount(cfg), 1100048384); // TinyLlama-1.1B
});

Deno.test("defaults for a minimal config, and tied embeddings drop lm_head", () => {
  const cfg = parseLlamaConfig({
    hidden_size: 64,
    intermediate_size: 172,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    vocab_size: 100,
    tie_word_embeddings: true,
  });
  assert.equal(cfg.numKvHeads, 4);
  assert.equal(cfg.headDim, 16);
  assert.equal(cfg.rmsNormEps, 1e-6);
  assert.equal(cfg.ropeTheta, 10000);
  assert.equal(cfg.ropeScaling, null);
  assert.equal(cfg.maxPositionEmbeddings, 2048);
  assert.equal(cfg.bosTokenId, null);
  assert.deepEqual(cfg.eosTokenIds, []);
  assert.equal(cfg.torchDtype, undefined);
  const shapes = expectedTensorShapes(cfg);
  assert.ok(!shapes.has("lm_head.weight"));
  const C = 64, I = 172, V = 100, L = 2;
  assert.equal(paramCount(cfg), V * C + L * (2 * C + 4 * C * C + 3 * C * I) + C);
});

Deno.test("eos_token_id may be an int, a list or absent; null counts as absent", () => {
  const base = { ...LLAMA2_7B, vocab_size: 128256 };
  assert.deepEqual(parseLlamaConfig({ ...base, eos_token_id: 2 }).eosTokenIds, [2]);
  assert.deepEqual(parseLlamaConfig({ ...base, eos_token_id: [128001, 128008, 128009] }).eosTokenIds, [
    128001,
    128008,
    128009,
  ]);
  const { eos_token_id: _, ...noEos } = base;
  assert.deepEqual(parseLlamaConfig(noEos).eosTokenIds, []);
  assert.deepEqual(parseLlamaConfig({ ...base, eos_token_id: null, bos_token_id: null }).eosTokenIds, []);
  assert.equal(parseLlamaConfig({ ...base, bos_token_id: null }).bosTokenId, null);
});

Deno.test("head_dim may be given explicitly and then need not equal hidden/heads", () => {
  const cfg = parseLlamaConfig({ ...LLAMA2_7B, head_dim: 256 });
  assert.equal(cfg.headDim, 256);
  assert.deepEqual(expectedTensorShapes(cfg).get("model.layers.0.self_attn.q_proj.weight"), [32 * 256, 4096]);
  assert.deepEqual(expectedTensorShapes(cfg).get("model.layers.0.self_attn.o_proj.weight"), [4096, 32 * 256]);
});

Deno.test("rope_scaling: linear accepted (type or rope_type), everything else refused by name", () => {
  assert.deepEqual(
    parseLlamaConfig({ ...LLAMA2_7B, rope_scaling: { type: "linear", factor: 4 } }).ropeScaling,
    {
      type: "linear",
      factor: 4,
    },
  );
  assert.deepEqual(
    parseLlamaConfig({ ...LLAMA2_7B, rope_scaling: { rope_type: "linear", factor: 2.5 } }).ropeScaling,
    { type: "linear", factor: 2.5 },
  );
  assert.equal(parseLlamaConfig({ ...LLAMA2_7B, rope_scaling: { rope_type: "default" } }).ropeScaling, null);
  throwsFormat(
    () => parseLlamaConfig({ ...LLAMA2_7B, rope_scaling: { type: "yarn", factor: 4 } }),
    "config.json",
    'rope_scaling type "yarn" is not supported; only linear is',
  );
  for (const type of ["dynamic", "llama3", "longrope"]) {
    throwsFormat(
      () => parseLlamaConfig({ ...LLAMA2_7B, rope_scaling: { rope_type: type, factor: 8 } }),
      "config.json",
      `rope_scaling type "${type}" is not supported`,
    );
  }
  throwsFormat(
    () => parseLlamaConfig({ ...LLAMA2_7B, rope_scaling: { type: "linear", factor: 0 } }),
    "config.json",
    "rope_scaling",
    "factor must be a positive number, got 0",
  );
  throwsFormat(
    () => parseLlamaConfig({ ...LLAMA2_7B, rope_scaling: { type: "linear" } }),
    "config.json",
    "factor must be a positive number",
  );
  throwsFormat(
    () => parseLlamaConfig({ ...LLAMA2_7B, rope_scaling: "linear" }),
    "config.json",
    '"rope_scaling" must be an object or null',
  );
});

Deno.test("each bad config field gives a FormatError naming the file and the field", () => {
  const { hidden_size: _, ...noHidden } = LLAMA2_7B;
  const cases: [Record<string, unknown>, string, string][] = [
    [noHidden, '"hidden_size"', "is missing"],
    [{ ...LLAMA2_7B, hidden_size: "4096" }, '"hidden_size"', 'must be a positive integer, got "4096"'],
    [{ ...LLAMA2_7B, hidden_size: 0 }, '"hidden_size"', "got 0"],
    [{ ...LLAMA2_7B, intermediate_size: -1 }, '"intermediate_size"', "got -1"],
    [{ ...LLAMA2_7B, num_hidden_layers: 1.5 }, '"num_hidden_layers"', "got 1.5"],
    [{ ...LLAMA2_7B, num_attention_heads: null }, '"num_attention_heads"', "is missing"],
    [{ ...LLAMA2_7B, vocab_size: 1e20 }, '"vocab_size"', "must be a positive integer"],
    [
      { ...LLAMA2_7B, num_key_value_heads: 5 },
      '"num_key_value_heads"',
      "(5) does not divide num_attention_heads (32)",
    ],
    [{ ...LLAMA2_7B, num_key_value_heads: 0 }, '"num_key_value_heads"', "got 0"],
    [
      { ...LLAMA2_7B, hidden_size: 4100 },
      '"hidden_size"',
      "(4100) is not a multiple of num_attention_heads (32)",
    ],
    [{ ...LLAMA2_7B, head_dim: 0 }, '"head_dim"', "got 0"],
    [{ ...LLAMA2_7B, head_dim: 127 }, '"head_dim"', "must be even"],
    [{ ...LLAMA2_7B, rms_norm_eps: 0 }, '"rms_norm_eps"', "must be a positive number, got 0"],
    [{ ...LLAMA2_7B, rms_norm_eps: "1e-5" }, '"rms_norm_eps"', "must be a positive number"],
    [{ ...LLAMA2_7B, rope_theta: -10000 }, '"rope_theta"', "got -10000"],
    [{ ...LLAMA2_7B, max_position_embeddings: 0 }, '"max_position_embeddings"', "got 0"],
    [{ ...LLAMA2_7B, tie_word_embeddings: "false" }, '"tie_word_embeddings"', "must be true or false"],
    [{ ...LLAMA2_7B, bos_token_id: -1 }, '"bos_token_id"', "must be a token id"],
    [{ ...LLAMA2_7B, bos_token_id: 32000 }, '"bos_token_id"', "outside the vocabulary (vocab_size 32000)"],
    [{ ...LLAMA2_7B, eos_token_id: 1.5 }, '"eos_token_id"', "must be a token id"],
    [{ ...LLAMA2_7B, eos_token_id: [2, "3"] }, '"eos_token_id"', 'got [2,"3"]'],
    [{ ...LLAMA2_7B, eos_token_id: [2, 40000] }, '"eos_token_id"', "40000 is outside the vocabulary"],
    [{ ...LLAMA2_7B, hidden_act: "gelu" }, '"hidden_act"', '"gelu", which is not supported'],
    [{ ...LLAMA2_7B, hidden_act: 3 }, '"hidden_act"', "must be a string"],
    [{ ...LLAMA2_7B, torch_dtype: 16 }, '"torch_dtype"', "must be a string"],
    [{ ...LLAMA2_7B, architectures: ["MistralForCausalLM"] }, '"architectures"', '["MistralForCausalLM"]'],
    [{ ...LLAMA2_7B, architectures: "LlamaForCausalLM" }, '"architectures"', "must be a list of strings"],
    [{ ...LLAMA2_7B, model_type: "mistral" }, '"model_type"', '"mistral", which is not supported'],
    [{ ...LLAMA2_7B, attention_bias: true }, '"attention_bias"', "is true"],
    [{ ...LLAMA2_7B, mlp_bias: true }, '"mlp_bias"', "is true"],
  ];
  for (const [json, field, problem] of cases) {
    throwsFormat(
      () => parseLlamaConfig(json, "weights/config.json"),
      "weights/config.json",
      `field ${field}`,
      problem,
    );
  }
  for (const notObject of [null, [], "config", 7]) {
    throwsFormat(() => parseLlamaConfig(notObject), "config.json", "config must be a JSON object");
  }
});

Deno.test("llamaConfigToJson round-trips through parseLlamaConfig", () => {
  const configs = [
    parseLlamaConfig(LLAMA2_7B),
    parseLlamaConfig(TINYLLAMA),
    parseLlamaConfig({ ...LLAMA2_7B, head_dim: 64, rope_scaling: { type: "linear", factor: 2 } }),
    parseLlamaConfig({
      ...LLAMA2_7B,
      vocab_size: 128256,
      eos_token_id: [128001, 128009],
      bos_token_id: null,
    }),
  ];
  for (const cfg of configs) {
    const json = JSON.parse(JSON.stringify(llamaConfigToJson(cfg)));
    assert.deepEqual(parseLlamaConfig(json), cfg);
    assert.deepEqual(json.architectures, ["LlamaForCausalLM"]);
  }
  assert.equal(llamaConfigToJson(configs[0]).head_dim, undefined, "head_dim omitted when implied");
  assert.equal(llamaConfigToJson(configs[2]).head_dim, 64);
  assert.equal(llamaConfigToJson(configs[0]).eos_token_id, 2, "a single eos id is written as an int");
});

Deno.test("parseGenerationConfig reads the decoding defaults", () => {
  assert.deepEqual(parseGenerationConfig({ bos_token_id: 1, eos_token_id: 2, max_length: 4096 }), {
    bosTokenId: 1,
    eosTokenIds: [2],
  });
  assert.deepEqual(
    parseGenerationConfig({
      bos_token_id: 128000,
      do_sample: true,
      eos_token_id: [128001, 128008, 128009],
      temperature: 0.6,
      top_p: 0.9,
      top_k: 50,
      max_new_tokens: 256,
      pad_token_id: null,
      transformers_version: "4.42.3",
    }),
    {
      bosTokenId: 128000,
      doSample: true,
      eosTokenIds: [128001, 128008, 128009],
      temperature: 0.6,
      topP: 0.9,
      topK: 50,
      maxNewTokens: 256,
    },
  );
  assert.deepEqual(parseGenerationConfig({ temperature: null, top_p: null }), {});
  assert.deepEqual(parseGenerationConfig({ temperature: 0, top_k: 0, top_p: 1 }), {
    temperature: 0,
    topK: 0,
    topP: 1,
  });
});

Deno.test("bad generation config fields give FormatErrors naming the field", () => {
  const file = "generation_config.json";
  const cases: [Record<string, unknown>, string, string][] = [
    [{ eos_token_id: "2" }, '"eos_token_id"', "must be a token id"],
    [{ eos_token_id: [2, -1] }, '"eos_token_id"', "must be a token id"],
    [{ bos_token_id: 1.5 }, '"bos_token_id"', "must be a token id"],
    [{ max_new_tokens: 0 }, '"max_new_tokens"', "must be a positive integer"],
    [{ temperature: -0.1 }, '"temperature"', "must be a number ≥ 0"],
    [{ temperature: "0.7" }, '"temperature"', "must be a number ≥ 0"],
    [{ top_k: -1 }, '"top_k"', "must be an integer ≥ 0"],
    [{ top_k: 2.5 }, '"top_k"', "must be an integer ≥ 0"],
    [{ top_p: 0 }, '"top_p"', "must be in (0, 1]"],
    [{ top_p: 1.5 }, '"top_p"', "must be in (0, 1]"],
    [{ do_sample: "true" }, '"do_sample"', "must be true or false"],
  ];
  for (const [json, field, problem] of cases) {
    throwsFormat(() => parseGenerationConfig(json), file, `field ${field}`, problem);
  }
  throwsFormat(() => parseGenerationConfig([]), file, "generation config must be a JSON object");
});
