/**
 * Decoders: greedy and sampled autoregressive decoding (more decoders build on the same session
 * and statistics), and the text layer that streams decoded pieces.
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
export * from "./sampling.ts";
export * from "./ar.ts";
export * from "./cadence.ts";
export * from "./gpu_loop.ts";
export * from "./jacobi.ts";
export * from "./jacobi_stats.ts";
export * from "./lookahead.ts";
export * from "./text.ts";
