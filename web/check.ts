/**
 * The browser side of the portability check (tests/web/browser_test.ts): compiles the kernel
 * variants it is given, loads a model from URLs, and runs the shared workload (web/workload.ts).
 * Bundled for the browser (`deno bundle --platform browser web/check.ts`); it sets
 * `globalThis.cllmCheck`.
 *
 * @module
 */

import { compileKernel, type KernelSpec, requestGpu, type Variant } from "../core/mod.ts";
import * as kernels from "../kernels/mod.ts";
import { loadPretrained } from "../model/pretrained.ts";
import { memoryFiles } from "../model/model_files.ts";
import { memoryCheckpointStore } from "../train/checkpoint_store.ts";
import { train } from "../train/trainer.ts";
import { runWorkload, type WorkloadRun } from "./workload.ts";

/** What the check is asked to do. */
export interface CheckRequest {
  /** Model file name → URL. */
  files: Record<string, string>;
  /** Prompt ids. */
  prompts: number[][];
  /** New tokens per prompt. */
  maxNewTokens: number;
  /** Kernel variants to compile: the spec's name and the variant. */
  kernels: { name: string; variant: Variant }[];
  /** AR training sequences for a few steps of training in the tab (none: no training). */
  trainSequences?: number[][];
}

/** What the check found. */
export interface CheckReport {
  adapter: string;
  features: Record<string, boolean | undefined>;
  /** Kernel variants compiled without error. */
  compiled: number;
  /** Variants not tried: they need a feature this adapter lacks (e.g. shader-f16). */
  skipped: string[];
  /** Variants that failed, with the compiler's message. */
  failures: string[];
  runs: WorkloadRun[];
  /** Training in the tab: the logged AR losses and the checkpoints the memory store received. */
  training?: { arLosses: number[]; checkpoints: string[] };
}

function isSpec(x: unknown): x is KernelSpec {
  const s = x as KernelSpec;
  return typeof s === "object" && s !== null && typeof s.name === "string" && typeof s.wgsl === "function" &&
    Array.isArray(s.params);
}

const SPECS = new Map(Object.values(kernels).filter(isSpec).map((s) => [s.name, s]));

async function check(request: CheckRequest): Promise<CheckReport> {
  const gpu = await requestGpu();
  const failures: string[] = [];
  const skipped: string[] = [];
  let compiled = 0;
  for (const { name, variant } of request.kernels) {
    const spec = SPECS.get(name);
    const label = `${name}${JSON.stringify(variant)}`;
    if (!spec) {
      failures.push(`${label}: no kernel of that name in the browser bundle`);
      continue;
    }
    const bindings = typeof spec.bindings === "function" ? spec.bindings(variant) : spec.bindings;
    const f16 = bindings.some((b) => (b.type ?? "").includes("f16")) || variant.f16 === true;
    if ((f16 && !gpu.features.f16) || (variant.SG === true && !gpu.features.subgroups)) {
      skipped.push(label);
      continue;
    }
    gpu.device.pushErrorScope("validation");
    try {
      compileKernel(gpu, spec, variant);
    } catch (e) {
      failures.push(`${label}: ${(e as Error).message}`);
    }
    const error = await gpu.device.popErrorScope();
    if (error) failures.push(`${label}: ${error.message}`);
    else compiled++;
  }
  const files: Record<string, ArrayBuffer> = {};
  for (const [name, url] of Object.entries(request.files)) {
    const r = await fetch(url);
    if (!r.ok) throw new Error(`fetching ${url}: ${r.status}`);
    files[name] = await r.arrayBuffer();
  }
  const p = await loadPretrained(gpu, memoryFiles("model", files));
  const runs = await runWorkload(p, request.prompts, request.maxNewTokens);
  let training: CheckReport["training"];
  if (request.trainSequences) {
    // Training in the tab: f32 weights, checkpoints kept in memory.
    p.model.destroy();
    const trainable = await loadPretrained(gpu, memoryFiles("model", files), { dtype: "f32", maxRows: 64 });
    const checkpoints: string[] = [];
    const store = memoryCheckpointStore(
      new Map([["tokenizer.json", new Uint8Array(files["tokenizer.json"])]]),
      {
        onSave: (id, saved) => checkpoints.push(`${id}: ${[...saved.keys()].join(", ")}`),
      },
    );
    const result = await train(trainable, request.trainSequences.map((tokens) => ({ kind: "ar", tokens })), {
      store,
      steps: 6,
      lr: 1e-3,
      batch: 2,
      eosIds: trainable.eosIds,
      logEvery: 2,
      checkpointEvery: 6,
    });
    training = { arLosses: result.history.map((h) => h.arLoss), checkpoints };
    trainable.model.destroy();
  }
  return {
    adapter: gpu.adapter.description,
    features: { ...gpu.features },
    compiled,
    skipped,
    failures,
    runs,
    training,
  };
}

(globalThis as unknown as { cllmCheck: typeof check }).cllmCheck = check;
