/**
 * `cllm demo`: until the embedded demo model exists, a self-test of the kernels on this machine's
 * adapter: the adapter's name, a matmul checked against its CPU reference, and its throughput.
 *
 * @module
 */

import { readTensors, requestGpu, Step, Tensor } from "../core/mod.ts";
import { matmulForward, matmulReference } from "../kernels/matmul.ts";
import { parse } from "./args.ts";

const HELP = `Usage: deno task demo

Prints the WebGPU adapter, checks a matmul kernel against its CPU reference and measures its
throughput (GFLOP/s) on a 512 x 512 x 512 product.`;

function pseudoRandom(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 32 - 0.5;
  }
  return out;
}

/** Runs the demo. */
export async function demoCommand(args: string[]): Promise<void> {
  const v = parse("demo", args, {});
  if (v.help) return console.log(HELP);
  const gpu = await requestGpu();
  console.log(`adapter: ${gpu.adapter.description}${gpu.adapter.isFallbackAdapter ? " (software)" : ""}`);
  console.log(
    `features: f16 ${gpu.features.f16}, timestamps ${gpu.features.timestamps}, subgroups ${gpu.features.subgroups}`,
  );
  // 1. Correctness: an odd-sized product against the CPU reference.
  const [T, N, K] = [37, 101, 67];
  const x = pseudoRandom(T * K, 1), w = pseudoRandom(N * K, 2);
  const tx = Tensor.from(gpu, x, [T, K], "x"), tw = Tensor.from(gpu, w, [N, K], "w");
  const ty = new Tensor(gpu, [T, N], "f32", "y");
  const check = new Step(gpu, "demo check");
  matmulForward(check, tx, tw, ty);
  check.submit();
  const [y] = await readTensors(gpu, [ty]);
  const ref = matmulReference(x, w, T, N, K);
  let maxErr = 0;
  for (let i = 0; i < ref.length; i++) maxErr = Math.max(maxErr, Math.abs(y[i] - ref[i]));
  console.log(
    `matmul ${T}x${N}x${K} vs CPU reference: max error ${maxErr.toExponential(2)} ${
      maxErr < 1e-4 ? "ok" : "WRONG"
    }`,
  );
  // 2. Throughput: 512^3, several products per submit, one readback inside the timed region.
  const n = 512, reps = 8;
  const a = Tensor.from(gpu, pseudoRandom(n * n, 3), [n, n], "a");
  const b = Tensor.from(gpu, pseudoRandom(n * n, 4), [n, n], "b");
  const c = new Tensor(gpu, [n, n], "f32", "c");
  const warm = new Step(gpu, "demo warm-up");
  matmulForward(warm, a, b, c);
  warm.submit();
  await readTensors(gpu, [c]);
  const t0 = performance.now();
  const step = new Step(gpu, "demo matmul");
  for (let i = 0; i < reps; i++) matmulForward(step, a, b, c);
  step.submit();
  await readTensors(gpu, [c]);
  const seconds = (performance.now() - t0) / 1000;
  console.log(`matmul ${n}^3: ${((2 * n * n * n * reps) / seconds / 1e9).toFixed(1)} GFLOP/s`);
  gpu.destroy();
  if (maxErr >= 1e-4) {
    throw new RangeError("The matmul kernel disagrees with its CPU reference on this adapter");
  }
}
