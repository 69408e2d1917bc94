import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { matmulForward, matmulGroupsForward, matmulReference } from "../../kernels/matmul.ts";
import { quantizeQ8 } from "../../kernels/quantize.ts";
import { rmsNormForward } from "../../kernels/rms_norm.ts";
import { siluMulForward } from "../../kernels/silu_mul.ts";
import { assertClose, randomArray } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

// One dispatch for the products that share an input (q/k/v, gate/up) must give exactly what the
// separate products give (the same tiling and reduction order per output), for every weight dtype,
// with group boundaries that fall inside a workgroup's columns (40, 64: not multiples of 32), and
// with one y (groups side by side) or one y per weight.
Deno.test("grouped products equal the separate ones, bit for bit, for every dtype", gpuTest, async () => {
  const gpu = await testGpu();
  const K = 64;
  const sizes = [[40, 24, 24], [64, 40]];
  for (const dtype of ["f32", "f16", "q4"] as ("f32" | "f16" | "bf16" | "q8" | "q4")[]) {
    const step = new Step(gpu, `groups ${dtype}`);
    const checks: { got: Tensor; want: Tensor; what: string }[] = [];
    const fixtures: { x: Float32Array; ws: Float32Array[]; y: Tensor; T: number; Ns: number[] }[] = [];
    for (const T of [1, 5]) {
      for (const Ns of sizes) {
        const x = randomArray(T * K, T, 1);
        const tx = Tensor.from(gpu, x, [T, K], "x");
        const wsF32 = Ns.map((N, g) => randomArray(N * K, 100 * T + 10 * N + g, 0.2));
        const ws = wsF32.map((w, g) => {
          const N = Ns[g];
          if (dtype === "q8" || dtype === "q4") {
            const q = new Tensor(gpu, [N, K], dtype, `w${g}`);
            quantizeQ8(step, Tensor.from(gpu, w, [N * K], "src"), q, { count: N * K });
            return q;
          }
          return Tensor.from(gpu, w, [N, K], `w${g}`, dtype);
        });
        const total = Ns.reduce((a, b) => a + b, 0);
        const what = `${dtype} T=${T} N=${Ns.join("+")}`;
        // Reference: the separate products, side by side.
        const want = new Tensor(gpu, [T, total], "f32", "want");
        let first = 0;
        for (const [g, w] of ws.entries()) {
          const part = new Tensor(gpu, [T, Ns[g]], "f32", "part");
          matmulForward(step, tx, w, part);
          for (let t = 0; t < T; t++) {
            step.copy(part, t * Ns[g] * 4, want, (t * total + first) * 4, Ns[g] * 4);
          }
          first += Ns[g];
        }
        if (Ns.length === 3) {
          const y = new Tensor(gpu, [T, total], "f32", "y");
          matmulGroupsForward(step, tx, ws, y);
          checks.push({ got: y, want, what: `${what}, one y` });
          if (dtype === "f32") fixtures.push({ x, ws: wsF32, y, T, Ns });
        } else {
          const ys = Ns.map((N) => new Tensor(gpu, [T, N], "f32", "y"));
          matmulGroupsForward(step, tx, ws, ys);
          // Side by side again, to compare with the reference.
          const joined = new Tensor(gpu, [T, total], "f32", "joined");
          let f = 0;
          ys.forEach((y, g) => {
            for (let t = 0; t < T; t++) step.copy(y, t * Ns[g] * 4, joined, (t * total + f) * 4, Ns[g] * 4);
            f += Ns[g];
          });
          checks.push({ got: joined, want, what: `${what}, a y per weight` });
        }
      }
    }
    step.submit();
    const data = await readTensors(gpu, checks.flatMap((c) => [c.got, c.want]));
    checks.forEach((c, i) => assert.deepEqual(data[2 * i], data[2 * i + 1], c.what));
    // And the f32 case against plain loops.
    for (const f of fixtures) {
      const [y] = await readTensors(gpu, [f.y]);
      const total = f.Ns.reduce((a, b) => a + b, 0);
      const expected = new Float32Array(f.T * total);
      let first = 0;
      f.ws.forEach((w, g) => {
        const part = matmulReference(f.x, w, f.T, f.Ns[g], K);
        for (let t = 0; t < f.T; t++) {
          expected.set(part.subarray(t * f.Ns[g], (t + 1) * f.Ns[g]), t * total + first);
        }
        first += f.Ns[g];
      });
      assertClose(y as Float32Array, expected, undefined, `f32 T=${f.T} vs CPU`);
    }
  }
});

Deno.test("grouped products: mismatched weights are clear errors", gpuTest, async () => {
  const gpu = await testGpu();
  const step = new Step(gpu, "bad");
  const x = new Tensor(gpu, [2, 8], "f32", "x");
  const a = new Tensor(gpu, [4, 8], "f32", "a");
  assert.throws(
    () => matmulGroupsForward(step, x, [a], new Tensor(gpu, [2, 4], "f32", "y")),
    /2 or 3 weights/,
  );
  assert.throws(
    () =>
      matmulGroupsForward(
        step,
        x,
        [a, new Tensor(gpu, [4, 6], "f32", "b")],
        new Tensor(gpu, [2, 8], "f32", "y"),
      ),
    /every weight must be/,
  );
  assert.throws(
    () => matmulGroupsForward(step, x, [a, a], new Tensor(gpu, [2, 5], "f32", "y")),
    /need f32 y/,
  );
  step.abandon();
});

// The RMSNorm folded into a product, and silu·mul in the gate/up product's epilogue, against the
// separate kernels (rms_norm, matmul, silu_mul) and plain loops. Not bit for bit: the folded norm
// scales after the sum instead of before it.
Deno.test("folded RMSNorm and the silu·mul epilogue equal the separate kernels", gpuTest, async () => {
  const gpu = await testGpu();
  const K = 64, I = 40, eps = 1e-5;
  for (const dtype of ["f32", "f16", "q4"] as const) {
    for (const T of [1, 5]) {
      const x = randomArray(T * K, T + 1, 2);
      const g = randomArray(K, 7, 0.5).map((v) => 1 + v);
      const wg = randomArray(I * K, 8, 0.3),
        wu = randomArray(I * K, 9, 0.3),
        wo = randomArray(24 * K, 10, 0.3);
      const step = new Step(gpu, "norm glu");
      const weight = (w: Float32Array, N: number) => {
        if (dtype !== "q4") return Tensor.from(gpu, w, [N, K], "w", dtype);
        const q = new Tensor(gpu, [N, K], "q4", "w");
        quantizeQ8(step, Tensor.from(gpu, w, [N * K], "src"), q, { count: N * K });
        return q;
      };
      const [tg, tu, to] = [weight(wg, I), weight(wu, I), weight(wo, 24)];
      const tx = Tensor.from(gpu, x, [T, K], "x");
      const tnorm = Tensor.from(gpu, g, [K], "g");
      // Fused.
      const hidden = new Tensor(gpu, [T, I], "f32", "hidden");
      matmulGroupsForward(step, tx, [tg, tu], hidden, { norm: { weight: tnorm, eps }, glu: true });
      const out = new Tensor(gpu, [T, 24], "f32", "out");
      matmulForward(step, tx, to, out, { norm: { weight: tnorm, eps } });
      // Separate.
      const xn = new Tensor(gpu, [T, K], "f32", "xn");
      rmsNormForward(step, tx, tnorm, xn, eps);
      const [gate, up, hidden2] = [0, 1, 2].map(() => new Tensor(gpu, [T, I], "f32", "part"));
      matmulForward(step, xn, tg, gate);
      matmulForward(step, xn, tu, up);
      siluMulForward(step, gate, up, hidden2);
      const out2 = new Tensor(gpu, [T, 24], "f32", "out2");
      matmulForward(step, xn, to, out2);
      step.submit();
      const [h1, h2, o1, o2] = await readTensors(gpu, [hidden, hidden2, out, out2]);
      const what = `${dtype} T=${T}`;
      assertClose(h1 as Float32Array, h2 as Float32Array, { atol: 2e-5, rtol: 2e-4 }, `${what}: glu`);
      assertClose(o1 as Float32Array, o2 as Float32Array, { atol: 2e-5, rtol: 2e-4 }, `${what}: norm`);
      if (dtype === "f32") {
        // Plain loops: normalise, then the products.
        const xnRef = new Float32Array(T * K);
        for (let t = 0; t < T; t++) {
          let ss = 0;
          for (let k = 0; k < K; k++) ss += x[t * K + k] ** 2;
          const rs = 1 / Math.sqrt(ss / K + eps);
          for (let k = 0; k < K; k++) xnRef[t * K + k] = x[t * K + k] * rs * g[k];
        }
        const a = matmulReference(xnRef, wg, T, I, K), b = matmulReference(xnRef, wu, T, I, K);
        const h = a.map((v, i) => (v / (1 + Math.exp(-v))) * b[i]);
        assertClose(h1 as Float32Array, h, undefined, `${what}: glu vs CPU`);
        assertClose(
          o1 as Float32Array,
          matmulReference(xnRef, wo, T, 24, K),
          undefined,
          `${what}: norm vs CPU`,
        );
      }
    }
  }
});
