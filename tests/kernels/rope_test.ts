import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { ropeForward, ropeReference, ropeTable } from "../../kernels/rope.ts";
import { assertClose, randomArray } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

// Tolerance against an f64 reference (angles and sin/cos in f64). The kernel reduces the angle
// exactly (see rope.ts), so the remaining error is a few f32 roundings of the angle (~3e-7 rad)
// plus llvmpipe's sin/cos; |x| <= 1 here. A plain f32 angle pos·freq at positions near 4096 would
// be off by up to ~4e-4 rad and fail this tolerance.
const ROPE = { atol: 4e-6, rtol: 1e-5 };

Deno.test("rope matches the f64 reference at many positions, sizes and frequencies", gpuTest, async () => {
  const gpu = await testGpu();
  // Slots of the GPU-resident state: base = state[baseSlot].
  const bases = [0, 1, 37, 1000, 4000, 4095];
  const state = Tensor.from(gpu, new Uint32Array(bases), [bases.length], "state");
  const cases = [
    { rows: 1, heads: 1, headDim: 2, theta: 10000, scale: 1, slot: 0 },
    { rows: 1, heads: 32, headDim: 64, theta: 10000, scale: 1, slot: 4 },
    { rows: 5, heads: 3, headDim: 8, theta: 10000, scale: 1, slot: 2 },
    { rows: 16, heads: 4, headDim: 128, theta: 500000, scale: 1, slot: 5 },
    { rows: 16, heads: 8, headDim: 64, theta: 10000, scale: 4, slot: 3 },
    { rows: 64, heads: 2, headDim: 48, theta: 10000, scale: 2.5, slot: 4 },
    { rows: 33, heads: 6, headDim: 6, theta: 1e6, scale: 1, slot: 1 },
  ];
  const step = new Step(gpu, "rope");
  const runs = cases.map((c, i) => {
    const n = c.rows * c.heads * c.headDim;
    const x = randomArray(n, 100 + i);
    const tx = Tensor.from(gpu, x, [c.rows, c.heads, c.headDim], `x${i}`);
    const out = new Tensor(gpu, [c.rows, c.heads, c.headDim], "f32", `out${i}`);
    ropeForward(step, tx, out, state, { baseSlot: c.slot, ...c });
    return { c, x, out };
  });
  step.submit();
  const results = await readTensors(gpu, runs.map((r) => r.out));
  runs.forEach(({ c, x }, i) => {
    const expected = ropeReference(x, { ...c, base: bases[c.slot] });
    assertClose(results[i], expected, ROPE, `rope ${JSON.stringify(c)}`);
  });
});

Deno.test(
  "rope with relPositions and toCache writes rotated keys into cache rows base..base+T-1",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const S = 40, KVH = 2, D = 16, T = 8, base = 29;
    const state = Tensor.from(gpu, new Uint32Array([0, base, 36]), [3], "state");
    const x = randomArray(T * KVH * D, 7);
    const rel = new Uint32Array([0, 1, 1, 2, 2, 2, 3, 7]); // lookahead-style positions
    const tx = Tensor.from(gpu, x, [T, KVH, D], "x");
    const trel = Tensor.from(gpu, rel, [T], "rel");
    const sentinel = new Float32Array(S * KVH * D).fill(-7);
    const cache = Tensor.from(gpu, sentinel, [S, KVH, D], "kcache");
    const cacheEnd = Tensor.from(gpu, sentinel, [S, KVH, D], "kcache end");
    const q = new Tensor(gpu, [T, KVH, D], "f32", "q");
    const opts = { theta: 10000, heads: KVH, headDim: D };
    const step = new Step(gpu, "rope to cache");
    ropeForward(step, tx, cache, state, { ...opts, baseSlot: 1, relPositions: trel, toCache: true });
    ropeForward(step, tx, q, state, { ...opts, baseSlot: 1, relPositions: trel });
    // base 36 + 8 rows overruns S = 40: rows 36..39 are written, the rest dropped.
    ropeForward(step, tx, cacheEnd, state, { ...opts, baseSlot: 2, toCache: true });
    step.submit();
    const [rc, rq, re] = await readTensors(gpu, [cache, q, cacheEnd]);

    const rotated = ropeReference(x, { ...opts, base, relPositions: rel });
    assertClose(rq, rotated, ROPE, "queries at relative positions");
    const expected = sentinel.slice();
    expected.set(rotated, base * KVH * D);
    assertClose(rc, expected, ROPE, "cache rows");

    const tail = ropeReference(x, { ...opts, base: 36 }).subarray(0, 4 * KVH * D);
    const expectedEnd = sentinel.slice();
    expectedEnd.set(tail, 36 * KVH * D);
    assertClose(re, expectedEnd, ROPE, "rows past the cache end are dropped");
  },
);

Deno.test("rope checks its arguments on the host", gpuTest, async () => {
  const gpu = await testGpu();
  const x = new Tensor(gpu, [2, 1, 8], "f32", "x");
  const state = Tensor.from(gpu, new Uint32Array([0]), [1], "state");
  const step = new Step(gpu, "bad rope");
  assert.throws(
    () => ropeForward(step, x, x, state, { baseSlot: 0, theta: 1e4, heads: 1, headDim: 7 }),
    RangeError,
  );
  assert.throws(
    () => ropeForward(step, x, x, state, { baseSlot: 1, theta: 1e4, heads: 1, headDim: 8 }),
    RangeError,
  );
  assert.throws(
    () => ropeForward(step, x, x, state, { baseSlot: 0, theta: 1e4, heads: 2, headDim: 8 }),
    RangeError,
  );
  step.submit();
  // The frequency table is built once per (D, theta, scale) and device.
  assert.equal(ropeTable(gpu, 8, 1e4, 1), ropeTable(gpu, 8, 1e4, 1));
});
