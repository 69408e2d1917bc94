import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { matmulForward, matmulGroupsForward, matmulReference } from "../../kernels/matmul.ts";
import { quantizeQ8 } from "../../kernels/quantize.ts";
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
  for (const dtype of ["f32", "f16", "q4"] as const) {
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
          for (let t = 0; t < T; t++) step.copy(part, t * Ns[g] * 4, want, (t * total + first) * 4, Ns[g] * 4);
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
        for (let t = 0; t < f.T; t++) expected.set(part.subarray(t * f.Ns[g], (t + 1) * f.Ns[g]), t * total + first);
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
  assert.throws(() => matmulGroupsForward(step, x, [a], new Tensor(gpu, [2, 4], "f32", "y")), /2 or 3 weights/);
  assert.throws(
    () => matmulGroupsForward(step, x, [a, new Tensor(gpu, [4, 6], "f32", "b")], new Tensor(gpu, [2, 8], "f32", "y")),
    /every weight must be/,
  );
  assert.throws(() => matmulGroupsForward(step, x, [a, a], new Tensor(gpu, [2, 5], "f32", "y")), /need f32 y/);
  step.abandon();
});
