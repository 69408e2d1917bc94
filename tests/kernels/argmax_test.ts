import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { argmaxForward, argmaxReference, argmaxSpec } from "../../kernels/argmax.ts";
import { randomArray } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

Deno.test("argmax matches the CPU argmax at many widths, writing at an offset", gpuTest, async () => {
  const gpu = await testGpu();
  // Widths below, at and around the 256-wide workgroup, and a vocabulary-sized row.
  const cases = [[1, 1], [1, 2], [3, 255], [2, 256], [5, 257], [16, 1000], [1, 32000], [4, 32001], [64, 100]];
  const step = new Step(gpu, "argmax");
  const sentinel = 0xdeadbeef;
  const runs = cases.map(([T, V], i) => {
    const logits = randomArray(T * V, 80 + i, 10);
    const out = Tensor.from(gpu, new Uint32Array(T + 5).fill(sentinel), [T + 5], `out${i}`);
    argmaxForward(step, Tensor.from(gpu, logits, [T, V], `logits${i}`), out, { outOffset: 3 });
    return { T, V, logits, out };
  });
  step.submit();
  const results = await readTensors(gpu, runs.map((r) => r.out));
  runs.forEach(({ T, V, logits }, i) => {
    const expected = new Uint32Array(T + 5).fill(sentinel);
    expected.set(argmaxReference(logits, V), 3);
    assert.deepEqual(results[i], expected, `argmax T=${T} V=${V}`);
  });
});

Deno.test("argmax ties go to the lowest index", gpuTest, async () => {
  const gpu = await testGpu();
  const V = 32000;
  // Row 0: all equal -> 0. Row 1: max at 300, 44 (same stride class mod 256 as 300) and 31999 -> 44.
  // Row 2: max at 5 and 6 (neighbouring invocations) -> 5. Row 3: max at 31999 and 30000 -> 30000.
  // Row 4: a tie between the first and the last element -> 0.
  const rows = 5;
  const logits = new Float32Array(rows * V).fill(-1);
  for (const j of [300, 44, 31999]) logits[V + j] = 2.5;
  for (const j of [5, 6]) logits[2 * V + j] = 0.75;
  for (const j of [31999, 30000]) logits[3 * V + j] = 1e30;
  logits[4 * V] = 3;
  logits[4 * V + V - 1] = 3;
  const out = new Tensor(gpu, [rows], "u32", "out");
  const step = new Step(gpu, "argmax ties");
  argmaxForward(step, Tensor.from(gpu, logits, [rows, V], "ties"), out);
  step.submit();
  const [result] = await readTensors(gpu, [out]);
  assert.deepEqual([...result], [0, 44, 5, 30000, 0]);
  assert.deepEqual([...argmaxReference(logits, V)], [0, 44, 5, 30000, 0]);
});

Deno.test(
  "argmax spec at other workgroup sizes (GPUs use 256) and scalar or vec4 loads",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const T = 3, V = 1000;
    const logits = randomArray(T * V, 7, 4);
    logits[V + 17] = logits[V + 900] = 9; // a tie across invocations
    const tLogits = Tensor.from(gpu, logits, [T, V], "logits");
    const step = new Step(gpu, "argmax spec");
    const outs = [[1, false], [8, true], [64, false], [256, true]].map(([WG, V4]) => {
      const out = new Tensor(gpu, [T], "u32", `out WG=${WG}`);
      step.dispatch(argmaxSpec, {
        variant: { WG: Number(WG), V4: Boolean(V4) },
        bindings: { logits: tLogits, out },
        params: { rows: T, V: V4 ? V / 4 : V, gridX: T, outOffset: 0 },
        workgroups: [T],
      });
      return out;
    });
    step.submit();
    const expected = [...argmaxReference(logits, V)];
    assert.equal(expected[1], 17);
    for (const r of await readTensors(gpu, outs)) assert.deepEqual([...r], expected);
  },
);

Deno.test("argmax checks its arguments on the host", gpuTest, async () => {
  const gpu = await testGpu();
  const step = new Step(gpu, "bad argmax");
  const logits = new Tensor(gpu, [4, 10], "f32", "logits");
  assert.throws(() => argmaxForward(step, logits, new Tensor(gpu, [4], "f32", "f")), TypeError);
  assert.throws(
    () => argmaxForward(step, logits, new Tensor(gpu, [5], "u32", "short"), { outOffset: 2 }),
    RangeError,
  );
  step.submit();
});
