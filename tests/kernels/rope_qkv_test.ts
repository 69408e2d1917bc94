import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { ropeForward } from "../../kernels/rope.ts";
import { ropeQkvForward, ropeQkvReference } from "../../kernels/rope_qkv.ts";
import { storeRowsForward } from "../../kernels/store_rows.ts";
import { assertClose, randomArray } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

// The fused RoPE + KV store against plain loops, and bit for bit against the three kernels it
// replaces (rope q, rope k into the cache, store v), with and without per-row positions, GQA, and
// rows that run past the cache's end (dropped).
Deno.test("rope_qkv equals the CPU reference and the three separate kernels", gpuTest, async () => {
  const gpu = await testGpu();
  for (
    const [H, KVH, D, T, S, base, rel] of [
      [4, 2, 8, 5, 32, 7, false],
      [2, 2, 16, 1, 16, 3, false],
      [4, 1, 8, 6, 40, 11, true],
      [2, 1, 4, 4, 10, 8, false], // rows 2 and 3 fall past the 10-row cache
    ] as const
  ) {
    const width = (H + 2 * KVH) * D;
    const qkv = randomArray(T * width, H * 100 + T, 1);
    const relPositions = rel ? Uint32Array.from({ length: T }, (_, t) => [0, 1, 1, 2, 3, 2][t]) : undefined;
    const state = Tensor.from(gpu, new Uint32Array([0, base]), [2], "state");
    const tq = Tensor.from(gpu, qkv, [T, width], "qkv");
    const relT = relPositions ? Tensor.from(gpu, relPositions, [T], "rel") : undefined;
    const make = (shape: number[], label: string) =>
      Tensor.from(gpu, new Float32Array(shape.reduce((a, b) => a * b)), shape, label);
    const [qr, kc, vc] = [make([T, H, D], "qr"), make([S, KVH, D], "kc"), make([S, KVH, D], "vc")];
    const [qr2, kc2, vc2] = [make([T, H, D], "qr2"), make([S, KVH, D], "kc2"), make([S, KVH, D], "vc2")];
    const step = new Step(gpu, "rope_qkv");
    const o = { rows: T, heads: H, kvHeads: KVH, headDim: D, baseSlot: 1, theta: 10000, relPositions: relT };
    ropeQkvForward(step, tq, qr, kc, vc, state, o);
    // The separate kernels, on q, k, v copied out of qkv.
    const parts = [make([T, H * D], "q"), make([T, KVH * D], "k"), make([T, KVH * D], "v")];
    const widths = [H * D, KVH * D, KVH * D];
    let first = 0;
    parts.forEach((p, i) => {
      for (let t = 0; t < T; t++) step.copy(tq, (t * width + first) * 4, p, t * widths[i] * 4, widths[i] * 4);
      first += widths[i];
    });
    const rope = { baseSlot: 1, theta: 10000, rows: T, headDim: D, relPositions: relT };
    ropeForward(step, parts[0], qr2, state, { ...rope, heads: H });
    ropeForward(step, parts[1], kc2, state, { ...rope, heads: KVH, toCache: true });
    storeRowsForward(step, parts[2], vc2, state, { baseSlot: 1, rows: T });
    step.submit();
    const [gq, gk, gv, sq, sk, sv] = await readTensors(gpu, [qr, kc, vc, qr2, kc2, vc2]);
    const what = `H=${H} KVH=${KVH} D=${D} T=${T}${rel ? " rel" : ""}`;
    assert.deepEqual(gq, sq, `${what}: q vs the rope kernel`);
    assert.deepEqual(gk, sk, `${what}: k cache vs the rope kernel`);
    assert.deepEqual(gv, sv, `${what}: v cache vs store_rows`);
    const ref = ropeQkvReference(qkv, {
      heads: H,
      kvHeads: KVH,
      headDim: D,
      theta: 10000,
      base,
      relPositions,
    });
    assertClose(gq as Float32Array, ref.q, undefined, `${what}: q vs CPU`);
    const rows = Math.max(0, Math.min(T, S - base));
    const row = KVH * D;
    assertClose(
      (gk as Float32Array).subarray(base * row, (base + rows) * row),
      ref.k.subarray(0, rows * row),
      undefined,
      `${what}: k vs CPU`,
    );
    assert.deepEqual(
      Array.from((gv as Float32Array).subarray(base * row, (base + rows) * row)),
      Array.from(ref.v.subarray(0, rows * row)),
    );
    // Nothing outside the written cache rows changed.
    assert.ok(
      (gk as Float32Array).subarray(0, base * row).every((x) => x === 0),
      `${what}: rows before base`,
    );
  }
});
