/**
 * Decoders: one typed description (`Decoder`, decode/decoder.ts) and one entry point (`decode`)
 * for greedy and sampled AR, Jacobi and lookahead decoding, all on one GPU-resident skeleton
 * (decode/gpu_loop.ts), and the text layer that streams decoded pieces.
 *
 * @example Greedy generation from a prompt
 * ```ts ignore
 * import { generateText } from "./mod.ts";
 * const gen = generateText(pretrained, "Once upon a time", { maxNewTokens: 50 });
 * for await (const piece of gen.pieces) console.log(piece);
 * ```
 *
 * @module
 */
export * from "./generation.ts";
export * from "./decoder.ts";
export * from "./decode.ts";
export * from "./sampling.ts";
export * from "./ar.ts";
export * from "./cadence.ts";
export * from "./gpu_loop.ts";
export * from "./jacobi.ts";
export * from "./jacobi_stats.ts";
export * from "./lookahead.ts";
export * from "./text.ts";
export * from "./sample_many.ts";
