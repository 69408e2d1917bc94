import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { matmulForward, matmulReference } from "../../kernels/matmul.ts";
import { dequantizeQ8Reference, quantizeQ8, quantizeQ8Reference } from "../../kernels/quantize.ts";
import { assertClose, randomArray } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

/** Values with groups of very different magnitudes (and an all-zero group), as real weights have. */
function weights(n: number, seed: number): Float32Array {
  const v = randomArray(n, seed, 1);
  for (let i = 0; i < n; i++) v[i] *= [0.02, 1, 1e-4, 0][Math.floor(i / 32) % 4];
  return v;
}

/** The int8 values and scales a q8 tensor's raw words hold. */
function unpackQ8(
  words: Uint32Array,
  size: number,
  scaleWord: number,
): { q: Int8Array; scales: Float32Array } {
  const q = new Int8Array(words.buffer, words.byteOffset, size).slice();
  const groups = Math.ceil(size / 32);
  const scales = new Float32Array(groups);
  const half = new Uint16Array(words.buffer, words.byteOffset + scaleWord * 4, groups);
  for (let g = 0; g < groups; g++) {
    const h = half[g];
    const e = (h >> 10) & 0x1f, m = h & 0x3ff;
    scales[g] = (e === 0 ? m * 2 ** -24 : (1 + m / 1024) * 2 ** (e - 15)) * (h & 0x8000 ? -1 : 1);
  }
  return { q, scales };
}

Deno.test(
  "quantizeQ8 equals its CPU reference: int8 values and f16 scales, in pieces at offsets",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    for (const [rows, K, pieces] of [[3, 32, 1], [5, 96, 2], [7, 256, 3]]) {
      const values = weights(rows * K, rows + K);
      const src = Tensor.from(gpu, values, [rows * K], "values");
      const dst = new Tensor(gpu, [rows, K], "q8", "w q8");
      const step = new Step(gpu, "quantize");
      // Pieces of whole pairs of groups (64 values), the last one what is left.
      const per = Math.ceil((rows * K) / pieces / 64) * 64;
      for (let from = 0; from < rows * K; from += per) {
        quantizeQ8(step, src, dst, {
          count: Math.min(per, rows * K - from),
          srcElement: from,
          dstElement: from,
        });
      }
      step.submit();
      const [raw] = await readTensors(gpu, [dst]);
      const got = unpackQ8(raw as Uint32Array, rows * K, dst.q8ScaleWord);
      const ref = quantizeQ8Reference(values);
      assert.deepEqual(Array.from(got.scales), Array.from(ref.scales), `scales ${rows}x${K}`);
      assert.deepEqual(Array.from(got.q), Array.from(ref.q), `values ${rows}x${K}`);
      // The scheme's error: half a step per value, plus what clamping at ±127 cuts when the f16
      // scale rounded below max/127 (tiny groups, whose scale is an f16 subnormal).
      const back = dequantizeQ8Reference(ref.q, ref.scales);
      values.forEach((v, i) => {
        const s = ref.scales[Math.floor(i / 32)];
        assert.ok(Math.abs(back[i] - v) <= s / 2 + Math.max(0, Math.abs(v) - 127 * s) + 1e-12, `value ${i}`);
      });
    }
  },
);

Deno.test("matmul with q8 weights equals the f64 product of the dequantised weights", gpuTest, async () => {
  const gpu = await testGpu();
  const step = new Step(gpu, "q8 matmul");
  const checks: { y: Tensor; expected: Float32Array; K: number; what: string }[] = [];
  for (const [T, N, K] of [[1, 33, 32], [5, 64, 96], [16, 67, 256], [3, 8, 64]]) {
    const w = weights(N * K, N + K);
    const x = randomArray(T * K, T + K, 1);
    const src = Tensor.from(gpu, w, [N * K], "w f32");
    const wq = new Tensor(gpu, [N, K], "q8", "w q8");
    quantizeQ8(step, src, wq, { count: N * K });
    const y = new Tensor(gpu, [T, N], "f32", "y");
    matmulForward(step, Tensor.from(gpu, x, [T, K], "x"), wq, y);
    const ref = quantizeQ8Reference(w);
    checks.push({
      y,
      expected: matmulReference(x, dequantizeQ8Reference(ref.q, ref.scales), T, N, K),
      K,
      what: `${T}x${N}x${K}`,
    });
  }
  step.submit();
  const results = await readTensors(gpu, checks.map((c) => c.y));
  checks.forEach((c, i) =>
    assertClose(results[i], c.expected, { atol: 1e-5 * Math.sqrt(c.K), rtol: 1e-4 }, c.what)
  );
  // A reduction length that is not a multiple of 32 is refused.
  const bad = new Step(gpu, "bad q8");
  assert.throws(
    () =>
      matmulForward(
        bad,
        new Tensor(gpu, [1, 48], "f32", "x"),
        new Tensor(gpu, [4, 48], "q8", "w"),
        new Tensor(gpu, [1, 4], "f32", "y"),
      ),
    /multiple of 32/,
  );
  bad.abandon();
});
