/**
 * CLLM on WebGPU: Llama-family models in WGSL compute shaders, with Jacobi decoding and
 * consistency training (Kou et al. 2024, "CLLMs: Consistency Large Language Models").
 *
 * This entry point is the public API: the device, loading a model, generation with any decoder
 * (one typed {@linkcode Decoder} description), training, trajectories and evaluation. The layers
 * below it (`core`, `kernels`, `model`, `decode`, `train`) stay importable by path for those who
 * write kernels or decoders; their names are not part of this API.
 *
 * @example Generating text from a model directory
 * ```ts ignore
 * import { directoryFiles, generateText, loadPretrained, requestGpu } from "@cllm/webgpu";
 * const gpu = await requestGpu();
 * const pretrained = await loadPretrained(gpu, directoryFiles("demo/models/gsm-tiny-cllm"));
 * const gen = generateText(pretrained, "Question: ...", {
 *   maxNewTokens: 64,
 *   decoder: { kind: "jacobi", blockSize: 16, sliding: true },
 * });
 * for await (const piece of gen.pieces) console.log(piece);
 * console.log((await gen.result).stats.tokensPerForward);
 * ```
 *
 * @example In a browser, from files the user picked
 * ```ts ignore
 * import { loadPretrained, memoryFiles, requestGpu } from "@cllm/webgpu";
 * const files = Object.fromEntries([...input.files].map((f) => [f.name, f]));
 * const pretrained = await loadPretrained(await requestGpu(), memoryFiles("upload", files));
 * ```
 *
 * @module
 */

// The device.
export {
  type Gpu,
  type GpuAdapterSummary,
  GpuError,
  type GpuFeatures,
  type GpuOptions,
  requestGpu,
} from "./core/device.ts";
export { seededRandom } from "./core/random.ts";

// Models: files, loading, saving, tokenizer, prompts.
export { type ByteSource, type OpenByName } from "./model/byte_source.ts";
export { memoryFiles, type ModelFiles } from "./model/model_files.ts";
export { directoryFiles } from "./model/deno_files.ts";
export { loadPretrained, type Pretrained } from "./model/pretrained.ts";
export type { Llama, LoadOptions } from "./model/llama.ts";
export type { GenerationConfig, LlamaConfig } from "./model/config.ts";
export { FormatError } from "./model/format_error.ts";
export { saveModel, type SaveModelOptions } from "./model/save_model.ts";
export { type EncodeOptions, loadTokenizer, type StreamDecoder, TextTokenizer } from "./model/tokenizer.ts";
export {
  type HfTokenizerFiles,
  llamaTokenizerFiles,
  type LlamaTokenizerSpec,
} from "./model/llama_tokenizer_json.ts";
export { type ChatMessage, formatPrompt, type PromptFields } from "./model/chat_template.ts";

// Decoding: one description of a decoder, one entry point, the text layer.
export type { ArDecoder, DecodeOptions, Decoder, JacobiDecoder, LookaheadDecoder } from "./decode/decoder.ts";
export { decoderLabel, parseDecoder } from "./decode/decoder.ts";
export { decode, type DecodeResult } from "./decode/decode.ts";
export {
  type CausalLM,
  type GenerationResult,
  type GenerationStats,
  PrefixCache,
  runToEnd,
} from "./decode/generation.ts";
export type { JacobiResult, JacobiStats } from "./decode/jacobi.ts";
export type { LookaheadResult, LookaheadStats } from "./decode/lookahead.ts";
export type { BlockTrajectory } from "./decode/jacobi_stats.ts";
export type { SamplingOptions } from "./decode/sampling.ts";
export type { ReadbackOptions } from "./decode/cadence.ts";
export {
  generateFromIds,
  generateText,
  type TextGeneration,
  type TextOptions,
  type TextResult,
} from "./decode/text.ts";

// Training: trajectories, the loop, checkpoints, a model from scratch.
export {
  readTrajectories,
  type ReadTrajectoryOptions,
  type TrajectorySample,
} from "./train/trajectory_file.ts";
export type { CollectPrompt, CollectSummary } from "./train/collect.ts";
export {
  collectTrajectoryFile,
  type TrajectoryFileOptions,
  type TrajectoryFileResult,
} from "./train/trajectory_writer.ts";
export type { TrainItem } from "./train/train_step.ts";
export { type LogEntry, train, type TrainOptions, type TrainResult } from "./train/trainer.ts";
export {
  CHECKPOINT_WRITE_STEPS,
  type CheckpointWriteStep,
  directoryCheckpointStore,
  findLatestCheckpoint,
  type FoundCheckpoint,
  type WriteCheckpointOptions,
} from "./train/checkpoint.ts";
export {
  type CheckpointContents,
  type CheckpointStore,
  type HostTensor,
  memoryCheckpointStore,
  type StoredCheckpoint,
  type TrainerState,
} from "./train/checkpoint_store.ts";
export { writeRandomModel } from "./train/random_init.ts";

// Evaluation on GSM8K-style data.
export {
  encodeDocuments,
  type EvalItemResult,
  type EvalOptions,
  type EvalSummary,
  evaluateGsm8k,
  type Gsm8kItem,
  readGsm8k,
  scoreGeneration,
} from "./train/gsm8k_eval.ts";
