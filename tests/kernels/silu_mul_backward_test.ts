import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { siluMulReference } from "../../kernels/silu_mul.ts";
import { siluMulBackward, siluMulBackwardReference } from "../../kernels/silu_mul_backward.ts";
import { assertClose, randomArray } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";
import { dot, numericGradient, quantisedArray } from "./_backward_fd.ts";

Deno.test("siluMulBackward matches the CPU reference", gpuTest, async () => {
  const gpu = await testGpu();
  // Element counts around the workgroup of 64, a (T = 16..64) × I shape, and gates far into both
  // tails (σ saturates, exp(−g) overflows to inf for g ≲ −89).
  const sizes = [1, 63, 65, 16 * 70, 64 * 172];
  const step = new Step(gpu, "silu mul backward");
  const runs = sizes.map((n, k) => {
    const gate = randomArray(n, 10 + k, 8);
    if (n > 4) gate.set([-100, 100, -30, 30]);
    const up = randomArray(n, 20 + k, 2);
    const dOut = randomArray(n, 30 + k);
    const tGate = Tensor.from(gpu, gate, [n], `gate ${n}`);
    const tUp = Tensor.from(gpu, up, [n], `up ${n}`);
    const tDGate = Tensor.from(gpu, randomArray(n, 40 + k), [n], `dGate ${n}`); // overwritten
    const tDUp = Tensor.from(gpu, randomArray(n, 50 + k), [n], `dUp ${n}`); // overwritten
    siluMulBackward(step, tGate, tUp, Tensor.from(gpu, dOut, [n], `dOut ${n}`), tDGate, tDUp);
    return { n, expected: siluMulBackwardReference(gate, up, dOut), tDGate, tDUp };
  });
  const { tDGate, tDUp } = runs[0];
  assert.throws(() => siluMulBackward(step, tDGate, tDUp, tDUp, tDGate, tDUp), /of their own/);
  step.submit();
  const results = await readTensors(gpu, runs.flatMap((r) => [r.tDGate, r.tDUp]));
  runs.forEach((r, k) => {
    // Elementwise f32 math with exp: a few ulps of values up to |dOut·up·silu'| ≲ 2.2 and
    // |dOut·silu(g)| ≲ 100 (rtol covers the large ones).
    assertClose(results[2 * k], r.expected.dGate, { atol: 1e-6, rtol: 1e-5 }, `dGate n=${r.n}`);
    assertClose(results[2 * k + 1], r.expected.dUp, { atol: 1e-6, rtol: 1e-5 }, `dUp n=${r.n}`);
  });
});

Deno.test("siluMulBackwardReference matches finite differences of siluMulReference", () => {
  const n = 40;
  // Gates on a 2^-10 grid in [-6, 6) so g ± 2^-4 and 2^-5 are exact f32 inputs.
  const gate = quantisedArray(n, 1, 6);
  const up = quantisedArray(n, 2, 2);
  const r = randomArray(n, 3); // upstream gradient dOut
  const { dGate, dUp } = siluMulBackwardReference(gate, up, r);
  const fGate = (v: Float64Array) => dot(r, siluMulReference(Float32Array.from(v), up));
  const fUp = (v: Float64Array) => dot(r, siluMulReference(gate, Float32Array.from(v)));
  // Each input moves one f32 output (|out| ≲ 12, relative error 6e-8), divided by a step of 2^-4
  // after Richardson, plus O(h⁴) truncation: measured max 4e-6. f64 alone would allow 1e-9, but the
  // forward reference rounds to f32. A wrong formula is off by ≳ 1e-2.
  const tol = { atol: 2e-5, rtol: 1e-5 };
  assertClose(dGate, numericGradient(fGate, gate, 2 ** -4), tol, "dGate");
  assertClose(dUp, numericGradient(fUp, up, 2 ** -4), tol, "dUp");
});
