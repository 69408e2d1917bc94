/**
 * Llama-family models: formats (config.json, safetensors, llama2.c), the tokenizer and chat
 * templates, the KV cache and the GPU model.
 *
 * @example Loading a model directory
 * ```ts ignore
 * import { requestGpu } from "../core/mod.ts";
 * import { directoryFiles, loadPretrained } from "./mod.ts";
 * const gpu = await requestGpu();
 * const { model, tokenizer } = await loadPretrained(gpu, directoryFiles("models/demo-cllm"));
 * ```
 *
 * @module
 */
export * from "./format_error.ts";
export * from "./byte_source.ts";
export * from "./model_files.ts";
export * from "./deno_files.ts";
export * from "./safetensors.ts";
export * from "./config.ts";
export * from "./tokenizer.ts";
export * from "./chat_template.ts";
export * from "./llama_tokenizer_json.ts";
export * from "./llama2c.ts";
export * from "./kv_cache.ts";
export * from "./llama.ts";
export * from "./llama_train.ts";
export * from "./pretrained.ts";
export * from "./save_model.ts";
export * from "./load_weights.ts";
