import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { attentionReference } from "../../kernels/attention.ts";
import {
  attentionBackward,
  attentionBackwardReference,
  attentionBackwardSchedule,
} from "../../kernels/attention_backward.ts";
import { assertClose, randomArray } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

interface Shape {
  T: number;
  H: number;
  KVH: number;
  D: number;
}

// GPU f32 vs the f64 CPU reference: each gradient is a sum of up to T·group terms, so summation
// order and exp2 rounding give small errors (measured max 2.6e-6 on dv of size ~3 at T = 130,
// D = 64; 2e-6 at T = 512). The f32 default (atol 1e-5, rtol 1e-4) keeps a 4x margin.
const GRAD_TOL = { atol: 1e-5, rtol: 1e-4 };

Deno.test(
  "attentionBackward matches the CPU reference (T = 1, 7, 33, 64, 130; GQA 1, 2, 4)",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const shapes: Shape[] = [
      { T: 1, H: 2, KVH: 1, D: 4 },
      { T: 7, H: 4, KVH: 2, D: 8 },
      { T: 7, H: 4, KVH: 4, D: 4 },
      { T: 33, H: 4, KVH: 1, D: 16 },
      { T: 64, H: 2, KVH: 2, D: 32 },
      { T: 130, H: 4, KVH: 2, D: 64 },
      { T: 130, H: 8, KVH: 2, D: 8 },
    ];
    const step = new Step(gpu, "attention backward");
    const cases = shapes.map((s, n) => {
      const { T, H, KVH, D } = s;
      const q = randomArray(T * H * D, 100 + n);
      const k = randomArray(T * KVH * D, 200 + n);
      const v = randomArray(T * KVH * D, 300 + n);
      const dOut = randomArray(T * H * D, 400 + n);
      // The forward output from the forward reference (base 0, the block's own K/V as the cache).
      const out = attentionReference(q, k, v, { base: 0, heads: H, kvHeads: KVH, headDim: D });
      const t = (data: Float32Array, heads: number, name: string) =>
        Tensor.from(gpu, data, [T, heads, D], `${name} ${T}x${H}x${KVH}x${D}`);
      // Outputs start as garbage so that "writes, not accumulates" is checked too.
      const dq = t(randomArray(T * H * D, 1), H, "dq");
      const dk = t(randomArray(T * KVH * D, 2), KVH, "dk");
      const dv = t(randomArray(T * KVH * D, 3), KVH, "dv");
      attentionBackward(
        step,
        t(q, H, "q"),
        t(k, KVH, "k"),
        t(v, KVH, "v"),
        t(out, H, "out"),
        t(dOut, H, "dOut"),
        dq,
        dk,
        dv,
        {
          rows: T,
          heads: H,
          kvHeads: KVH,
          headDim: D,
        },
      );
      return {
        s,
        expected: attentionBackwardReference(q, k, v, dOut, { heads: H, kvHeads: KVH, headDim: D }),
        dq,
        dk,
        dv,
      };
    });
    step.submit();
    const got = await readTensors(gpu, cases.flatMap((c) => [c.dq, c.dk, c.dv]));
    cases.forEach((c, n) => {
      const name = `T=${c.s.T} H=${c.s.H} KVH=${c.s.KVH} D=${c.s.D}`;
      assertClose(got[3 * n], c.expected.dq, GRAD_TOL, `dq ${name}`);
      assertClose(got[3 * n + 1], c.expected.dk, GRAD_TOL, `dk ${name}`);
      assertClose(got[3 * n + 2], c.expected.dv, GRAD_TOL, `dv ${name}`);
    });
  },
);

Deno.test(
  "attentionBackward: explicit schedules (registers or workgroup memory) and scale agree",
  gpuTest,
  async () => {
    // Rows per invocation that do not divide T, one row per invocation, and both places for the
    // head vectors; an explicit stats scratch.
    const gpu = await testGpu();
    const shapes = [{ T: 19, H: 4, KVH: 2, D: 8 }, { T: 21, H: 2, KVH: 1, D: 64 }];
    const tunings = [
      { queries: 1, keys: 1, unroll: true },
      { queries: 5, keys: 3, unroll: true },
      { queries: 1, keys: 1, unroll: false },
      { queries: 3, keys: 2, unroll: false },
    ];
    const scale = 0.7;
    const stats = new Tensor(gpu, [21 * 4 * 2], "f32", "explicit stats");
    const step = new Step(gpu, "attention backward schedules");
    const cases = shapes.flatMap(({ T, H, KVH, D }, n) => {
      const q = randomArray(T * H * D, 11 + n, 2);
      const k = randomArray(T * KVH * D, 12 + n, 2);
      const v = randomArray(T * KVH * D, 13 + n);
      const dOut = randomArray(T * H * D, 14 + n);
      const out = attentionReference(q, k, v, { base: 0, heads: H, kvHeads: KVH, headDim: D, scale });
      const expected = attentionBackwardReference(q, k, v, dOut, {
        heads: H,
        kvHeads: KVH,
        headDim: D,
        scale,
      });
      const [tq, tk, tv, to, tdo] = [q, k, v, out, dOut].map((x, i) =>
        Tensor.from(gpu, x, [x.length], `in${i}`)
      );
      // At D = 64 only the workgroup-memory path (the register path at D = 64 is in the test above;
      // more unrolled variants there would cost seconds of compile time each).
      return tunings.filter((t) => D < 64 || !t.unroll).map((tuning) => {
        const grads = [T * H * D, T * KVH * D, T * KVH * D].map((n) => new Tensor(gpu, [n], "f32", "grad"));
        attentionBackward(step, tq, tk, tv, to, tdo, grads[0], grads[1], grads[2], {
          rows: T,
          heads: H,
          kvHeads: KVH,
          headDim: D,
          scale,
          stats,
          tuning,
        });
        return { name: `D=${D} R=${tuning.queries}/${tuning.keys} unroll=${tuning.unroll}`, grads, expected };
      });
    });
    step.submit();
    const got = await readTensors(gpu, cases.flatMap((c) => c.grads));
    cases.forEach((c, n) => {
      assertClose(got[3 * n], c.expected.dq, GRAD_TOL, `dq ${c.name}`);
      assertClose(got[3 * n + 1], c.expected.dk, GRAD_TOL, `dk ${c.name}`);
      assertClose(got[3 * n + 2], c.expected.dv, GRAD_TOL, `dv ${c.name}`);
    });
  },
);

/**
 * Central finite differences of L = Σ w·attentionReference(q, k, v), with Richardson extrapolation
 * (4·D(h/2) − D(h)) / 3 so the truncation error is O(h⁴). Each perturbation is divided by the step
 * that f32 rounding actually took.
 */
function numericGradient(
  x: Float32Array,
  loss: () => number,
): Float64Array {
  const g = new Float64Array(x.length);
  const central = (i: number, h: number) => {
    const x0 = x[i];
    x[i] = x0 + h;
    const up = x[i];
    const fUp = loss();
    x[i] = x0 - h;
    const down = x[i];
    const fDown = loss();
    x[i] = x0;
    return (fUp - fDown) / (up - down);
  };
  const h = 2 ** -3;
  for (let i = 0; i < x.length; i++) g[i] = (4 * central(i, h / 2) - central(i, h)) / 3;
  return g;
}

Deno.test("attentionBackwardReference matches finite differences of attentionReference", () => {
  const shapes: Shape[] = [
    { T: 3, H: 2, KVH: 1, D: 4 },
    { T: 4, H: 4, KVH: 2, D: 4 },
    { T: 5, H: 2, KVH: 2, D: 8 },
  ];
  shapes.forEach((s, n) => {
    const { T, H, KVH, D } = s;
    const opts = { heads: H, kvHeads: KVH, headDim: D };
    const q = randomArray(T * H * D, 500 + n, 1.5);
    const k = randomArray(T * KVH * D, 600 + n, 1.5);
    const v = randomArray(T * KVH * D, 700 + n);
    const w = randomArray(T * H * D, 800 + n); // dL/dOut
    const loss = () => {
      const out = attentionReference(q, k, v, { base: 0, ...opts });
      let sum = 0;
      for (let i = 0; i < out.length; i++) sum += w[i] * out[i];
      return sum;
    };
    const { dq, dk, dv } = attentionBackwardReference(q, k, v, w, opts);
    // The forward reference rounds its outputs to f32 (relative 6e-8), which is noise of ~1e-7 in
    // L, divided by 2h = 1/4 (and 1/8); the truncation error after extrapolation is O(h⁴).
    // Measured max error 1.4e-6 (h = 2^-6 gave 1.2e-5, rounding-dominated); atol 5e-6 is 3.5x that,
    // while a 1 % error in any gradient (≥ 1e-3 here) fails.
    const FD_TOL = { atol: 5e-6, rtol: 1e-4 };
    const name = `T=${T} H=${H} KVH=${KVH} D=${D}`;
    assertClose(dq, numericGradient(q, loss), FD_TOL, `dq ${name}`);
    assertClose(dk, numericGradient(k, loss), FD_TOL, `dk ${name}`);
    assertClose(dv, numericGradient(v, loss), FD_TOL, `dv ${name}`);
  });
});

Deno.test("attentionBackward rejects bad sizes with a clear error", gpuTest, async () => {
  const gpu = await testGpu();
  const small = new Tensor(gpu, [4], "f32", "small");
  const big = new Tensor(gpu, [64], "f32", "big");
  const step = new Step(gpu, "attention backward errors");
  try {
    assert.throws(
      () =>
        attentionBackward(step, big, big, big, big, big, big, big, big, {
          rows: 2,
          heads: 2,
          kvHeads: 2,
          headDim: 6,
        }),
      /headDim must be a positive multiple of 4, not 6/,
    );
    assert.throws(
      () =>
        attentionBackward(step, big, big, big, big, big, big, big, big, {
          rows: 2,
          heads: 3,
          kvHeads: 2,
          headDim: 4,
        }),
      /heads \(3\) must be a multiple of kvHeads \(2\)/,
    );
    assert.throws(
      () =>
        attentionBackward(step, big, big, big, big, big, small, big, big, {
          rows: 2,
          heads: 2,
          kvHeads: 1,
          headDim: 4,
        }),
      /dq "small" \[4\] holds 4 values, fewer than 2 rows × 2 heads × 4/,
    );
    const wgBytes = gpu.limits.maxComputeWorkgroupStorageSize;
    const rows = Math.ceil(wgBytes / (8 * 3 * 64 * 4)) + 1; // queries whose q, dO, dq overflow it
    const huge = new Tensor(gpu, [rows * 64], "f32", "huge");
    assert.throws(
      () =>
        attentionBackward(step, huge, huge, huge, huge, huge, huge, huge, huge, {
          rows,
          heads: 1,
          kvHeads: 1,
          headDim: 64,
          tuning: { queries: rows, keys: 1, unroll: false },
        }),
      /queries per invocation do not fit \d+ bytes of workgroup memory at headDim 64/,
    );
  } finally {
    step.submit();
  }
  assert.deepEqual(attentionBackwardSchedule(128, 8, 8, 8), { queries: 8, keys: 8, unroll: true });
  assert.deepEqual(attentionBackwardSchedule(512, 8, 2, 64), { queries: 4, keys: 4, unroll: true });
  // Few rows: halved until there are 4 SIMD chunks of work (8 kv heads × 4 = 32 invocations).
  assert.deepEqual(attentionBackwardSchedule(4, 8, 8, 8), { queries: 1, keys: 1, unroll: true });
  // D = 128 in 32 KiB of workgroup memory: 4 vectors × 2 keys × 128 × 4 bytes × 8 invocations.
  assert.deepEqual(attentionBackwardSchedule(512, 8, 2, 128, 32768), { queries: 2, keys: 2, unroll: false });
});

/** A random mask that narrows the causal rule: each key j < i kept with probability 1/2, the diagonal always. */
function randomCausalMask(T: number, seed: number): Uint32Array {
  const words = Math.ceil(T / 32);
  const mask = new Uint32Array(T * words);
  const r = randomArray(T * T, seed);
  for (let i = 0; i < T; i++) {
    for (let j = 0; j <= i; j++) {
      if (j === i || r[i * T + j] > 0) mask[i * words + (j >> 5)] |= 1 << (j & 31);
    }
  }
  return mask;
}

Deno.test(
  "attentionBackward with a mask matches the masked CPU reference (T = 7, 40, 70)",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const shapes: Shape[] = [{ T: 7, H: 4, KVH: 2, D: 8 }, { T: 40, H: 2, KVH: 1, D: 16 }, {
      T: 70,
      H: 4,
      KVH: 2,
      D: 8,
    }];
    const step = new Step(gpu, "masked attention backward");
    const cases = shapes.map((s, n) => {
      const { T, H, KVH, D } = s;
      const mask = randomCausalMask(T, 900 + n);
      const q = randomArray(T * H * D, 910 + n);
      const k = randomArray(T * KVH * D, 920 + n);
      const v = randomArray(T * KVH * D, 930 + n);
      const dOut = randomArray(T * H * D, 940 + n);
      const opts = { heads: H, kvHeads: KVH, headDim: D };
      const out = attentionReference(q, k, v, { base: 0, ...opts, mask });
      const [tq, tk, tv, to, tdo] = [q, k, v, out, dOut].map((x, i) =>
        Tensor.from(gpu, x, [x.length], `in${i}`)
      );
      const grads = [T * H * D, T * KVH * D, T * KVH * D].map((n) => new Tensor(gpu, [n], "f32", "grad"));
      attentionBackward(step, tq, tk, tv, to, tdo, grads[0], grads[1], grads[2], {
        rows: T,
        ...opts,
        mask: Tensor.from(gpu, mask, [mask.length], "mask"),
      });
      const expected = attentionBackwardReference(q, k, v, dOut, { ...opts, mask });
      // The mask matters: the unmasked gradients differ.
      const causal = attentionBackwardReference(q, k, v, dOut, opts);
      assert.ok(causal.dk.some((x, i) => Math.abs(x - expected.dk[i]) > 1e-3), "the mask changes dk");
      return { name: `T=${T} H=${H} KVH=${KVH} D=${D}`, grads, expected };
    });
    step.submit();
    const got = await readTensors(gpu, cases.flatMap((c) => c.grads));
    cases.forEach((c, n) => {
      assertClose(got[3 * n], c.expected.dq, GRAD_TOL, `dq ${c.name}`);
      assertClose(got[3 * n + 1], c.expected.dk, GRAD_TOL, `dk ${c.name}`);
      assertClose(got[3 * n + 2], c.expected.dv, GRAD_TOL, `dv ${c.name}`);
    });
  },
);

Deno.test("masked attentionBackwardReference matches finite differences of the masked attentionReference", () => {
  const { T, H, KVH, D } = { T: 6, H: 2, KVH: 1, D: 4 };
  const opts = { heads: H, kvHeads: KVH, headDim: D };
  const mask = randomCausalMask(T, 950);
  const q = randomArray(T * H * D, 951, 1.5);
  const k = randomArray(T * KVH * D, 952, 1.5);
  const v = randomArray(T * KVH * D, 953);
  const w = randomArray(T * H * D, 954);
  const loss = () => {
    const out = attentionReference(q, k, v, { base: 0, ...opts, mask });
    let sum = 0;
    for (let i = 0; i < out.length; i++) sum += w[i] * out[i];
    return sum;
  };
  const { dq, dk, dv } = attentionBackwardReference(q, k, v, w, { ...opts, mask });
  const FD_TOL = { atol: 5e-6, rtol: 1e-4 };
  assertClose(dq, numericGradient(q, loss), FD_TOL, "masked dq");
  assertClose(dk, numericGradient(k, loss), FD_TOL, "masked dk");
  assertClose(dv, numericGradient(v, loss), FD_TOL, "masked dv");
});
