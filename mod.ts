/**
 * CLLM on WebGPU: Llama-family models in WGSL compute shaders, with Jacobi decoding and
 * consistency training (Kou et al. 2024, "CLLMs: Consistency Large Language Models").
 *
 * The layers, from the bottom: `core` (device, tensors, steps that submit many dispatches at
 * once), `kernels` (WGSL + CPU references), `model` (formats, tokenizer, chat templates, the Llama
 * forward), `decode` (AR, Jacobi and lookahead decoding, the text layer), `train` (trajectories,
 * consistency training).
 *
 * @example Generating text from a model directory
 * ```ts ignore
 * import { directoryFiles, generateText, loadPretrained, requestGpu } from "@cllm/webgpu";
 * const gpu = await requestGpu();
 * const pretrained = await loadPretrained(gpu, directoryFiles("models/stories260K"));
 * const gen = generateText(pretrained, "Once upon a time", { maxNewTokens: 50 });
 * for await (const piece of gen.pieces) console.log(piece);
 * console.log((await gen.result).stats.tokensPerSecond);
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
export * from "./core/mod.ts";
export * from "./kernels/mod.ts";
export * from "./model/mod.ts";
export * from "./decode/mod.ts";
export * from "./train/mod.ts";
