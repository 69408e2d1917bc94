import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { siluMulForward, siluMulReference } from "../../kernels/silu_mul.ts";
import { assertClose, F32, randomArray } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

Deno.test("siluMul matches the reference, including saturated gates", gpuTest, async () => {
  const gpu = await testGpu();
  const shapes = [[1, 1], [1, 63], [16, 64], [3, 65], [64, 1000]];
  const step = new Step(gpu, "silu_mul");
  const runs = shapes.map(([T, I], i) => {
    const gate = randomArray(T * I, 50 + i, 8);
    const up = randomArray(T * I, 60 + i, 3);
    const out = new Tensor(gpu, [T, I], "f32", `out${i}`);
    siluMulForward(
      step,
      Tensor.from(gpu, gate, [T, I], `gate${i}`),
      Tensor.from(gpu, up, [T, I], `up${i}`),
      out,
    );
    return { gate, up, out };
  });
  // Large |gate|: exp(-g) overflows for g << 0; the product must be 0 (or g·up), never NaN.
  const big = new Float32Array([-1000, -100, -88.8, 88.8, 100, 1000, 0, -0]);
  const ones = new Float32Array(big.length).fill(1.5);
  const bigOut = new Tensor(gpu, [big.length], "f32", "big out");
  siluMulForward(
    step,
    Tensor.from(gpu, big, [big.length], "big"),
    Tensor.from(gpu, ones, [big.length], "ones"),
    bigOut,
  );
  step.submit();
  const results = await readTensors(gpu, [...runs.map((r) => r.out), bigOut]);
  runs.forEach(({ gate, up }, i) => {
    assertClose(results[i], siluMulReference(gate, up), F32, `silu_mul ${shapes[i]}`);
  });
  assertClose(results[runs.length], siluMulReference(big, ones), F32, "saturated gates");
});

Deno.test("siluMul checks its arguments on the host", gpuTest, async () => {
  const gpu = await testGpu();
  const a = new Tensor(gpu, [4], "f32", "a");
  const step = new Step(gpu, "bad silu_mul");
  assert.throws(() =>
    siluMulForward(step, a, new Tensor(gpu, [3], "f32", "short"), new Tensor(gpu, [4], "f32", "o"))
  );
  step.submit();
});
