/**
 * The browser entry point: the same API as mod.ts without what needs Deno's file system (model
 * directories, saving models, checkpoint directories, trajectory and GSM8K files). Training runs in a
 * tab with a checkpoint store of the page's (`memoryCheckpointStore`, or any `CheckpointStore`).
 * Its import graph uses no Deno API (tests/architecture_test.ts checks it), so it bundles for a web
 * page as it is: `deno bundle --platform browser browser.ts -o cllm.js`. Models come in with
 * `memoryFiles` (from `fetch`, a file picker or the Cache API).
 *
 * @example Generating in a page
 * ```ts ignore
 * import { generateText, loadPretrained, memoryFiles, requestGpu } from "@cllm/webgpu/browser";
 * const files = { "config.json": await (await fetch("m/config.json")).arrayBuffer(), ... };
 * const p = await loadPretrained(await requestGpu(), memoryFiles("m", files));
 * for await (const piece of generateText(p, "Once upon a time", { maxNewTokens: 50 }).pieces) out.append(piece);
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
export { loadPretrained, type Pretrained } from "./model/pretrained.ts";
export type { Llama, LoadOptions } from "./model/llama.ts";
export type { GenerationConfig, LlamaConfig } from "./model/config.ts";
export { FormatError } from "./model/format_error.ts";
export { type EncodeOptions, loadTokenizer, type StreamDecoder, TextTokenizer } from "./model/tokenizer.ts";
export {
  type HfTokenizerFiles,
  llamaTokenizerFiles,
  type LlamaTokenizerSpec,
} from "./model/llama_tokenizer_json.ts";
export { type ChatMessage, formatPrompt, type PromptFields } from "./model/chat_template.ts";

// Decoding: one description of a decoder, one entry point, the text layer.
export type {
  ArDecoder,
  DecodeOptions,
  Decoder,
  DecoderSampling,
  JacobiDecoder,
  LookaheadDecoder,
} from "./decode/decoder.ts";
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
export { sampleMany, type SampleManyOptions } from "./decode/sample_many.ts";
export type { ReadbackOptions } from "./decode/cadence.ts";
export {
  generateFromIds,
  generateText,
  type TextGeneration,
  type TextOptions,
  type TextResult,
} from "./decode/text.ts";
// Training in a tab: the loop with a checkpoint store of the page's (memory by default).
export type { TrainItem } from "./train/train_step.ts";
export {
  type ConsistencySpan,
  type JacobiForcingBlock,
  type JacobiForcingSample,
  jacobiForcingSamples,
  type NoiseSchedule,
  type PackedSequence,
  packJacobiForcing,
  type TrajectoryBlockRecord,
} from "./train/jacobi_forcing.ts";
export { type LogEntry, train, type TrainOptions, type TrainResult } from "./train/trainer.ts";
export {
  type CheckpointContents,
  type CheckpointStore,
  type HostTensor,
  memoryCheckpointStore,
  type StoredCheckpoint,
  type TrainerState,
} from "./train/checkpoint_store.ts";
