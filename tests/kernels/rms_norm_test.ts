import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { rmsNormForward, rmsNormReference, rmsNormSpec } from "../../kernels/rms_norm.ts";
import { assertClose, F32, randomArray } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

Deno.test("rmsNorm matches the f64 reference for any width", gpuTest, async () => {
  const gpu = await testGpu();
  // Widths that are below, equal to, and not multiples of the 64-wide workgroup.
  const cases = [
    { T: 1, C: 1, eps: 1e-5 },
    { T: 3, C: 7, eps: 1e-6 },
    { T: 16, C: 64, eps: 1e-5 },
    { T: 1, C: 4096, eps: 1e-5 },
    { T: 5, C: 5000, eps: 1e-6 },
    { T: 64, C: 65, eps: 1e-5 },
  ];
  const step = new Step(gpu, "rms_norm");
  const runs = cases.map((c, i) => {
    const x = randomArray(c.T * c.C, 30 + i, 4);
    const w = randomArray(c.C, 40 + i, 2);
    const out = new Tensor(gpu, [c.T, c.C], "f32", `out${i}`);
    rmsNormForward(
      step,
      Tensor.from(gpu, x, [c.T, c.C], `x${i}`),
      Tensor.from(gpu, w, [c.C], `w${i}`),
      out,
      c.eps,
    );
    return { c, x, w, out };
  });
  // A zero row: 0 / sqrt(0 + eps) = 0, not NaN.
  const zeros = new Tensor(gpu, [2, 8], "f32", "zeros");
  const zerosOut = new Tensor(gpu, [2, 8], "f32", "zeros out");
  rmsNormForward(step, zeros, Tensor.from(gpu, randomArray(8, 1), [8], "w"), zerosOut, 1e-5);
  step.submit();
  const results = await readTensors(gpu, [...runs.map((r) => r.out), zerosOut]);
  runs.forEach(({ c, x, w }, i) => {
    assertClose(results[i], rmsNormReference(x, w, c.eps), F32, `rmsNorm ${JSON.stringify(c)}`);
  });
  assertClose(results[runs.length], new Float32Array(16), { atol: 0, rtol: 0 }, "zero rows");
});

Deno.test(
  "rmsNorm spec at other workgroup sizes (GPUs use 256) and scalar or vec4 loads",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const T = 3, C = 1000;
    const x = randomArray(T * C, 9, 3);
    const w = randomArray(C, 10);
    const tx = Tensor.from(gpu, x, [T, C], "x");
    const tw = Tensor.from(gpu, w, [C], "w");
    const step = new Step(gpu, "rms_norm spec");
    const outs = [[1, false], [8, true], [256, true], [256, false]].map(([WG, V4]) => {
      const out = new Tensor(gpu, [T, C], "f32", `out WG=${WG}`);
      step.dispatch(rmsNormSpec, {
        variant: { WG: Number(WG), V4: Boolean(V4) },
        bindings: { x: tx, weight: tw, out },
        params: { rows: T, C: V4 ? C / 4 : C, gridX: T, eps: 1e-5, channels: C },
        workgroups: [T],
      });
      return out;
    });
    step.submit();
    const expected = rmsNormReference(x, w, 1e-5);
    (await readTensors(gpu, outs)).forEach((r, i) => assertClose(r, expected, F32, `variant ${i}`));
  },
);

Deno.test("rmsNorm checks its arguments on the host", gpuTest, async () => {
  const gpu = await testGpu();
  const x = new Tensor(gpu, [2, 8], "f32", "x");
  const step = new Step(gpu, "bad rms_norm");
  assert.throws(() => rmsNormForward(step, x, new Tensor(gpu, [7], "f32", "w"), x, 1e-5), RangeError);
  assert.throws(() => rmsNormForward(step, x, new Tensor(gpu, [8], "f16", "w16"), x, 1e-5), TypeError);
  step.submit();
});
