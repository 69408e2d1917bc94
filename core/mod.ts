/**
 * The WebGPU runtime: device acquisition, tensors, kernel specs and steps that submit many
 * dispatches at once.
 *
 * @example Getting a device and a tensor
 * ```ts ignore
 * import { readTensors, requestGpu, Tensor } from "./mod.ts";
 * const gpu = await requestGpu();
 * const t = Tensor.from(gpu, new Float32Array([1, 2]), [2], "t");
 * console.log(await readTensors(gpu, [t]));
 * ```
 *
 * @module
 */
export * from "./device.ts";
export * from "./tensor.ts";
export * from "./kernel.ts";
export * from "./step.ts";
export * from "./tape.ts";
export * from "./random.ts";
