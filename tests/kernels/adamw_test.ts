import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { adamwReference, type AdamWState, adamwUpdate, zeroTensor } from "../../kernels/adamw.ts";
import { fillForward, fillReference } from "../../kernels/fill.ts";
import { assertClose, randomArray } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

// f32 kernel vs f64 reference rounded to f32 each step: measured max error 2.4e-7 on parameters of
// size ≤ 1 after five steps (2 ulps), 3e-8 on m. rtol 1e-6 (8 ulps) plus atol 1e-7 for values near
// 0; a missing weight decay (lr·λ·p = 1e-3·p) or bias correction is off by far more.
const ADAM_TOL = { atol: 1e-7, rtol: 1e-6 };

Deno.test("adamwUpdate: the first step matches hand-computed values", gpuTest, async () => {
  const gpu = await testGpu();
  // Step 1 (t = 1): m = (1 − β1) g, v = (1 − β2) g², m̂ = g, v̂ = g², so
  // p ← p (1 − lr λ) − lr g / (|g| + eps), with g = grad · scale = grad · 2.
  const lr = 0.1, weightDecay = 0.01, eps = 1e-8;
  const p0 = new Float32Array([1, -2, 0.5, 3]);
  const grad = new Float32Array([0.5, -0.25, 0, 1e-3]);
  const param = Tensor.from(gpu, p0, [4], "param");
  const m = new Tensor(gpu, [4], "f32", "m");
  const v = new Tensor(gpu, [4], "f32", "v");
  const scale = Tensor.from(gpu, new Float32Array([7, 2]), [2], "scale");
  const step = new Step(gpu, "adamw first step");
  adamwUpdate(step, param, Tensor.from(gpu, grad, [4], "grad"), m, v, scale, {
    lr,
    weightDecay,
    eps,
    t: 1,
    scaleSlot: 1,
  });
  step.submit();
  const [p, mm, vv] = await readTensors(gpu, [param, m, v]);
  const decay = 1 - lr * weightDecay; // 0.999
  const expected = [
    1 * decay - 0.1 * 1 / (1 + eps), // g = 1: 0.899
    -2 * decay + 0.1 * 0.5 / (0.5 + eps), // g = −0.5: −1.898
    0.5 * decay, // g = 0: only the decay
    3 * decay - 0.1 * 0.002 / (0.002 + eps), // g = 0.002: still ≈ lr · sign(g)
  ];
  assertClose(p, expected, { atol: 1e-6, rtol: 1e-6 }, "param");
  assertClose(mm, [0.1, -0.05, 0, 0.0002], { atol: 0, rtol: 1e-6 }, "m = 0.1 g");
  assertClose(vv, [0.001, 0.00025, 0, 4e-9], { atol: 0, rtol: 1e-5 }, "v = 0.001 g²");
});

Deno.test("adamwUpdate: five steps with a changing lr match adamwReference", gpuTest, async () => {
  const gpu = await testGpu();
  const sizes = [1, 63, 64, 1000]; // sizes that do not divide the workgroup
  const lrs = [0.01, 0.008, 0.006, 0.004, 0.002];
  const scales = [1, 0.5, 0.25, 1, 0.75];
  const opts = { beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0.1 };
  const step = new Step(gpu, "adamw steps");
  // One scale slot per step, filled on the GPU like clipScale would.
  const scaleBuf = new Tensor(gpu, [scales.length], "f32", "scales");
  scaleBuf.write(new Float32Array(scales));
  const cases = sizes.map((n, c) => {
    const p = randomArray(n, 10 + c);
    const grads = lrs.map((_, s) => randomArray(n, 100 * c + s));
    const param = Tensor.from(gpu, p, [n], `param ${n}`);
    const gradT = grads.map((g, s) => Tensor.from(gpu, g, [n], `grad ${n} step ${s}`));
    const m = Tensor.from(gpu, randomArray(n, 1), [n], `m ${n}`); // garbage, zeroed below
    const v = Tensor.from(gpu, randomArray(n, 2), [n], `v ${n}`);
    zeroTensor(step, m);
    zeroTensor(step, v);
    lrs.forEach((lr, s) =>
      adamwUpdate(step, param, gradT[s], m, v, scaleBuf, { ...opts, lr, t: s + 1, scaleSlot: s })
    );
    // Reference: the same five steps from zero moments.
    let state: AdamWState = { param: p, m: new Float32Array(n), v: new Float32Array(n) };
    lrs.forEach((lr, s) => {
      state = adamwReference(state.param, grads[s], state.m, state.v, scales[s], { ...opts, lr, t: s + 1 });
    });
    return { n, param, m, v, state };
  });
  step.submit();
  const got = await readTensors(gpu, cases.flatMap((c) => [c.param, c.m, c.v]));
  cases.forEach((c, i) => {
    assertClose(got[3 * i], c.state.param, ADAM_TOL, `param n=${c.n}`);
    assertClose(got[3 * i + 1], c.state.m, ADAM_TOL, `m n=${c.n}`);
    assertClose(got[3 * i + 2], c.state.v, ADAM_TOL, `v n=${c.n}`);
  });
});

Deno.test(
  "fillForward fills f32, i32, u32 and f16 tensors; adamw rejects bad arguments",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const f = Tensor.from(gpu, randomArray(100, 3), [100], "f");
    const i = Tensor.from(gpu, new Int32Array(5).fill(9), [5], "i");
    const u = Tensor.from(gpu, new Uint32Array(3).fill(1), [3], "u");
    const h = new Tensor(gpu, [6], "f16", "h");
    const big = new Tensor(gpu, [70000], "f32", "big"); // more than 1024 workgroups of 64
    const step = new Step(gpu, "fills");
    fillForward(step, f, -1.5);
    fillForward(step, i, -7);
    fillForward(step, u, 4294967295);
    fillForward(step, h, 0.5);
    fillForward(step, big, 3);
    assert.throws(() => fillForward(step, new Tensor(gpu, [3], "f16", "odd"), 0), /odd size 3/);
    assert.throws(() => fillForward(step, i, 0.5), /cannot hold 0.5/);
    assert.throws(() => adamwUpdate(step, f, i, f, f, f, { lr: 1, t: 1 }), /grad "i" must be f32 with 100/);
    assert.throws(() => adamwUpdate(step, f, f, f, f, f, { lr: 1, t: 0 }), /integer ≥ 1, not 0/);
    assert.throws(
      () => adamwUpdate(step, f, f, f, f, u, { lr: 1, t: 1, scaleSlot: 0 }),
      /scaleSlot 0 is not a slot of f32 tensor "u"/,
    );
    step.submit();
    const [rf, ri, ru, rh, rb] = await readTensors(gpu, [f, i, u, h, big]);
    assertClose(rf, fillReference(100, -1.5), { atol: 0, rtol: 0 }, "f32");
    assert.deepEqual([...ri], [-7, -7, -7, -7, -7]);
    assert.deepEqual([...ru], [4294967295, 4294967295, 4294967295]);
    assert.deepEqual([...rh], [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]);
    assertClose(rb, fillReference(70000, 3), { atol: 0, rtol: 0 }, "big");
  },
);
