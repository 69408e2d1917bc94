import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { embeddingReference } from "../../kernels/embedding.ts";
import { embeddingBackward, embeddingBackwardReference } from "../../kernels/embedding_backward.ts";
import { assertClose, randomArray, rng } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";
import { dot, numericGradient } from "./_backward_fd.ts";

/** Token ids in [0, V) with many repeats, plus a few out-of-vocabulary ids (V + 3, 0xFFFFFFFF). */
function tokenIds(n: number, V: number, seed: number, repeatsFrom: number): Uint32Array {
  const r = rng(seed);
  const ids = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const u = r();
    // Draw from a small pool so tokens repeat; sprinkle ids the backward must skip.
    ids[i] = u < 0.05 ? V + 3 : u < 0.1 ? 0xffffffff : Math.floor(r() * Math.min(V, repeatsFrom));
  }
  return ids;
}

interface Case {
  V: number;
  C: number;
  T: number;
  tokenOffset: number;
  /** Record the same backward twice (it must add twice). */
  twice?: boolean;
}

Deno.test("embeddingBackward matches the CPU reference, repeated tokens summed", gpuTest, async () => {
  const gpu = await testGpu();
  // C not a multiple of the workgroup (5, 70, 300), T = 1 and 16..64, a token offset, repeats.
  const cases: Case[] = [
    { V: 10, C: 5, T: 1, tokenOffset: 0 },
    { V: 7, C: 70, T: 16, tokenOffset: 2 },
    { V: 50, C: 64, T: 64, tokenOffset: 0 },
    { V: 300, C: 300, T: 40, tokenOffset: 5, twice: true },
    { V: 33, C: 129, T: 17, tokenOffset: 1 },
  ];
  const step = new Step(gpu, "embedding backward");
  const runs = cases.map((c, k) => {
    const tokens = tokenIds(c.tokenOffset + c.T + 3, c.V, 100 + k, 6);
    const dOut = randomArray(c.T * c.C, 200 + k);
    const dTable0 = randomArray(c.V * c.C, 300 + k); // accumulated into
    const tTokens = Tensor.from(gpu, tokens, [tokens.length], `tokens ${k}`);
    const tOut = Tensor.from(gpu, dOut, [c.T, c.C], `dOut ${k}`);
    const tTable = Tensor.from(gpu, dTable0, [c.V, c.C], `dTable ${k}`);
    // A second table receiving the same work: the result must be bitwise identical (deterministic).
    const tTable2 = Tensor.from(gpu, dTable0, [c.V, c.C], `dTable2 ${k}`);
    for (const table of [tTable, tTable2]) {
      embeddingBackward(step, tTokens, tOut, table, { tokenOffset: c.tokenOffset, rows: c.T });
      if (c.twice) embeddingBackward(step, tTokens, tOut, table, { tokenOffset: c.tokenOffset, rows: c.T });
    }
    let expected = embeddingBackwardReference(tokens, dOut, dTable0, c.C, { tokenOffset: c.tokenOffset });
    if (c.twice) {
      expected = embeddingBackwardReference(tokens, dOut, expected, c.C, { tokenOffset: c.tokenOffset });
    }
    return { c, expected, tTokens, tTable, tTable2 };
  });
  const r0 = runs[0];
  assert.throws(
    () => embeddingBackward(step, r0.tTokens, r0.tTable, r0.tTable, { rows: 1 }),
    /must be a tensor of its own/,
  );
  step.submit();
  const results = await readTensors(gpu, runs.flatMap((r) => [r.tTable, r.tTable2]));
  runs.forEach((r, k) => {
    const what = `dTable V=${r.c.V} C=${r.c.C} T=${r.c.T}`;
    // f32 sums of ≤ 2·64 values in [-1, 1) in row order against f64: errors ~1e-6 at most.
    assertClose(results[2 * k], r.expected, { atol: 1e-5, rtol: 1e-4 }, what);
    assertClose(results[2 * k + 1], results[2 * k], { atol: 0, rtol: 0 }, `${what}, deterministic`);
  });
});

Deno.test("embeddingBackwardReference matches finite differences of embeddingReference", () => {
  const V = 6, C = 3, T = 9, tokenOffset = 1;
  const tokens = new Uint32Array([4, 2, 2, 5, 0, 2, 9, 5, 1, 0xffffffff, 3]); // repeats and ids ≥ V
  const table = randomArray(V * C, 1);
  const r = randomArray(T * C, 2); // upstream gradient dOut
  // L(table) = Σ r·embedding(table); the forward is linear in the table, so the central difference
  // is exact up to rounding (each output is one f32 table entry, x ± 0.5 is exact for |x| < 1).
  const f = (x: Float64Array) => dot(r, embeddingReference(Float32Array.from(x), C, tokens, tokenOffset, T));
  const numeric = numericGradient(f, table, 0.5);
  const analytic = embeddingBackwardReference(tokens, r, new Float32Array(V * C), C, {
    tokenOffset,
    rows: T,
  });
  // Both are the same f64 sums of f32 values, rounded once: equal to ~1e-7.
  assertClose(analytic, numeric, { atol: 1e-7, rtol: 1e-6 }, "dTable");
});
