import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { softmaxForward, softmaxReference, softmaxSpec } from "../../kernels/softmax.ts";
import { assertClose, randomArray } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

// Probabilities can be tiny (1/32000 and far below), so the absolute tolerance is much tighter
// than F32's 1e-5, which would accept any answer for a wide row; rtol 1e-4 covers f32 exp and the
// f32 sum over up to 32000 terms.
const PROBS = { atol: 1e-8, rtol: 1e-4 };

Deno.test(
  "softmax matches the f64 reference for any width, and is stable for huge logits",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const cases = [
      { T: 1, V: 1, scale: 1, shift: 0 },
      { T: 3, V: 7, scale: 5, shift: 0 },
      { T: 16, V: 128, scale: 10, shift: 0 },
      { T: 2, V: 129, scale: 10, shift: 1e4 }, // exp(1e4) overflows without the max subtraction
      { T: 4, V: 32000, scale: 8, shift: -3e4 },
      { T: 64, V: 33, scale: 3, shift: 0 },
    ];
    const step = new Step(gpu, "softmax");
    const runs = cases.map((c, i) => {
      const x = randomArray(c.T * c.V, 70 + i, c.scale).map((v) => v + c.shift);
      const out = new Tensor(gpu, [c.T, c.V], "f32", `out${i}`);
      softmaxForward(step, Tensor.from(gpu, x, [c.T, c.V], `x${i}`), out);
      return { c, x, out };
    });
    step.submit();
    const results = await readTensors(gpu, runs.map((r) => r.out));
    runs.forEach(({ c, x }, i) => {
      assertClose(results[i], softmaxReference(x, c.V), PROBS, `softmax ${JSON.stringify(c)}`);
      for (let t = 0; t < c.T; t++) {
        let sum = 0;
        for (let v = 0; v < c.V; v++) sum += results[i][t * c.V + v];
        assert.ok(Math.abs(sum - 1) < 1e-4, `row ${t} of ${JSON.stringify(c)} sums to ${sum}`);
      }
    });
  },
);

Deno.test(
  "softmax spec at other workgroup sizes (GPUs use 256) and scalar or vec4 loads",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const T = 3, V = 1000;
    const x = randomArray(T * V, 8, 6);
    const tx = Tensor.from(gpu, x, [T, V], "x");
    const step = new Step(gpu, "softmax spec");
    const outs = [[1, true], [8, false], [256, true], [256, false]].map(([WG, V4]) => {
      const out = new Tensor(gpu, [T, V], "f32", `out WG=${WG}`);
      step.dispatch(softmaxSpec, {
        variant: { WG: Number(WG), V4: Boolean(V4) },
        bindings: { x: tx, out },
        params: { rows: T, V: V4 ? V / 4 : V, gridX: T },
        workgroups: [T],
      });
      return out;
    });
    step.submit();
    const expected = softmaxReference(x, V);
    (await readTensors(gpu, outs)).forEach((r, i) => assertClose(r, expected, PROBS, `variant ${i}`));
  },
);

Deno.test("softmax checks its arguments on the host", gpuTest, async () => {
  const gpu = await testGpu();
  const step = new Step(gpu, "bad softmax");
  const x = new Tensor(gpu, [2, 8], "f32", "x");
  assert.throws(() => softmaxForward(step, x, new Tensor(gpu, [2, 7], "f32", "small")), RangeError);
  step.submit();
});
