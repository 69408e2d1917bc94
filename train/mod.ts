/**
 * Consistency training: Jacobi-trajectory files and collection, the AR and consistency losses,
 * the trainer (AdamW, clipping, cosine schedule, atomic resumable checkpoints), and the GSM8K-style
 * data, tokenizer trainer and evaluation used to make the embedded demo models.
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
export * from "./trainer.ts";
export * from "./gsm_synth.ts";
export * from "./bpe.ts";
export * from "./gsm8k_eval.ts";
