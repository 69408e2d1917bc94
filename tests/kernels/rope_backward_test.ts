import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { ropeForward, ropeReference } from "../../kernels/rope.ts";
import { ropeBackward, ropeBackwardReference } from "../../kernels/rope_backward.ts";
import { assertClose, randomArray } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";
import { dot, numericGradient, quantisedArray } from "./_backward_fd.ts";

interface Case {
  T: number;
  H: number;
  D: number;
  /** Index of the base position in the state tensor. */
  slot: number;
  theta: number;
  scale: number;
}

const BASES = [0, 5, 1000, 40000];

Deno.test("ropeBackward matches the CPU reference and undoes ropeForward", gpuTest, async () => {
  const gpu = await testGpu();
  const state = Tensor.from(gpu, new Uint32Array(BASES), [BASES.length], "state");
  // T = 1 and 16..64; pair counts T·H·D/2 that are not multiples of 64; large positions.
  const cases: Case[] = [
    { T: 1, H: 1, D: 2, slot: 0, theta: 10000, scale: 1 },
    { T: 16, H: 3, D: 10, slot: 1, theta: 10000, scale: 1 },
    { T: 64, H: 4, D: 64, slot: 2, theta: 500000, scale: 1 },
    { T: 17, H: 2, D: 32, slot: 3, theta: 10000, scale: 4 },
  ];
  const step = new Step(gpu, "rope backward");
  const runs = cases.map((c, k) => {
    const n = c.T * c.H * c.D;
    const dOut = randomArray(n, 10 + k);
    const x = randomArray(n, 20 + k);
    const opts = { baseSlot: c.slot, theta: c.theta, scale: c.scale, rows: c.T, heads: c.H, headDim: c.D };
    const tDx = Tensor.from(gpu, randomArray(n, 30 + k), [c.T, c.H, c.D], `dx ${k}`); // overwritten
    ropeBackward(step, Tensor.from(gpu, dOut, [c.T, c.H, c.D], `dOut ${k}`), tDx, state, opts);
    // Rᵀ·R = I: the backward applied to the forward's output gives back x, if and only if both use
    // the same positions, frequencies and sign convention.
    const tRot = new Tensor(gpu, [c.T, c.H, c.D], "f32", `rotated ${k}`);
    const tBack = new Tensor(gpu, [c.T, c.H, c.D], "f32", `round trip ${k}`);
    ropeForward(step, Tensor.from(gpu, x, [c.T, c.H, c.D], `x ${k}`), tRot, state, opts);
    ropeBackward(step, tRot, tBack, state, opts);
    const expected = ropeBackwardReference(dOut, { ...opts, base: BASES[c.slot] });
    return { c, x, expected, tDx, tBack };
  });
  const opts0 = { baseSlot: 0, theta: 10000, heads: 1, headDim: 2 };
  assert.throws(() => ropeBackward(step, runs[0].tDx, runs[0].tDx, state, opts0), /different tensor/);
  step.submit();
  const results = await readTensors(gpu, runs.flatMap((r) => [r.tDx, r.tBack]));
  runs.forEach((r, k) => {
    const what = `T=${r.c.T} H=${r.c.H} D=${r.c.D} base=${BASES[r.c.slot]}`;
    // The kernel's angle is good to a few 1e-7 rad at positions < 2^16 (rope.ts), and |dOut| < 1.
    assertClose(results[2 * k], r.expected, { atol: 2e-6, rtol: 1e-5 }, `dx ${what}`);
    // Two f32 rotations by the same f32 angle: a few ulps of |x| < 1.
    assertClose(results[2 * k + 1], r.x, { atol: 1e-6, rtol: 0 }, `backward(forward(x)) ${what}`);
  });
});

Deno.test("ropeBackwardReference matches finite differences of ropeReference", () => {
  for (const [T, H, D, base, scale] of [[3, 2, 6, 0, 1], [2, 1, 8, 37, 2]]) {
    const options = { heads: H, headDim: D, theta: 10000, scale, base };
    const x = quantisedArray(T * H * D, D, 1); // x ± 2^-2 stays exact in f32
    const r = randomArray(T * H * D, 2 * D); // upstream gradient dOut
    // L(x) = Σ r·rope(x) is linear, so the central difference is exact up to the forward's f32
    // output rounding: two outputs change per input, (2·6e-8)/(2·2^-3) ≈ 5e-7 at most.
    const f = (v: Float64Array) => dot(r, ropeReference(Float32Array.from(v), options));
    assertClose(
      ropeBackwardReference(r, options),
      numericGradient(f, x, 2 ** -2),
      { atol: 1e-6, rtol: 1e-6 },
      `dx T=${T} H=${H} D=${D} base=${base}`,
    );
  }
});

Deno.test(
  "ropeBackward with per-row positions matches the CPU reference and undoes ropeForward",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const state = Tensor.from(gpu, new Uint32Array([3]), [1], "state");
    // Packed-sequence positions (train/jacobi_forcing.ts): a prompt, then two copies of each block.
    const T = 12, H = 2, D = 8;
    const rel = new Uint32Array([0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 300, 7]);
    const opts = { baseSlot: 0, theta: 10000, rows: T, heads: H, headDim: D };
    const step = new Step(gpu, "rope backward rel");
    const dOut = randomArray(T * H * D, 70);
    const x = randomArray(T * H * D, 71);
    const relT = Tensor.from(gpu, rel, [T], "rel");
    const dx = new Tensor(gpu, [T, H, D], "f32", "dx");
    const rot = new Tensor(gpu, [T, H, D], "f32", "rot");
    const back = new Tensor(gpu, [T, H, D], "f32", "back");
    ropeBackward(step, Tensor.from(gpu, dOut, [T, H, D], "dOut"), dx, state, { ...opts, relPositions: relT });
    ropeForward(step, Tensor.from(gpu, x, [T, H, D], "x"), rot, state, { ...opts, relPositions: relT });
    ropeBackward(step, rot, back, state, { ...opts, relPositions: relT });
    step.submit();
    const [gotDx, gotBack] = await readTensors(gpu, [dx, back]);
    const expected = ropeBackwardReference(dOut, {
      heads: H,
      headDim: D,
      theta: 10000,
      base: 3,
      relPositions: rel,
    });
    assertClose(gotDx, expected, { atol: 2e-6, rtol: 1e-5 }, "dx with relPositions");
    assertClose(gotBack, x, { atol: 1e-6, rtol: 0 }, "backward(forward(x)) with relPositions");
    // The positions matter: without them the gradient differs.
    const plain = ropeBackwardReference(dOut, { heads: H, headDim: D, theta: 10000, base: 3 });
    assert.ok(plain.some((v, i) => Math.abs(v - expected[i]) > 1e-3));
  },
);
