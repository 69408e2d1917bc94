import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import {
  crossEntropyLoss,
  crossEntropyLossReference,
  IGNORE_LABEL,
  softCrossEntropyLoss,
  softCrossEntropyLossReference,
} from "../../kernels/cross_entropy.ts";
import { assertClose, randomArray, rng } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";
import { numericGradient } from "./_backward_fd.ts";

/**
 * GPU (f32, log-softmax with the row max subtracted) against the f64 references.
 * - dLogits = scale·(q − target): q = exp(x − logZ) in f32 is good to ~|x − logZ|·6e-8 relative
 *   (≤ 1e-5 for logits of magnitude 50), so rtol 1e-4; atol 1e-7 absorbs the rounding of entries
 *   where q and the target nearly cancel (values ≤ 1 times scale ≤ 1).
 * - The loss is an f32 sum of row losses of ~|logZ| ≤ 60 each: rtol 1e-5 of a total ≥ 1.
 */
const GRAD_TOL = { atol: 1e-7, rtol: 1e-4 };
const LOSS_TOL = { atol: 1e-5, rtol: 1e-5 };

/**
 * Logits with magnitude `scale` around `offset` (real logits are not zero-mean, and the smoothing
 * term's mean must be exact for any shift), and a few rows with one dominant entry (a confident model).
 */
function logitsArray(T: number, V: number, seed: number, scale: number, offset = 0): Float32Array {
  const x = randomArray(T * V, seed, scale).map((v) => v + offset);
  const r = rng(seed + 1);
  for (let t = 0; t < T; t += 3) x[t * V + Math.floor(r() * V)] += 2 * scale;
  return x;
}

interface CeCase {
  T: number;
  V: number;
  smoothing: number;
  /** Logit magnitude. */
  mag: number;
  /** Logit offset (default 0). */
  offset?: number;
  /** Every how many rows a label is IGNORE_LABEL (0: none); an id ≥ V is ignored too. */
  ignoreEvery: number;
  inPlace?: boolean;
}

Deno.test("crossEntropyLoss matches the CPU reference (loss on the GPU, gradient)", gpuTest, async () => {
  const gpu = await testGpu();
  // V below / not a multiple of / far above the workgroup of 128, T = 1 and 16..64, smoothing on
  // and off, ignored rows, large logits, in place, all rows ignored.
  const cases: CeCase[] = [
    { T: 1, V: 7, smoothing: 0, mag: 3, ignoreEvery: 0 },
    { T: 16, V: 1000, smoothing: 0.1, mag: 4, ignoreEvery: 5 },
    { T: 64, V: 300, smoothing: 0.1, mag: 50, offset: -20, ignoreEvery: 7 },
    { T: 20, V: 9, smoothing: 0.1, mag: 3, offset: 5, ignoreEvery: 6 },
    { T: 3, V: 32000, smoothing: 0.1, mag: 8, ignoreEvery: 0 },
    { T: 5, V: 129, smoothing: 0, mag: 5, ignoreEvery: 4, inPlace: true },
    { T: 4, V: 50, smoothing: 0.1, mag: 2, ignoreEvery: 1 },
  ];
  // One slot per case, plus two slots that receive the same case twice (determinism), all
  // accumulated onto non-zero starting values except the determinism pair.
  const start = new Float32Array(cases.length + 2).map((_, i) => (i < cases.length ? 0.25 * (i + 1) : 0));
  const loss = Tensor.from(gpu, start, [start.length], "loss");
  const step = new Step(gpu, "cross entropy");
  const runs = cases.map((c, k) => {
    const logits = logitsArray(c.T, c.V, 10 + k, c.mag, c.offset);
    const r = rng(20 + k);
    const labels = new Uint32Array(c.T).map((_, t) =>
      c.ignoreEvery && t % c.ignoreEvery === 0 ? IGNORE_LABEL : Math.floor(r() * c.V)
    );
    if (c.T > 2 && c.ignoreEvery > 1) labels[1] = c.V; // out of vocabulary: also ignored
    const counted = labels.filter((y) => y < c.V).length;
    const scale = counted > 0 ? 10 / counted : 1; // CLLM's AR weight over the counted rows
    const tLogits = Tensor.from(gpu, logits, [c.T, c.V], `logits ${k}`);
    const tLabels = Tensor.from(gpu, labels, [c.T], `labels ${k}`);
    const tGrad = c.inPlace
      ? tLogits
      : Tensor.from(gpu, randomArray(c.T * c.V, 30 + k), [c.T, c.V], `d ${k}`);
    crossEntropyLoss(step, tLogits, tLabels, tGrad, loss, { smoothing: c.smoothing, scale, lossSlot: k });
    return {
      c,
      expected: crossEntropyLossReference(logits, labels, c.V, { smoothing: c.smoothing, scale }),
      tGrad,
    };
  });
  const det = cases[2]; // T = 64, V = 300
  const detLogits = Tensor.from(gpu, logitsArray(det.T, det.V, 99, det.mag), [det.T, det.V], "det logits");
  const detLabels = Tensor.from(gpu, new Uint32Array(det.T).map((_, t) => (t * 7) % det.V), [det.T], "det y");
  const detGrads = [0, 1].map((i) => {
    const g = new Tensor(gpu, [det.T, det.V], "f32", `det d ${i}`);
    crossEntropyLoss(step, detLogits, detLabels, g, loss, {
      smoothing: 0.1,
      scale: 0.3,
      lossSlot: cases.length + i,
    });
    return g;
  });
  step.submit();
  const [lossOut, ...grads] = await readTensors(gpu, [loss, ...runs.map((r) => r.tGrad), ...detGrads]);
  runs.forEach((r, k) => {
    const what = `T=${r.c.T} V=${r.c.V} ε=${r.c.smoothing}${r.c.inPlace ? " in place" : ""}`;
    assertClose(grads[k], r.expected.dLogits, GRAD_TOL, `dLogits ${what}`);
    assertClose([lossOut[k] - start[k]], [r.expected.loss], LOSS_TOL, `loss ${what}`);
  });
  assert.ok(lossOut[cases.length] > 0, "determinism case has a loss");
  assertClose([lossOut[cases.length + 1]], [lossOut[cases.length]], { atol: 0, rtol: 0 }, "loss, run twice");
  assertClose(grads[runs.length + 1], grads[runs.length], { atol: 0, rtol: 0 }, "dLogits, run twice");
});

interface SoftCase {
  T: number;
  V: number;
  firstRow: number;
  lastRow: number;
  mag: number;
  inPlace?: boolean;
}

Deno.test("softCrossEntropyLoss matches the CPU reference (loss on the GPU, gradient)", gpuTest, async () => {
  const gpu = await testGpu();
  const cases: SoftCase[] = [
    { T: 1, V: 7, firstRow: 0, lastRow: 1, mag: 3 },
    { T: 16, V: 1000, firstRow: 3, lastRow: 15, mag: 4 },
    { T: 64, V: 300, firstRow: 0, lastRow: 64, mag: 30 },
    { T: 4, V: 32000, firstRow: 1, lastRow: 4, mag: 8 },
    { T: 5, V: 129, firstRow: 2, lastRow: 5, mag: 5, inPlace: true },
    { T: 6, V: 20, firstRow: 6, lastRow: 6, mag: 2 }, // nothing counted: zero gradient, loss += 0
  ];
  const start = new Float32Array(cases.length).map((_, i) => -0.5 * i);
  const loss = Tensor.from(gpu, start, [cases.length], "loss");
  const step = new Step(gpu, "soft cross entropy");
  const runs = cases.map((c, k) => {
    const logits = logitsArray(c.T, c.V, 40 + k, c.mag);
    // Targets near the logits (a state close to the fixed point), with their own confident rows.
    const noise = logitsArray(c.T, c.V, 50 + k, c.mag / 2);
    const target = logits.map((v, i) => v + noise[i]);
    const counted = c.lastRow - c.firstRow;
    const scale = counted > 0 ? 1 / counted : 1;
    const tLogits = Tensor.from(gpu, logits, [c.T, c.V], `logits ${k}`);
    const tTarget = Tensor.from(gpu, target, [c.T, c.V], `target ${k}`);
    const tGrad = c.inPlace
      ? tLogits
      : Tensor.from(gpu, randomArray(c.T * c.V, 60 + k), [c.T, c.V], `d ${k}`);
    const range = { firstRow: c.firstRow, lastRow: c.lastRow, scale };
    softCrossEntropyLoss(step, tLogits, tTarget, tGrad, loss, { ...range, lossSlot: k });
    return { c, expected: softCrossEntropyLossReference(logits, target, c.V, range), tGrad };
  });
  step.submit();
  const [lossOut, ...grads] = await readTensors(gpu, [loss, ...runs.map((r) => r.tGrad)]);
  runs.forEach((r, k) => {
    const what = `T=${r.c.T} V=${r.c.V} rows ${r.c.firstRow}..${r.c.lastRow}${
      r.c.inPlace ? " in place" : ""
    }`;
    assertClose(grads[k], r.expected.dLogits, GRAD_TOL, `dLogits ${what}`);
    assertClose([lossOut[k] - start[k]], [r.expected.loss], LOSS_TOL, `loss ${what}`);
  });
});

Deno.test("the loss functions reject bad arguments at once", gpuTest, async () => {
  const gpu = await testGpu();
  const logits = new Tensor(gpu, [3, 4], "f32", "logits");
  const target = new Tensor(gpu, [3, 4], "f32", "target");
  const labels = new Tensor(gpu, [3], "u32", "labels");
  const loss = new Tensor(gpu, [2], "f32", "loss");
  const step = new Step(gpu, "bad losses");
  assert.throws(() => crossEntropyLoss(step, logits, labels, target, loss, { lossSlot: 2 }), /lossSlot 2/);
  assert.throws(() => crossEntropyLoss(step, logits, labels, target, loss, { smoothing: 1.5 }), /smoothing/);
  assert.throws(
    () => crossEntropyLoss(step, logits, new Tensor(gpu, [2], "u32", "y"), target, loss),
    /labels/,
  );
  assert.throws(
    () => softCrossEntropyLoss(step, logits, target, logits, loss, { firstRow: 2, lastRow: 1 }),
    /rows/,
  );
  assert.throws(() => softCrossEntropyLoss(step, logits, logits, target, loss, { firstRow: 0 }), /detached/);
  assert.equal(step.dispatchCount, 0);
  step.submit();
});

Deno.test("crossEntropyLossReference matches finite differences of its loss", () => {
  const T = 4, V = 5;
  const logits = randomArray(T * V, 1, 3);
  const labels = new Uint32Array([2, IGNORE_LABEL, 0, 4]);
  for (const smoothing of [0, 0.1]) {
    const options = { smoothing, scale: 0.7 };
    const f = (x: Float64Array) => crossEntropyLossReference(x, labels, V, options).loss;
    // f64 loss, h = 1e-3 with Richardson: truncation ~1e-12, rounding ~1e-13; the analytic gradient
    // is rounded to f32 (relative 6e-8).
    assertClose(
      crossEntropyLossReference(logits, labels, V, options).dLogits,
      numericGradient(f, logits, 1e-3),
      { atol: 1e-8, rtol: 1e-6 },
      `dLogits ε=${smoothing}`,
    );
  }
});

Deno.test("softCrossEntropyLossReference matches finite differences of its loss", () => {
  const T = 5, V = 6;
  const logits = randomArray(T * V, 2, 3);
  const target = randomArray(T * V, 3, 3);
  const options = { firstRow: 1, lastRow: 4, scale: 1 / 3 };
  const f = (x: Float64Array) => softCrossEntropyLossReference(x, target, V, options).loss;
  // As above; rows outside firstRow..lastRow must have a zero gradient on both sides.
  assertClose(
    softCrossEntropyLossReference(logits, target, V, options).dLogits,
    numericGradient(f, logits, 1e-3),
    { atol: 1e-8, rtol: 1e-6 },
    "dLogits",
  );
});
