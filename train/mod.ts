/**
 * Consistency training: Jacobi-trajectory files, their collection (and the resumable writer),
 * the AR and consistency losses, the training step and loop (AdamW, clipping, cosine schedule),
 * crash-safe checkpoints, and GSM8K evaluation.
 *
 * @example Training a CLLM from trajectories
 * ```ts ignore
 * import { readTrajectories, train } from "./mod.ts";
 * const samples = readTrajectories(text, { vocabSize: 32000, file: "traj.jsonl" });
 * await train(pretrained, samples.map((s) => ({ kind: "cllm", ...s })), { out: "run", modelDir, steps: 100,
 *   lr: 2e-5, batch: 4, eosIds: pretrained.eosIds });
 * ```
 *
 * @module
 */
export * from "./trajectory_file.ts";
export * from "./collect.ts";
export * from "./losses.ts";
export * from "./schedule.ts";
export * from "./train_step.ts";
export * from "./checkpoint.ts";
export * from "./trainer.ts";
export * from "./gsm8k_eval.ts";
export * from "./trajectory_writer.ts";
export * from "./random_init.ts";
export * from "./jacobi_forcing.ts";
