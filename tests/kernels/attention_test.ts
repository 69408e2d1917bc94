import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import {
  attentionForward,
  attentionReference,
  attentionSchedule,
  attentionSpec,
} from "../../kernels/attention.ts";
import { assertClose, randomArray, rng } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

// f32 kernel against an f64 reference. The outputs are softmax-weighted averages of values in
// [-1, 1], so they are small (often ~0.05); F32's atol of 1e-5 would be loose for them, so atol is
// 1e-6 (measured max errors are ~1e-7 to 2e-7) with F32's rtol of 1e-4.
const ATTN = { atol: 1e-6, rtol: 1e-4 };

interface Case {
  T: number;
  H: number;
  KVH: number;
  D: number;
  S: number;
  base: number;
  scale?: number;
  mask?: Uint32Array;
  tuning?: { queries: number; keys: number };
}

/** A (T, ceil(T/32)) bit matrix with bit u of row t set with probability `p`. */
function randomMask(T: number, p: number, seed: number): Uint32Array {
  const r = rng(seed);
  const words = Math.ceil(T / 32);
  const mask = new Uint32Array(T * words);
  for (let t = 0; t < T; t++) {
    for (let u = 0; u < T; u++) if (r() < p) mask[t * words + (u >> 5)] |= 1 << (u & 31);
  }
  return mask;
}

/** The causal rule as a mask: row t sees u <= t. */
function causalMask(T: number): Uint32Array {
  const words = Math.ceil(T / 32);
  const mask = new Uint32Array(T * words);
  for (let t = 0; t < T; t++) for (let u = 0; u <= t; u++) mask[t * words + (u >> 5)] |= 1 << (u & 31);
  return mask;
}

/** Records one attention call on fresh tensors; returns what the check needs. */
function record(step: Step, state: Tensor, slot: number, c: Case, seed: number) {
  const gpu = step.gpu;
  const q = randomArray(c.T * c.H * c.D, seed, 1.5);
  const k = randomArray(c.S * c.KVH * c.D, seed + 1, 1.5);
  const v = randomArray(c.S * c.KVH * c.D, seed + 2);
  const out = new Tensor(gpu, [c.T, c.H, c.D], "f32", `out${seed}`);
  attentionForward(
    step,
    Tensor.from(gpu, q, [c.T, c.H, c.D], `q${seed}`),
    Tensor.from(gpu, k, [c.S, c.KVH, c.D], `k${seed}`),
    Tensor.from(gpu, v, [c.S, c.KVH, c.D], `v${seed}`),
    out,
    state,
    {
      baseSlot: slot,
      rows: c.T,
      heads: c.H,
      kvHeads: c.KVH,
      headDim: c.D,
      scale: c.scale,
      mask: c.mask ? Tensor.from(gpu, c.mask, [c.T, Math.ceil(c.T / 32)], `mask${seed}`) : undefined,
      tuning: c.tuning,
    },
  );
  return { c, q, k, v, out };
}

Deno.test(
  "attention matches the reference: GQA 1/2/4, T = 1..64, D = 4..128, base 0..S-T",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const cases: Case[] = [
      { T: 1, H: 4, KVH: 4, D: 4, S: 20, base: 0 },
      { T: 1, H: 4, KVH: 2, D: 8, S: 20, base: 19 },
      { T: 1, H: 8, KVH: 2, D: 128, S: 400, base: 300 },
      { T: 16, H: 2, KVH: 2, D: 16, S: 16, base: 0 },
      { T: 16, H: 8, KVH: 2, D: 64, S: 300, base: 256 },
      { T: 5, H: 4, KVH: 2, D: 32, S: 30, base: 7, scale: 0.3 },
      { T: 64, H: 4, KVH: 2, D: 32, S: 100, base: 36 },
      { T: 33, H: 3, KVH: 3, D: 8, S: 40, base: 7 },
      { T: 16, H: 8, KVH: 2, D: 64, S: 50, base: 20, tuning: { queries: 3, keys: 5 } },
      { T: 16, H: 4, KVH: 2, D: 32, S: 240, base: 200, tuning: attentionSchedule(16, 4, 2, "gpu") },
    ];
    const bases = cases.map((c) => c.base);
    const state = Tensor.from(gpu, new Uint32Array([12345, ...bases]), [bases.length + 1], "state");
    const step = new Step(gpu, "attention");
    const runs = cases.map((c, i) => record(step, state, i + 1, c, 1000 + 10 * i));
    step.submit();
    const results = await readTensors(gpu, runs.map((r) => r.out));
    runs.forEach(({ c, q, k, v }, i) => {
      const expected = attentionReference(q, k, v, {
        base: c.base,
        heads: c.H,
        kvHeads: c.KVH,
        headDim: c.D,
        scale: c.scale,
      });
      assertClose(results[i], expected, ATTN, `attention ${JSON.stringify(c)}`);
    });
  },
);

Deno.test(
  "attention with a mask: random masks, empty rows, and the causal mask equals no mask",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const state = Tensor.from(gpu, new Uint32Array([0, 45, 9]), [3], "state");
    const masked: [number, Case][] = [
      [0, { T: 16, H: 4, KVH: 2, D: 16, S: 20, base: 0, mask: randomMask(16, 0.3, 1) }], // some rows see nothing
      [1, { T: 16, H: 8, KVH: 2, D: 64, S: 70, base: 45, mask: randomMask(16, 0.5, 2) }],
      [2, { T: 40, H: 2, KVH: 1, D: 8, S: 60, base: 9, mask: randomMask(40, 0.4, 3) }], // two mask words per row
    ];
    masked[0][1].mask![3] = 0; // row 3 at base 0 sees no row at all: zero output
    const step = new Step(gpu, "attention masks");
    const runs = masked.map(([slot, c], i) => record(step, state, slot, c, 2000 + 10 * i));
    // The causal triangle as a mask must give the same result as the causal rule.
    const causal = { T: 40, H: 8, KVH: 2, D: 32, S: 90, base: 45 };
    const withMask = record(step, state, 1, { ...causal, mask: causalMask(40) }, 3000);
    const without = record(step, state, 1, causal, 3000); // same seed: same q, k, v
    step.submit();
    const results = await readTensors(gpu, [...runs.map((r) => r.out), withMask.out, without.out]);
    runs.forEach(({ c, q, k, v }, i) => {
      const expected = attentionReference(q, k, v, {
        base: c.base,
        heads: c.H,
        kvHeads: c.KVH,
        headDim: c.D,
        mask: c.mask,
      });
      assertClose(
        results[i],
        expected,
        ATTN,
        `masked attention ${JSON.stringify({ ...c, mask: undefined })}`,
      );
    });
    const D = 16, H = 4;
    assertClose(
      results[0].subarray(3 * H * D, 4 * H * D),
      new Float32Array(H * D),
      { atol: 0, rtol: 0 },
      "empty row",
    );
    // Hidden rows add exactly 0 and rescale by exactly 1, so the two paths agree bit for bit.
    assertClose(
      results[runs.length],
      results[runs.length + 1],
      { atol: 0, rtol: 0 },
      "causal mask vs causal rule",
    );
    assertClose(
      results[runs.length + 1],
      attentionReference(without.q, without.k, without.v, { base: 45, heads: 8, kvHeads: 2, headDim: 32 }),
      ATTN,
      "causal rule",
    );
  },
);

Deno.test("attention spec with 64 invocations per workgroup (the GPU setting)", gpuTest, async () => {
  const gpu = await testGpu();
  const T = 16, H = 8, KVH = 2, D = 32, S = 40, base = 20;
  const q = randomArray(T * H * D, 41), k = randomArray(S * KVH * D, 42), v = randomArray(S * KVH * D, 43);
  const out = new Tensor(gpu, [T, H, D], "f32", "out");
  const step = new Step(gpu, "attention WG=64");
  step.dispatch(attentionSpec, {
    variant: { MASK: false, R: 8, KB: 16, WG: 64 },
    bindings: {
      q: Tensor.from(gpu, q, [T, H, D], "q"),
      k: Tensor.from(gpu, k, [S, KVH, D], "k"),
      v: Tensor.from(gpu, v, [S, KVH, D], "v"),
      out,
      state: Tensor.from(gpu, new Uint32Array([base]), [1], "state"),
    },
    params: {
      rows: T,
      heads: H,
      group: H / KVH,
      kvHeads: KVH,
      cacheRows: S,
      baseSlot: 0,
      scaleLog2e: Math.LOG2E / Math.sqrt(D),
      maskWords: 1,
      gridX: 1,
      headVecs: D / 4,
    },
    workgroups: [1], // 2 kv heads × 8 invocations of 8 queries, in one workgroup of 64
  });
  step.submit();
  const [result] = await readTensors(gpu, [out]);
  assertClose(result, attentionReference(q, k, v, { base, heads: H, kvHeads: KVH, headDim: D }), ATTN);
});

Deno.test("attention schedule and host-side checks", gpuTest, async () => {
  assert.deepEqual(attentionSchedule(16, 32, 8), { queries: 8, keys: 16 });
  assert.deepEqual(attentionSchedule(1, 32, 8), { queries: 4, keys: 32 });
  assert.deepEqual(attentionSchedule(5, 4, 2), { queries: 5, keys: 16 });
  assert.deepEqual(attentionSchedule(16, 32, 8, "gpu"), { queries: 1, keys: 16 });
  const gpu = await testGpu();
  const state = Tensor.from(gpu, new Uint32Array([0]), [1], "state");
  const q = new Tensor(gpu, [2, 4, 8], "f32", "q");
  const cache = new Tensor(gpu, [10, 2, 8], "f32", "cache");
  const out = new Tensor(gpu, [2, 4, 8], "f32", "out");
  const opts = { baseSlot: 0, rows: 2, heads: 4, kvHeads: 2, headDim: 8 };
  const step = new Step(gpu, "bad attention");
  assert.throws(
    () => attentionForward(step, q, cache, cache, out, state, { ...opts, kvHeads: 3 }),
    RangeError,
  );
  assert.throws(
    () => attentionForward(step, q, cache, cache, out, state, { ...opts, headDim: 6 }),
    RangeError,
  );
  assert.throws(
    () => attentionForward(step, q, cache, cache, out, state, { ...opts, baseSlot: 1 }),
    RangeError,
  );
  assert.throws(
    () =>
      attentionForward(step, q, cache, cache, out, state, {
        ...opts,
        mask: new Tensor(gpu, [2], "f32", "m"),
      }),
    RangeError,
  );
  assert.throws(
    () => attentionForward(step, q, cache, cache, out, state, { ...opts, tuning: { queries: 0 } }),
    RangeError,
  );
  step.submit();
});
