/**
 * Llama model configuration: parsing and validating Hugging Face `config.json` and
 * `generation_config.json`, writing `config.json` back, and the tensor names and shapes a checkpoint
 * must contain.
 *
 * Dimension letters used in shape comments: C channels (hidden size), I MLP intermediate size,
 * H query heads, KVH key/value heads, D head size, V vocabulary, L layers.
 *
 * @module
 */

import { FormatError } from "./format_error.ts";

/**
 * A validated Llama configuration (camelCase of Hugging Face `LlamaConfig`).
 *
 * @example Reading the head layout
 * ```ts ignore
 * const cfg = parseLlamaConfig(JSON.parse(await Deno.readTextFile("config.json")));
 * const groups = cfg.numHeads / cfg.numKvHeads; // query heads per key/value head
 * ```
 */
export interface LlamaConfig {
  /** C: residual stream width (`hidden_size`). */
  hiddenSize: number;
  /** I: MLP inner width (`intermediate_size`). */
  intermediateSize: number;
  /** L: transformer blocks (`num_hidden_layers`). */
  numLayers: number;
  /** H: query heads (`num_attention_heads`). */
  numHeads: number;
  /** KVH: key/value heads (`num_key_value_heads`, default H); H is a multiple of it. */
  numKvHeads: number;
  /** D: per-head size (`head_dim`, default C / H). */
  headDim: number;
  /** RMSNorm epsilon (`rms_norm_eps`, default 1e-6). */
  rmsNormEps: number;
  /** RoPE base (`rope_theta`, default 10000). */
  ropeTheta: number;
  /** RoPE scaling: only linear position interpolation is supported. */
  ropeScaling: null | { type: "linear"; factor: number };
  /** V: vocabulary size (`vocab_size`). */
  vocabSize: number;
  /** Longest sequence the model was trained for (`max_position_embeddings`, default 2048). */
  maxPositionEmbeddings: number;
  /** Whether `lm_head` shares `model.embed_tokens.weight` (`tie_word_embeddings`, default false). */
  tieWordEmbeddings: boolean;
  /** Beginning-of-sequence token (`bos_token_id`), or null when absent. */
  bosTokenId: number | null;
  /** End-of-sequence tokens (`eos_token_id`, an int or a list); empty when absent. */
  eosTokenIds: number[];
  /** MLP activation; only SiLU (SwiGLU) is supported. */
  hiddenAct: "silu";
  /** Dtype the weights were saved in (`torch_dtype`), when given. */
  torchDtype?: string;
}

/**
 * Decoding defaults from `generation_config.json`; every field is optional.
 *
 * @example Using the defaults
 * ```ts
 * import { parseGenerationConfig } from "./config.ts";
 * const gen = parseGenerationConfig({ eos_token_id: [128001, 128009], do_sample: true, temperature: 0.6 });
 * console.log(gen.eosTokenIds); // [128001, 128009]
 * ```
 */
export interface GenerationConfig {
  /** End-of-sequence tokens. */
  eosTokenIds?: number[];
  /** Beginning-of-sequence token. */
  bosTokenId?: number;
  /** Default cap on generated tokens (`max_new_tokens`). */
  maxNewTokens?: number;
  /** Sampling temperature, ≥ 0 (0 means greedy). */
  temperature?: number;
  /** Keep the k most likely tokens (`top_k`); 0 disables the filter. */
  topK?: number;
  /** Nucleus sampling mass in (0, 1] (`top_p`). */
  topP?: number;
  /** Whether to sample rather than decode greedily (`do_sample`). */
  doSample?: boolean;
}

// ===================================================================================================
// Field readers: each names the file and field and says how to fix it.
// ===================================================================================================

/** Reads fields of one JSON object, raising FormatError that name the file and field. */
class _Fields {
  constructor(readonly file: string, readonly obj: Record<string, unknown>) {}

  /** The raw value, with JSON `null` treated as absent (HF writes `null` for unset fields). */
  raw(key: string): unknown {
    const v = Object.hasOwn(this.obj, key) ? this.obj[key] : undefined;
    return v === null ? undefined : v;
  }

  fail(key: string, problem: string, fix: string): never {
    throw new FormatError(this.file, `field "${key}" ${problem}`, fix);
  }

  /** A required or defaulted positive integer. */
  positiveInt(key: string, fallback?: number): number {
    const v = this.raw(key);
    if (v === undefined) {
      if (fallback !== undefined) return fallback;
      this.fail(key, "is missing", `add it (a positive integer) from the model's original ${this.file}`);
    }
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) {
      this.fail(key, `must be a positive integer, got ${_show(v)}`, "correct it in the file");
    }
    return v;
  }

  /** An optional token id: an integer ≥ 0. */
  tokenId(key: string, value: unknown = this.raw(key)): number | undefined {
    if (value === undefined) return undefined;
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
      this.fail(key, `must be a token id (an integer ≥ 0), got ${_show(value)}`, "correct it in the file");
    }
    return value;
  }

  /** An optional token id or list of them, as HF allows for `eos_token_id`. */
  tokenIds(key: string): number[] | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    const ids = Array.isArray(v) ? v : [v];
    for (const id of ids) {
      if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0) {
        this.fail(key, `must be a token id or a list of them, got ${_show(v)}`, "correct it in the file");
      }
    }
    return ids.slice() as number[];
  }

  /** A defaulted positive finite number. */
  positiveNumber(key: string, fallback: number): number {
    const v = this.raw(key);
    if (v === undefined) return fallback;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      this.fail(key, `must be a positive number, got ${_show(v)}`, "correct it in the file");
    }
    return v;
  }

  /** An optional boolean. */
  bool(key: string): boolean | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (typeof v !== "boolean") {
      this.fail(key, `must be true or false, got ${_show(v)}`, "correct it in the file");
    }
    return v;
  }

  /** An optional string. */
  string(key: string): string | undefined {
    const v = this.raw(key);
    if (v === undefined) return undefined;
    if (typeof v !== "string") this.fail(key, `must be a string, got ${_show(v)}`, "correct it in the file");
    return v;
  }
}

function _show(value: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(value) ?? String(value);
  } catch {
    s = typeof value;
  }
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function _asObject(json: unknown, file: string, what: string): Record<string, unknown> {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new FormatError(
      file,
      `${what} must be a JSON object, got ${_show(json)}`,
      "is this the right file?",
    );
  }
  return json as Record<string, unknown>;
}

// ===================================================================================================
// config.json
// ===================================================================================================

/**
 * Parses and validates a Hugging Face Llama `config.json` (already `JSON.parse`d).
 *
 * @param json the parsed JSON
 * @param file name used in error messages
 * @returns the validated config with defaults filled in
 * @throws FormatError naming the field and the fix for anything missing, mistyped, inconsistent or
 *   unsupported (non-Llama architectures, rope scaling other than linear, activations other than SiLU)
 *
 * @example A tiny config
 * ```ts
 * import { parseLlamaConfig } from "./config.ts";
 * const cfg = parseLlamaConfig({
 *   architectures: ["LlamaForCausalLM"],
 *   hidden_size: 64, intermediate_size: 172, num_hidden_layers: 2,
 *   num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 512,
 * });
 * console.log(cfg.headDim); // 16
 * ```
 */
export function parseLlamaConfig(json: unknown, file = "config.json"): LlamaConfig {
  const f: _Fields = new _Fields(file, _asObject(json, file, "config"));

  // Architecture: only plain Llama; anything else would load with silently wrong maths.
  const archs = f.raw("architectures");
  if (archs !== undefined) {
    if (!Array.isArray(archs) || !archs.every((a) => typeof a === "string")) {
      f.fail("architectures", `must be a list of strings, got ${_show(archs)}`, 'use ["LlamaForCausalLM"]');
    }
    if (!archs.includes("LlamaForCausalLM")) {
      f.fail(
        "architectures",
        `is ${_show(archs)}, which is not supported`,
        "only LlamaForCausalLM checkpoints can be loaded",
      );
    }
  }
  const modelType = f.raw("model_type");
  if (modelType !== undefined && modelType !== "llama") {
    f.fail(
      "model_type",
      `is ${_show(modelType)}, which is not supported`,
      'only "llama" models can be loaded',
    );
  }
  const hiddenAct = f.string("hidden_act");
  if (hiddenAct !== undefined && hiddenAct !== "silu") {
    f.fail(
      "hidden_act",
      `is ${_show(hiddenAct)}, which is not supported`,
      'only "silu" (SwiGLU) is implemented',
    );
  }
  // Biases would be extra tensors the model never reads; refuse rather than drop them.
  for (const key of ["attention_bias", "mlp_bias"]) {
    if (f.bool(key) === true) {
      f.fail(key, "is true, which is not supported", "only bias-free Llama layers are implemented");
    }
  }

  // Dimensions.
  const hiddenSize = f.positiveInt("hidden_size");
  const intermediateSize = f.positiveInt("intermediate_size");
  const numLayers = f.positiveInt("num_hidden_layers");
  const numHeads = f.positiveInt("num_attention_heads");
  const numKvHeads = f.positiveInt("num_key_value_heads", numHeads);
  const vocabSize = f.positiveInt("vocab_size");
  if (numHeads % numKvHeads !== 0) {
    f.fail(
      "num_key_value_heads",
      `(${numKvHeads}) does not divide num_attention_heads (${numHeads})`,
      "grouped-query attention needs a whole number of query heads per key/value head",
    );
  }
  let headDim: number;
  if (f.raw("head_dim") !== undefined) {
    headDim = f.positiveInt("head_dim");
  } else {
    if (hiddenSize % numHeads !== 0) {
      f.fail(
        "hidden_size",
        `(${hiddenSize}) is not a multiple of num_attention_heads (${numHeads})`,
        'add "head_dim" or correct the sizes',
      );
    }
    headDim = hiddenSize / numHeads;
  }
  // RoPE rotates pairs of channels, so an odd head size cannot be right.
  if (headDim % 2 !== 0) {
    const key = f.raw("head_dim") !== undefined ? "head_dim" : "hidden_size";
    f.fail(key, `gives head size ${headDim}, which must be even for rotary embeddings`, "correct the sizes");
  }

  // Position encoding and norms.
  const rmsNormEps = f.positiveNumber("rms_norm_eps", 1e-6);
  const ropeTheta = f.positiveNumber("rope_theta", 10000);
  const maxPositionEmbeddings = f.positiveInt("max_position_embeddings", 2048);
  const ropeScaling = _parseRopeScaling(f);

  // Tokens.
  const bosTokenId = f.tokenId("bos_token_id") ?? null;
  const eosTokenIds = f.tokenIds("eos_token_id") ?? [];
  for (
    const [key, ids] of [["bos_token_id", bosTokenId === null ? [] : [bosTokenId]], [
      "eos_token_id",
      eosTokenIds,
    ]] as const
  ) {
    for (const id of ids) {
      if (id >= vocabSize) {
        f.fail(key, `${id} is outside the vocabulary (vocab_size ${vocabSize})`, "correct it in the file");
      }
    }
  }

  const cfg: LlamaConfig = {
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps,
    ropeTheta,
    ropeScaling,
    vocabSize,
    maxPositionEmbeddings,
    tieWordEmbeddings: f.bool("tie_word_embeddings") ?? false,
    bosTokenId,
    eosTokenIds,
    hiddenAct: "silu",
  };
  const torchDtype = f.string("torch_dtype");
  if (torchDtype !== undefined) cfg.torchDtype = torchDtype;
  return cfg;
}

/** `rope_scaling`: null, or linear interpolation by `factor`. Newer HF files say `rope_type`. */
function _parseRopeScaling(f: _Fields): LlamaConfig["ropeScaling"] {
  const v = f.raw("rope_scaling");
  if (v === undefined) return null;
  if (typeof v !== "object" || Array.isArray(v) || v === null) {
    f.fail("rope_scaling", `must be an object or null, got ${_show(v)}`, "correct it in the file");
  }
  const scaling: _Fields = new _Fields(f.file, v as Record<string, unknown>);
  const type = scaling.raw("type") ?? scaling.raw("rope_type");
  if (type === "default") return null; // newer HF writes {"rope_type": "default"} for "no scaling"
  if (type !== "linear") {
    // Worded as "rope_scaling type ..." (not 'field "rope_scaling" ...'): the type is what is refused.
    throw new FormatError(f.file, `rope_scaling type ${_show(type)} is not supported`, "only linear is");
  }
  const factor = scaling.raw("factor");
  if (typeof factor !== "number" || !Number.isFinite(factor) || factor <= 0) {
    f.fail(
      "rope_scaling",
      `factor must be a positive number, got ${_show(factor)}`,
      "correct it in the file",
    );
  }
  return { type: "linear", factor };
}

/**
 * Converts a config back to Hugging Face `config.json` fields (for saving a fine-tuned model).
 * `head_dim` is written only when it differs from hidden_size / num_attention_heads, so older loaders
 * that do not know the field read the same model.
 *
 * @param cfg the config
 * @returns a JSON-ready object that {@link parseLlamaConfig} reads back to an equal config
 *
 * @example Saving a config
 * ```ts ignore
 * await Deno.writeTextFile("out/config.json", JSON.stringify(llamaConfigToJson(cfg), null, 2));
 * ```
 */
export function llamaConfigToJson(cfg: LlamaConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: cfg.hiddenSize,
    intermediate_size: cfg.intermediateSize,
    num_hidden_layers: cfg.numLayers,
    num_attention_heads: cfg.numHeads,
    num_key_value_heads: cfg.numKvHeads,
  };
  if (cfg.headDim * cfg.numHeads !== cfg.hiddenSize) out.head_dim = cfg.headDim;
  Object.assign(out, {
    hidden_act: cfg.hiddenAct,
    rms_norm_eps: cfg.rmsNormEps,
    rope_theta: cfg.ropeTheta,
    rope_scaling: cfg.ropeScaling === null ? null : { type: "linear", factor: cfg.ropeScaling.factor },
    vocab_size: cfg.vocabSize,
    max_position_embeddings: cfg.maxPositionEmbeddings,
    tie_word_embeddings: cfg.tieWordEmbeddings,
  });
  if (cfg.bosTokenId !== null) out.bos_token_id = cfg.bosTokenId;
  if (cfg.eosTokenIds.length === 1) out.eos_token_id = cfg.eosTokenIds[0];
  else if (cfg.eosTokenIds.length > 1) out.eos_token_id = cfg.eosTokenIds.slice();
  if (cfg.torchDtype !== undefined) out.torch_dtype = cfg.torchDtype;
  return out;
}

// ===================================================================================================
// generation_config.json
// ===================================================================================================

/**
 * Parses and validates `generation_config.json` (already `JSON.parse`d). Unknown fields are ignored;
 * `null` counts as absent.
 *
 * @param json the parsed JSON
 * @param file name used in error messages
 * @returns the fields that are present
 * @throws FormatError naming the field for a mistyped or out-of-range value
 *
 * @example An int eos id becomes a list
 * ```ts
 * import { parseGenerationConfig } from "./config.ts";
 * parseGenerationConfig({ bos_token_id: 1, eos_token_id: 2 }); // { bosTokenId: 1, eosTokenIds: [2] }
 * ```
 */
export function parseGenerationConfig(json: unknown, file = "generation_config.json"): GenerationConfig {
  const f: _Fields = new _Fields(file, _asObject(json, file, "generation config"));
  const out: GenerationConfig = {};
  const eos = f.tokenIds("eos_token_id");
  if (eos !== undefined) out.eosTokenIds = eos;
  const bos = f.tokenId("bos_token_id");
  if (bos !== undefined) out.bosTokenId = bos;
  if (f.raw("max_new_tokens") !== undefined) out.maxNewTokens = f.positiveInt("max_new_tokens");
  const temperature = f.raw("temperature");
  if (temperature !== undefined) {
    if (typeof temperature !== "number" || !Number.isFinite(temperature) || temperature < 0) {
      f.fail("temperature", `must be a number ≥ 0, got ${_show(temperature)}`, "correct it in the file");
    }
    out.temperature = temperature;
  }
  const topK = f.raw("top_k");
  if (topK !== undefined) {
    if (typeof topK !== "number" || !Number.isSafeInteger(topK) || topK < 0) {
      f.fail("top_k", `must be an integer ≥ 0, got ${_show(topK)}`, "correct it in the file (0 disables it)");
    }
    out.topK = topK;
  }
  const topP = f.raw("top_p");
  if (topP !== undefined) {
    if (typeof topP !== "number" || !(topP > 0 && topP <= 1)) {
      f.fail("top_p", `must be in (0, 1], got ${_show(topP)}`, "correct it in the file (1 disables it)");
    }
    out.topP = topP;
  }
  const doSample = f.bool("do_sample");
  if (doSample !== undefined) out.doSample = doSample;
  return out;
}

// ===================================================================================================
// Checkpoint layout
// ===================================================================================================

/**
 * The tensors a Hugging Face Llama checkpoint holds, by exact checkpoint name, with their shapes
 * (PyTorch `nn.Linear` weights are (out, in)). `lm_head.weight` is listed only when embeddings are not
 * tied.
 *
 * @param cfg the config
 * @returns name → shape, in checkpoint order
 *
 * @example Checking a loaded checkpoint
 * ```ts
 * import { expectedTensorShapes, parseLlamaConfig } from "./config.ts";
 * const cfg = parseLlamaConfig({
 *   hidden_size: 8, intermediate_size: 16, num_hidden_layers: 1, num_attention_heads: 2, vocab_size: 10,
 * });
 * expectedTensorShapes(cfg).get("model.layers.0.mlp.down_proj.weight"); // [8, 16]
 * ```
 */
export function expectedTensorShapes(cfg: LlamaConfig): Map<string, number[]> {
  const C = cfg.hiddenSize, I = cfg.intermediateSize, V = cfg.vocabSize;
  const H = cfg.numHeads, KVH = cfg.numKvHeads, D = cfg.headDim;
  const shapes = new Map<string, number[]>();
  shapes.set("model.embed_tokens.weight", [V, C]);
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `model.layers.${i}`;
    shapes.set(`${p}.input_layernorm.weight`, [C]);
    shapes.set(`${p}.self_attn.q_proj.weight`, [H * D, C]);
    shapes.set(`${p}.self_attn.k_proj.weight`, [KVH * D, C]);
    shapes.set(`${p}.self_attn.v_proj.weight`, [KVH * D, C]);
    shapes.set(`${p}.self_attn.o_proj.weight`, [C, H * D]);
    shapes.set(`${p}.post_attention_layernorm.weight`, [C]);
    shapes.set(`${p}.mlp.gate_proj.weight`, [I, C]);
    shapes.set(`${p}.mlp.up_proj.weight`, [I, C]);
    shapes.set(`${p}.mlp.down_proj.weight`, [C, I]);
  }
  shapes.set("model.norm.weight", [C]);
  if (!cfg.tieWordEmbeddings) shapes.set("lm_head.weight", [V, C]);
  return shapes;
}

/**
 * Number of parameters (tied embeddings counted once).
 *
 * @param cfg the config
 * @returns the sum of all tensor sizes from {@link expectedTensorShapes}
 *
 * @example Llama-2-7B
 * ```ts ignore
 * paramCount(parseLlamaConfig(llama2_7b)); // 6738415616
 * ```
 */
export function paramCount(cfg: LlamaConfig): number {
  let total = 0;
  for (const shape of expectedTensorShapes(cfg).values()) total += shape.reduce((a, b) => a * b, 1);
  return total;
}
