/**
 * One device shared by every test file in the run, and test options for GPU tests.
 *
 * @module
 */
import { type Gpu, requestGpu } from "../core/mod.ts";

let shared: Promise<Gpu> | null = null;

/** The shared test device (created on first use). */
export function testGpu(): Promise<Gpu> {
  shared ??= requestGpu();
  return shared;
}

/** WebGPU keeps resources and polling ops alive between tests by design. */
export const gpuTest = { sanitizeResources: false, sanitizeOps: false } as const;
