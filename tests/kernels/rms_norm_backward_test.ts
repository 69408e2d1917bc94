import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { rmsNormReference } from "../../kernels/rms_norm.ts";
import { rmsNormBackward, rmsNormBackwardReference } from "../../kernels/rms_norm_backward.ts";
import { assertClose, randomArray } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";
import { dot, numericGradient, quantisedArray } from "./_backward_fd.ts";

interface Case {
  T: number;
  C: number;
  accumulate: boolean;
}

Deno.test("rmsNormBackward matches the CPU reference", gpuTest, async () => {
  const gpu = await testGpu();
  const eps = 1e-5;
  // C below, at and above the workgroup of 64 and not a multiple of it; T = 1 and 16..64. The cases
  // run in one step with different T, so they also exercise the shared rstd scratch.
  const cases: Case[] = [
    { T: 1, C: 5, accumulate: false },
    { T: 16, C: 70, accumulate: true },
    { T: 64, C: 288, accumulate: false },
    { T: 33, C: 64, accumulate: true },
    { T: 3, C: 1000, accumulate: false },
  ];
  const step = new Step(gpu, "rms norm backward");
  const runs = cases.map((c, k) => {
    const n = c.T * c.C;
    const x = randomArray(n, 10 + k, 2);
    const weight = randomArray(c.C, 20 + k);
    const dOut = randomArray(n, 30 + k);
    const dx0 = randomArray(n, 40 + k); // overwritten, or added to with accumulate
    const dWeight0 = randomArray(c.C, 50 + k); // always added to
    const tDx = Tensor.from(gpu, dx0, [c.T, c.C], `dx ${k}`);
    const tDw = Tensor.from(gpu, dWeight0, [c.C], `dWeight ${k}`);
    rmsNormBackward(
      step,
      Tensor.from(gpu, x, [c.T, c.C], `x ${k}`),
      Tensor.from(gpu, weight, [c.C], `weight ${k}`),
      Tensor.from(gpu, dOut, [c.T, c.C], `dOut ${k}`),
      tDx,
      tDw,
      eps,
      { accumulate: c.accumulate },
    );
    const expected = rmsNormBackwardReference(x, weight, dOut, eps, c.accumulate ? dx0 : undefined, dWeight0);
    return { c, expected, tDx, tDw };
  });
  const { tDx, tDw } = runs[0];
  assert.throws(() => rmsNormBackward(step, tDx, tDw, tDx, tDx, tDw, eps), /must be a tensor of its own/);
  step.submit();
  const results = await readTensors(gpu, runs.flatMap((r) => [r.tDx, r.tDw]));
  runs.forEach((r, k) => {
    const what = `T=${r.c.T} C=${r.c.C} accumulate=${r.c.accumulate}`;
    // dx: f32 row sums of ≤ 1000 terms; |dx| ≲ 1. dWeight: f32 sums over ≤ 64 rows of |d·x·rstd| ≲ 2.
    assertClose(results[2 * k], r.expected.dx, { atol: 1e-5, rtol: 1e-4 }, `dx ${what}`);
    assertClose(results[2 * k + 1], r.expected.dWeight, { atol: 1e-5, rtol: 1e-4 }, `dWeight ${what}`);
  });
});

Deno.test("rmsNormBackwardReference matches finite differences of rmsNormReference", () => {
  for (const [T, C, eps] of [[3, 5, 1e-5], [2, 8, 0.1]]) {
    // Inputs on a 2^-10 grid so x ± 2^-4 and 2^-5 are exact f32 inputs of the forward reference.
    const x = quantisedArray(T * C, 1 + C, 1.5);
    const weight = quantisedArray(C, 2 + C);
    const r = randomArray(T * C, 3 + C); // upstream gradient dOut
    const { dx, dWeight } = rmsNormBackwardReference(x, weight, r, eps);
    const fx = (v: Float64Array) => dot(r, rmsNormReference(Float32Array.from(v), weight, eps));
    const fw = (v: Float64Array) => dot(r, rmsNormReference(x, Float32Array.from(v), eps));
    // Error budget: the forward's f32 outputs (relative 6e-8, C per row) divided by a step of 2^-5
    // give ~1e-6, and the Richardson truncation O(h⁴) is smaller (measured max 7.5e-7 at h = 2^-4).
    // f64 gradients alone would allow 1e-9, but the forward reference rounds to f32. A wrong term is
    // ≳ 1e-2.
    const tol = { atol: 5e-6, rtol: 1e-5 };
    assertClose(dx, numericGradient(fx, x, 2 ** -4), tol, `dx T=${T} C=${C}`);
    assertClose(dWeight, numericGradient(fw, weight, 2 ** -4), tol, `dWeight T=${T} C=${C}`);
  }
});
