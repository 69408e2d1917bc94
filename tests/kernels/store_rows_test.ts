import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { storeRowsForward, storeRowsReference } from "../../kernels/store_rows.ts";
import { assertClose, randomArray } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

// A copy: exact.
const EXACT = { atol: 0, rtol: 0 };

Deno.test(
  "storeRows writes rows at the GPU-resident base; rows past the end are dropped",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const S = 50, KVH = 3, D = 8, W = KVH * D;
    const bases = [0, 17, 34, 46];
    const state = Tensor.from(gpu, new Uint32Array([99, ...bases]), [bases.length + 1], "state");
    const step = new Step(gpu, "store_rows");
    const runs = bases.map((base, i) => {
      const T = [1, 16, 16, 16][i];
      const dst = randomArray(S * W, 90 + i);
      const src = randomArray(T * W, 95 + i);
      const tDst = Tensor.from(gpu, dst, [S, KVH, D], `vcache${i}`);
      storeRowsForward(step, Tensor.from(gpu, src, [T, W], `v${i}`), tDst, state, {
        baseSlot: i + 1,
        rows: T,
      });
      return { base, T, dst, src, tDst };
    });
    // rows < src rows: only the first rows are stored.
    const dst = randomArray(S * W, 1);
    const src = randomArray(8 * W, 2);
    const partial = Tensor.from(gpu, dst, [S, W], "partial");
    storeRowsForward(step, Tensor.from(gpu, src, [8, W], "src"), partial, state, { baseSlot: 2, rows: 3 });
    step.submit();
    const results = await readTensors(gpu, [...runs.map((r) => r.tDst), partial]);
    runs.forEach(({ base, T, dst, src }, i) => {
      assertClose(results[i], storeRowsReference(dst, src, W, base, T), EXACT, `base ${base}, T ${T}`);
    });
    assertClose(results[runs.length], storeRowsReference(dst, src, W, 17, 3), EXACT, "rows = 3 of 8");
  },
);

Deno.test("storeRows copies u32 bit patterns exactly", gpuTest, async () => {
  const gpu = await testGpu();
  const src = new Uint32Array([0x7fc00001, 0xffffffff, 0x00000001, 0x80000000]); // NaN payloads, denormal, -0
  const dst = Tensor.from(gpu, new Uint32Array(12), [3, 4], "dst");
  const state = Tensor.from(gpu, new Uint32Array([1]), [1], "state");
  const step = new Step(gpu, "store_rows u32");
  storeRowsForward(step, Tensor.from(gpu, src, [1, 4], "src"), dst, state, { baseSlot: 0 });
  step.submit();
  const [result] = await readTensors(gpu, [dst]);
  assert.deepEqual([...result], [0, 0, 0, 0, ...src, 0, 0, 0, 0]);
});

Deno.test("storeRows checks its arguments on the host", gpuTest, async () => {
  const gpu = await testGpu();
  const state = Tensor.from(gpu, new Uint32Array([0]), [1], "state");
  const dst = new Tensor(gpu, [4, 8], "f32", "dst");
  const step = new Step(gpu, "bad store_rows");
  assert.throws(
    () => storeRowsForward(step, new Tensor(gpu, [2, 8], "u32", "u"), dst, state, { baseSlot: 0 }),
    TypeError,
  );
  assert.throws(
    () => storeRowsForward(step, new Tensor(gpu, [2, 7], "f32", "s"), dst, state, { baseSlot: 0 }),
    RangeError,
  );
  assert.throws(
    () => storeRowsForward(step, new Tensor(gpu, [2, 8], "f32", "s"), dst, state, { baseSlot: 1 }),
    RangeError,
  );
  step.submit();
});
