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
  bits: 8 | 4 = 8,
): { q: Int8Array; scales: Float32Array } {
  const q = bits === 8
    ? new Int8Array(words.buffer, words.byteOffset, size).slice()
    : Int8Array.from({ length: size }, (_, i) => ((words[i >> 3] >>> (4 * (i & 7))) & 0xf) - 8);
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
  "quantizeQ8 equals its CPU reference: int8 and int4 values and f16 scales, in pieces at offsets",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    for (const bits of [8, 4] as const) {
      for (const [rows, K, pieces] of [[3, 32, 1], [5, 96, 2], [7, 256, 3]]) {
        const values = weights(rows * K, rows + K);
        const src = Tensor.from(gpu, values, [rows * K], "values");
        const dst = new Tensor(gpu, [rows, K], bits === 8 ? "q8" : "q4", `w q${bits}`);
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
        const got = unpackQ8(raw as Uint32Array, rows * K, dst.q8ScaleWord, bits);
        const ref = quantizeQ8Reference(values, bits);
        const what = `q${bits} ${rows}x${K}`;
        assert.deepEqual(Array.from(got.scales), Array.from(ref.scales), `${what} scales`);
        assert.deepEqual(Array.from(got.q), Array.from(ref.q), `${what} values`);
        // The scheme's error: half a step per value, plus what clamping cuts when the f16 scale
        // rounded below max/levels (tiny groups, whose scale is an f16 subnormal).
        const back = dequantizeQ8Reference(ref.q, ref.scales);
        const top = bits === 8 ? 127 : 7; // Q4_0 clamps at +7 the side opposite the largest value
        values.forEach((v, i) => {
          const s = Math.abs(ref.scales[Math.floor(i / 32)]);
          assert.ok(
            Math.abs(back[i] - v) <= s / 2 + Math.max(0, Math.abs(v) - top * s) + 1e-12,
            `${what} ${i}`,
          );
        });
      }
    }
  },
);

Deno.test(
  "matmul with q8 and q4 weights equals the f64 product of the dequantised weights",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const step = new Step(gpu, "quantised matmul");
    const checks: { y: Tensor; expected: Float32Array; K: number; what: string }[] = [];
    for (
      const [T, N, K, bits] of [
        [1, 33, 32, 8],
        [5, 64, 96, 8],
        [16, 67, 256, 8],
        [3, 8, 64, 8],
        [1, 33, 32, 4],
        [5, 64, 96, 4],
        [16, 67, 256, 4],
      ] as const
    ) {
      const w = weights(N * K, N + K);
      const x = randomArray(T * K, T + K, 1);
      const src = Tensor.from(gpu, w, [N * K], "w f32");
      const wq = new Tensor(gpu, [N, K], bits === 8 ? "q8" : "q4", `w q${bits}`);
      quantizeQ8(step, src, wq, { count: N * K });
      const y = new Tensor(gpu, [T, N], "f32", "y");
      matmulForward(step, Tensor.from(gpu, x, [T, K], "x"), wq, y);
      const ref = quantizeQ8Reference(w, bits);
      checks.push({
        y,
        expected: matmulReference(x, dequantizeQ8Reference(ref.q, ref.scales), T, N, K),
        K,
        what: `q${bits} ${T}x${N}x${K}`,
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
  },
);

Deno.test("the int4 scheme, chosen by its error: Q4_0 (signed largest / −8) beats symmetric absmax / 7", () => {
  // Gaussian values, as trained weight matrices roughly are (the embedded CLLM's layer matrices give
  // the same order: relative RMS error 0.087 against 0.098).
  let seed = 7;
  const uniform = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) + 0.5) / 2 ** 32;
  const v = Float32Array.from(
    { length: 1 << 16 },
    () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform()),
  );
  const error = (w: Float32Array) => {
    let e = 0, n = 0;
    for (let i = 0; i < v.length; i++) [e, n] = [e + (v[i] - w[i]) ** 2, n + v[i] ** 2];
    return Math.sqrt(e / n);
  };
  const q4 = quantizeQ8Reference(v, 4);
  const chosen = error(dequantizeQ8Reference(q4.q, q4.scales));
  const symmetric = new Float32Array(v.length);
  for (let g = 0; g < v.length; g += 32) {
    const m = Math.max(...v.subarray(g, g + 32).map(Math.abs));
    for (let j = g; j < g + 32; j++) symmetric[j] = Math.round((7 * v[j]) / m) * (m / 7);
  }
  const q8 = quantizeQ8Reference(v, 8);
  assert.ok(chosen < 0.95 * error(symmetric), `Q4_0 ${chosen} against symmetric ${error(symmetric)}`);
  assert.ok(error(dequantizeQ8Reference(q8.q, q8.scales)) < 0.01, "q8 error under 1 %");
});
