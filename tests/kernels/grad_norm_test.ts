import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { clipScale, clipScaleReference, sumSquares, sumSquaresReference } from "../../kernels/grad_norm.ts";
import { assertClose, randomArray } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

// f32 sums of positive terms in blocks of 64, then per invocation, then over the partials: the
// relative error is ≲ (64 + blocks + partials)·2^-24 in the worst case (measured 1.2e-7 against
// the f64 reference). rtol 2e-6 still catches a missed tensor or a missed block of 64 terms of the
// big tensors (≥ 5e-5 of the sum).
const SUM_TOL = { atol: 0, rtol: 2e-6 };

Deno.test("sumSquares adds Σx² over many tensors into a slot, deterministically", gpuTest, async () => {
  const gpu = await testGpu();
  // Sizes below, at and above the block and partial sizes, and one over 4096 partials · 256.
  const sizes = [1, 63, 64, 257, 1000, 100_000, 1_100_000];
  const arrays = sizes.map((n, i) => randomArray(n, 30 + i, 0.01 * (i + 1)));
  const tensors = arrays.map((a, i) => Tensor.from(gpu, a, [a.length], `g${i}`));
  const empty = new Tensor(gpu, [0], "f32", "empty");
  const out = Tensor.from(gpu, new Float32Array([9, 9, 0.5, 9]), [4], "out");
  const twice = new Tensor(gpu, [2], "f32", "twice");
  const step = new Step(gpu, "sum squares");
  sumSquares(step, [...tensors, empty], out, { slot: 2 }); // adds to the 0.5 already there
  sumSquares(step, tensors.slice(0, 3), out, { slot: 0 }); // a second, smaller call in the same step
  sumSquares(step, tensors, twice, { slot: 0 });
  sumSquares(step, [...tensors].reverse(), twice, { slot: 1 });
  step.submit();
  const [got, again] = await readTensors(gpu, [out, twice]);
  const expected = sumSquaresReference(arrays);
  assertClose([got[2]], [0.5 + expected], SUM_TOL, "out[2] = 0.5 + Σx²");
  assertClose([got[0]], [9 + sumSquaresReference(arrays.slice(0, 3))], SUM_TOL, "out[0]");
  assert.equal(got[1], 9, "other slots untouched");
  assert.equal(got[3], 9, "other slots untouched");
  assertClose([again[0]], [expected], SUM_TOL, "fresh slot");
  assertClose([again[1]], [expected], SUM_TOL, "reversed order");

  // Determinism: the same sum in a second step gives the same bits.
  const step2 = new Step(gpu, "sum squares again");
  const twice2 = new Tensor(gpu, [1], "f32", "twice2");
  sumSquares(step2, tensors, twice2, { slot: 0 });
  step2.submit();
  const [third] = await readTensors(gpu, [twice2]);
  assert.equal(third[0], again[0], "bitwise equal on a rerun");
});

Deno.test("clipScale writes min(1, maxNorm / (norm + 1e-6)) and the norm", gpuTest, async () => {
  const gpu = await testGpu();
  const sums = [25, 0.25, 0, 1e6];
  const maxNorm = 1;
  const sumSq = Tensor.from(gpu, new Float32Array(sums), [sums.length], "sums");
  // Separate buffers: scale and norm of sum i at slots 2i and 2i + 1.
  const out = new Tensor(gpu, [2 * sums.length], "f32", "scale and norm");
  // One buffer (aliased): [sum, scale, norm] per case.
  const stats = sums.map((s, i) => Tensor.from(gpu, new Float32Array([s, 7, 7]), [3], `stats ${i}`));
  const noNorm = Tensor.from(gpu, new Float32Array([7, 7]), [2], "no norm");
  const step = new Step(gpu, "clip scale");
  sums.forEach((_, i) => {
    clipScale(step, sumSq, out, { maxNorm, sumSlot: i, scaleSlot: 2 * i, normSlot: 2 * i + 1 });
    clipScale(step, stats[i], stats[i], { maxNorm, sumSlot: 0, scaleSlot: 1, normSlot: 2 });
  });
  clipScale(step, sumSq, noNorm, { maxNorm: 2, sumSlot: 0, scaleSlot: 0 });
  assert.throws(() => clipScale(step, sumSq, out, { maxNorm: 0, sumSlot: 0, scaleSlot: 0 }), /maxNorm/);
  assert.throws(
    () => clipScale(step, sumSq, out, { maxNorm: 1, sumSlot: 4, scaleSlot: 0 }),
    /sumSlot 4 is not a slot of "sums"/,
  );
  step.submit();
  const got = await readTensors(gpu, [out, noNorm, ...stats]);
  const tol = { atol: 1e-7, rtol: 1e-6 }; // sqrt and one division in f32
  sums.forEach((s, i) => {
    const { norm, scale } = clipScaleReference(s, maxNorm);
    assertClose([got[0][2 * i], got[0][2 * i + 1]], [scale, norm], tol, `scale and norm of ${s}`);
    assertClose(got[2 + i], [s, scale, norm], tol, `aliased stats of ${s}`);
  });
  assertClose(got[1], [2 / (5 + 1e-6), 7], tol, "no norm slot");
  // Hand values: norm 5 → 1/5; norm 0.5 → 1 (no clipping); norm 0 → 1; norm 1000 → 1e-3.
  assertClose(sums.map((_, i) => got[0][2 * i]), [0.2, 1, 1, 0.001], { atol: 0, rtol: 1e-6 }, "scales");
});
