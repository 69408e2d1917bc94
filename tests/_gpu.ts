/**
 * One device shared by every test file in the run, and test options for GPU tests: where no
 * WebGPU adapter exists they are skipped with a printed reason, except under `CI=true`, where they
 * run and fail.
 *
 * @module
 */
import { type Gpu, requestGpu } from "../core/mod.ts";
import { IN_CI } from "./_fixtures.ts";

let shared: Promise<Gpu> | null = null;

/** The shared test device (created on first use). */
export function testGpu(): Promise<Gpu> {
  shared ??= requestGpu();
  return shared;
}

/** Why GPU tests cannot run here (no adapter), or null. Probed once per test module. */
async function probe(): Promise<string | null> {
  if (IN_CI) return null;
  try {
    await testGpu();
    return null;
  } catch (e) {
    shared = null;
    return `no WebGPU adapter (${(e as Error).message.split(";")[0]})`;
  }
}

/** Why GPU tests are skipped here, or null when they run. */
export const NO_GPU: string | null = await probe();
if (NO_GPU) console.log(`skipped: every GPU test in this file: ${NO_GPU}`);

/**
 * Options of a GPU test: WebGPU keeps resources and polling ops alive between tests by design, and
 * the test is skipped where there is no adapter (outside CI).
 */
export const gpuTest = { sanitizeResources: false, sanitizeOps: false, ignore: NO_GPU !== null } as const;
