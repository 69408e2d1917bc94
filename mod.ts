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

// Everything that runs in a browser too (browser.ts): the device, models from memory, decoding,
// the training loop with a checkpoint store.
export * from "./browser.ts";

// Deno's file system: model directories, saving models, checkpoint directories.
export { directoryFiles } from "./model/deno_files.ts";
export { saveModel, type SaveModelOptions } from "./model/save_model.ts";
export {
  CHECKPOINT_WRITE_STEPS,
  type CheckpointWriteStep,
  directoryCheckpointStore,
  findLatestCheckpoint,
  type FoundCheckpoint,
  type WriteCheckpointOptions,
} from "./train/checkpoint.ts";
export { writeRandomModel } from "./train/random_init.ts";
// Jacobi Forcing's packed training samples (the `jacobi-forcing` TrainItem kind).
export {
  type JacobiForcingSample,
  jacobiForcingSamples,
  type NoiseSchedule,
  packJacobiForcing,
} from "./train/jacobi_forcing.ts";
// Trajectories: reading and collecting them into files.
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
