import assert from "node:assert/strict";
import { GpuError, openStepCount, readTensors, Step, Tensor } from "../../core/mod.ts";
import { addForward, addInPlace, addReference, addSpec } from "../../kernels/add.ts";
import { assertClose, randomArray } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

Deno.test("a step runs many dispatches with different parameters and one readback", gpuTest, async () => {
  const gpu = await testGpu();
  const sizes = [1, 63, 64, 65, 1000];
  const step = new Step(gpu, "adds");
  const cases = sizes.map((n, i) => {
    const a = randomArray(n, 10 + i);
    const b = randomArray(n, 20 + i);
    const ta = Tensor.from(gpu, a, [n], `a${n}`);
    const tb = Tensor.from(gpu, b, [n], `b${n}`);
    const out = new Tensor(gpu, [n], "f32", `out${n}`);
    addForward(step, ta, tb, out);
    addInPlace(step, ta, tb); // a := a + b, after out = a + b (dispatch order is kept)
    return { a, b, ta, out };
  });
  step.submit();
  const results = await readTensors(gpu, cases.flatMap((c) => [c.out, c.ta]));
  cases.forEach((c, i) => {
    assertClose(results[2 * i], addReference(c.a, c.b), { atol: 0, rtol: 0 }, `out n=${c.a.length}`);
    assertClose(results[2 * i + 1], addReference(c.a, c.b), { atol: 0, rtol: 0 }, `in place n=${c.a.length}`);
  });
});

Deno.test("host-side checks name the kernel at once and abandon the step", gpuTest, async () => {
  const gpu = await testGpu();
  const a = new Tensor(gpu, [4], "f32", "a");
  const before = openStepCount();
  const bad = new Step(gpu, "bad");
  assert.throws(
    () =>
      bad.dispatch(addSpec, {
        variant: { WG: 64 },
        bindings: { a, b: a, out: a },
        params: { n: 4, rowStride: 64 },
        workgroups: [70000],
      }),
    (e: unknown) =>
      e instanceof GpuError && /add\[WG=64\]/.test(e.message) && /workgroup count/.test(e.message),
  );
  // The failed step was abandoned: it can record nothing more, and the next step opens.
  assert.equal(openStepCount(), before, "a throwing dispatch leaves no step open");
  assert.throws(() => bad.submit(), /already submitted/);
  const missing = new Step(gpu, "missing binding");
  assert.throws(
    () =>
      missing.dispatch(addSpec, {
        variant: { WG: 64 },
        bindings: { a, b: a },
        params: { n: 4, rowStride: 64 },
        workgroups: [1],
      }),
    (e: unknown) => e instanceof GpuError && /binding "out"/.test(e.message),
  );
  assert.equal(openStepCount(), before);
  // A recorder whose own check throws before any dispatch abandons the step explicitly.
  const host = new Step(gpu, "host check");
  host.abandon();
  host.abandon(); // idempotent
  assert.equal(openStepCount(), before);
  const x = Tensor.from(gpu, new Float32Array([1, 2, 3, 4]), [4], "x");
  const ok = new Step(gpu, "after");
  addForward(ok, x, x, a);
  ok.submit();
  const [r] = await readTensors(gpu, [a]);
  assertClose(r, [2, 4, 6, 8], { atol: 0, rtol: 0 });
});

Deno.test(
  "an invalid dispatch the GPU rejects surfaces at the next readback, naming the kernel",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const a = Tensor.from(gpu, new Float32Array([1, 2, 3, 4]), [4], "a");
    const out = new Tensor(gpu, [4], "f32", "out");
    const step = new Step(gpu, "aliasing");
    addForward(step, a, a, out); // valid
    // Invalid: the same buffer bound as read-only and as writable storage in one dispatch.
    step.dispatch(addSpec, {
      variant: { WG: 64 },
      bindings: { a: out, b: a, out },
      params: { n: 4, rowStride: 64 },
      workgroups: [1],
    });
    step.submit();
    await assert.rejects(
      () => readTensors(gpu, [out]),
      (e: unknown) => e instanceof GpuError && e.kernel === "add[WG=64]" && /add\[WG=64\]/.test(e.message),
    );
    // The device keeps working afterwards.
    const ok = new Step(gpu, "after");
    addForward(ok, a, a, out);
    ok.submit();
    const [r] = await readTensors(gpu, [out]);
    assertClose(r, [2, 4, 6, 8], { atol: 0, rtol: 0 });
  },
);

Deno.test("kernel timing through timestamp queries", gpuTest, async () => {
  const gpu = await testGpu();
  if (!gpu.features.timestamps) return; // adapters without timestamp-query report null timings
  const n = 1 << 16;
  const a = Tensor.from(gpu, randomArray(n, 1), [n], "a");
  const out = new Tensor(gpu, [n], "f32", "out");
  const step = new Step(gpu, "timed", { timing: 2 });
  addForward(step, a, a, out);
  addForward(step, out, a, out === a ? a : new Tensor(gpu, [n], "f32", "o2"));
  const timing = step.submit();
  assert.ok(timing);
  const t = await timing;
  assert.equal(t.length, 2);
  assert.ok(t.every((x) => x.label.startsWith("add") && x.ns >= 0));
});
