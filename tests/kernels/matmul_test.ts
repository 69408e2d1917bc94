import assert from "node:assert/strict";
import { f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, readTensors, Step, Tensor } from "../../core/mod.ts";
import {
  llvmpipeLanes,
  MATMUL_TUNING,
  matmulForward,
  matmulNN,
  matmulNNReference,
  matmulReference,
  type MatmulTiling,
  matmulTN,
  matmulTNReference,
  matmulVariant,
} from "../../kernels/matmul.ts";
import { assertClose, randomArray } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

/**
 * Tolerance for a length-K f32 reduction of products of values in [-1, 1). Each product is ≤ 1 and
 * averages 1/9 in square, so the partial sums grow like sqrt(K)/3 and the f32 rounding error of the
 * sum like eps·sqrt(K)·sqrt(K)/3 ≈ 2e-8·K (the kernel sums 4 products per dot, then the dots in
 * order). atol 1e-5·sqrt(K) is ≥ 10× that for K ≤ 2500, while one missing or wrong product (~0.3)
 * is 100× over it. rtol 1e-4 covers large outputs.
 */
function tol(K: number) {
  return { atol: 1e-5 * Math.sqrt(K), rtol: 1e-4 };
}

/** Rounds values to bf16 and back (what a bf16 weight tensor holds). */
function roundBf16(values: Float32Array): Float32Array {
  const bits = new Uint32Array(values.length);
  values.forEach((v, i) => (bits[i] = f32ToBf16Bits(v) << 16));
  return new Float32Array(bits.buffer);
}

/** Rounds values to f16 and back, so an f16-weight product can be checked against f32 loops. */
function roundF16(values: Float32Array): Float32Array {
  return values.map((v) => f16BitsToF32(f32ToF16Bits(v)));
}

interface Case {
  /** Product layout. */
  form: "nt" | "nn" | "tn";
  /** Rows T of the activations. */
  T: number;
  /** Output columns. */
  N: number;
  /** Reduction length (nt, nn; tn reduces over T). */
  K?: number;
  /** Output rows of tn (y is (M, N)); nt and nn have T output rows. */
  M?: number;
  accumulate?: boolean;
  f16?: boolean;
  /** Weights stored as bf16 (read as packed words, widened by a shift). */
  bf16?: boolean;
  variant?: Partial<MatmulTiling>;
}

/**
 * Records every case into one step and checks all of them after a single readback. Shapes are
 * chosen so the production tilings of the fallback adapter (R = 1, 2, 4, 8, 16, 32) each run, with
 * row lengths that are and are not multiples of 4 (the vec4 and element-by-element loaders), odd
 * sizes that divide no tile, and accumulate on and off. Each distinct variant costs a shader
 * compile (up to ~3 s cold on llvmpipe, cached by Mesa afterwards), so the cases share variants.
 */
async function runCases(cases: Case[], seed: number): Promise<void> {
  const gpu = await testGpu();
  const step = new Step(gpu, "matmul cases");
  const checks = cases.map((c, i) => {
    const s = seed + 10 * i;
    const label =
      `${c.form} T=${c.T} ${c.form === "tn" ? `M=${c.M}` : `K=${c.K}`} N=${c.N}${c.accumulate ? " +=" : ""}${
        c.f16 ? " f16" : c.bf16 ? " bf16" : ""
      }` +
      `${c.variant ? " " + JSON.stringify(c.variant) : ""}`;
    const opts = { accumulate: c.accumulate, variant: c.variant };
    let expected: Float32Array;
    let y: Tensor;
    let K: number;
    if (c.form === "tn") {
      // y (M, N) = a (T, M)ᵀ · b (T, N)
      const [M, N] = [c.M!, c.N];
      const a = randomArray(c.T * M, s);
      const b = randomArray(c.T * N, s + 1);
      const y0 = randomArray(M * N, s + 2);
      y = Tensor.from(gpu, c.accumulate ? y0 : new Float32Array(M * N).fill(NaN), [M, N], `y ${label}`);
      matmulTN(step, Tensor.from(gpu, a, [c.T, M], "a"), Tensor.from(gpu, b, [c.T, N], "b"), y, opts);
      expected = matmulTNReference(a, b, c.T, M, N);
      if (c.accumulate) expected = expected.map((v, j) => v + y0[j]);
      K = c.T;
    } else {
      K = c.K!;
      const x = randomArray(c.T * K, s);
      const w = randomArray(c.N * K, s + 1);
      const y0 = randomArray(c.T * c.N, s + 2);
      // Without accumulate, y starts as NaN: every output must be written, none read.
      y = Tensor.from(
        gpu,
        c.accumulate ? y0 : new Float32Array(c.T * c.N).fill(NaN),
        [c.T, c.N],
        `y ${label}`,
      );
      const tx = Tensor.from(gpu, x, [c.T, K], "x");
      const dtype = c.f16 ? "f16" : c.bf16 ? "bf16" : "f32";
      const wUsed = c.f16 ? roundF16(w) : c.bf16 ? roundBf16(w) : w;
      if (c.form === "nt") {
        matmulForward(step, tx, Tensor.from(gpu, w, [c.N, K], "w", dtype), y, opts);
        expected = matmulReference(x, wUsed, c.T, c.N, K);
      } else {
        // nn: b is (K, N); the same random values, read as that shape.
        matmulNN(step, tx, Tensor.from(gpu, w, [K, c.N], "b", dtype), y, opts);
        expected = matmulNNReference(x, wUsed, c.T, c.N, K);
      }
      if (c.accumulate) expected = expected.map((v, j) => v + y0[j]);
    }
    return { label, y, expected, K };
  });
  step.submit();
  const results = await readTensors(gpu, checks.map((c) => c.y));
  checks.forEach((c, i) => assertClose(results[i], c.expected, tol(c.K), c.label));
}

Deno.test(
  "matmulForward (x · Wᵀ) matches the CPU reference at decode, block and odd shapes",
  gpuTest,
  async () => {
    await runCases([
      { form: "nt", T: 1, N: 5, K: 8 },
      { form: "nt", T: 1, N: 257, K: 64, accumulate: true },
      { form: "nt", T: 2, N: 31, K: 67 },
      { form: "nt", T: 3, N: 67, K: 129, accumulate: true },
      { form: "nt", T: 7, N: 129, K: 64 },
      { form: "nt", T: 16, N: 257, K: 128, accumulate: true },
      { form: "nt", T: 16, N: 1, K: 4 },
      { form: "nt", T: 33, N: 129, K: 68 },
      { form: "nt", T: 64, N: 67, K: 256, accumulate: true },
      { form: "nt", T: 256, N: 300, K: 200 },
    ], 100);
  },
);

Deno.test("matmulNN (a · b) matches the CPU reference", gpuTest, async () => {
  await runCases([
    { form: "nn", T: 1, N: 31, K: 5 },
    { form: "nn", T: 3, N: 8, K: 1, accumulate: true },
    { form: "nn", T: 7, N: 129, K: 64, accumulate: true },
    { form: "nn", T: 16, N: 67, K: 31 },
    { form: "nn", T: 64, N: 128, K: 256, accumulate: true },
    { form: "nn", T: 33, N: 4, K: 8 },
    { form: "nn", T: 256, N: 300, K: 200 },
  ], 200);
});

Deno.test("matmulTN (aᵀ · b) matches the CPU reference", gpuTest, async () => {
  await runCases([
    { form: "tn", T: 1, M: 5, N: 8 },
    { form: "tn", T: 2, M: 16, N: 3, accumulate: true },
    { form: "tn", T: 7, M: 15, N: 67, accumulate: true },
    { form: "tn", T: 33, M: 132, N: 64 },
    { form: "tn", T: 64, M: 64, N: 64, accumulate: true },
    { form: "tn", T: 256, M: 300, N: 200 },
  ], 300);
});

Deno.test(
  "f16 and bf16 weights and the tiling without subgroups match the CPU reference",
  gpuTest,
  async () => {
    const plain = { SG: false, R: 4, C: 4, WG: 16 }; // the shape of the table row for real GPUs
    await runCases([
      { form: "nt", T: 1, N: 67, K: 64, bf16: true },
      { form: "nt", T: 16, N: 33, K: 67, bf16: true, accumulate: true },
      { form: "nn", T: 5, N: 64, K: 31, bf16: true },
      { form: "nt", T: 16, N: 67, K: 36, bf16: true, variant: { SG: false, R: 1, C: 1, WG: 64 } },
      { form: "nt", T: 16, N: 67, K: 64, f16: true },
      { form: "nt", T: 3, N: 5, K: 67, f16: true, accumulate: true },
      { form: "nn", T: 2, N: 64, K: 31, f16: true },
      { form: "nt", T: 33, N: 31, K: 67, variant: plain, accumulate: true },
      { form: "nt", T: 5, N: 64, K: 64, variant: { SG: false, R: 1, C: 3, WG: 8 } },
      // The GPU table's decoding row: one output per invocation.
      { form: "nt", T: 16, N: 67, K: 36, f16: true, variant: { SG: false, R: 1, C: 1, WG: 64 } },
      { form: "nn", T: 33, N: 31, K: 67, variant: plain },
      { form: "nn", T: 8, N: 64, K: 64, variant: plain, accumulate: true },
      { form: "tn", T: 33, M: 31, N: 67, variant: plain },
      { form: "tn", T: 6, M: 64, N: 64, variant: plain, accumulate: true },
    ], 400);
  },
);

Deno.test("matmul variant selection and shape errors", gpuTest, async () => {
  const gpu = await testGpu();
  const decode = matmulVariant(gpu, "nt", 1, 1024, 1024);
  const square = matmulVariant(gpu, "nt", 1024, 1024, 1024);
  assert.ok(decode.R <= square.R, "fewer rows per invocation for one-token decoding");
  assert.equal(decode.VA && decode.VB, true);
  assert.equal(matmulVariant(gpu, "nt", 4, 4, 6).VB, false);
  assert.equal(matmulVariant(gpu, "nt", 1, 8, 8, "f32", { R: 2 }).R, 2);
  assert.equal(matmulVariant(gpu, "nt", 1, 8, 8, "f16").F16, true);
  assert.equal(matmulVariant(gpu, "nt", 1, 8, 8, "bf16").BF16, true);
  assert.throws(() => matmulVariant(gpu, "tn", 8, 8, 8, "f32", { R: 3 }), RangeError);
  // The GPU table: decoding-sized products one output per invocation, larger ones in 4 × 4 blocks.
  const gpuRow = (M: number) => {
    const t = MATMUL_TUNING.gpu("nt", M, 128, 128, gpu);
    return [t.R, t.C];
  };
  assert.deepEqual(gpuRow(16), [1, 1]);
  assert.deepEqual(gpuRow(64), [4, 4]);
  assert.equal(MATMUL_TUNING.gpu("nn", 16, 128, 128, gpu).C % 4, 0, "nn needs vec4 column groups");
  assert.equal(llvmpipeLanes("llvmpipe (LLVM 15.0.6, 256 bits)"), 8);
  assert.equal(llvmpipeLanes("llvmpipe (LLVM 19.1.7, 512 bits)"), 16);
  assert.equal(llvmpipeLanes("NVIDIA H100 80GB HBM3"), null);
  const step = new Step(gpu, "shape errors");
  const x = new Tensor(gpu, [2, 3], "f32", "x");
  const w = new Tensor(gpu, [4, 5], "f32", "w");
  const y = new Tensor(gpu, [2, 4], "f32", "y");
  assert.throws(
    () => matmulForward(step, x, w, y),
    (e: unknown) => e instanceof RangeError && /matmulForward/.test(e.message),
  );
  assert.throws(() => matmulNN(step, x, w, y), RangeError);
  assert.throws(() => matmulTN(step, x, w, y), RangeError);
  // Subgroup code written for another subgroup size poisons its outputs instead of mixing lanes.
  if (gpu.features.subgroups) {
    const x1 = Tensor.from(gpu, randomArray(8, 1), [2, 4], "x");
    const w1 = Tensor.from(gpu, randomArray(12, 2), [3, 4], "w");
    const poisoned = new Tensor(gpu, [2, 3], "f32", "poisoned");
    matmulForward(step, x1, w1, poisoned, { variant: { SG: true, SGS: 4, WG: 8, R: 2, C: 4 } });
    step.submit();
    const [p] = await readTensors(gpu, [poisoned]);
    assert.ok(p.every(Number.isNaN), `expected NaN outputs, got ${p}`);
  } else {
    step.submit();
    await readTensors(gpu, [y]);
  }
});
