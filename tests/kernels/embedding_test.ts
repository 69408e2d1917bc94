import assert from "node:assert/strict";
import { f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, readTensors, Step, Tensor } from "../../core/mod.ts";
import { embeddingForward, embeddingReference } from "../../kernels/embedding.ts";
import { assertClose, randomArray, rng } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

// A gather copies values: the result must be exact (atol = rtol = 0).
const EXACT = { atol: 0, rtol: 0 };

function randomTokens(n: number, V: number, seed: number): Uint32Array {
  const r = rng(seed);
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(r() * V);
  return out;
}

Deno.test(
  "embedding gathers rows at token offsets; out-of-vocabulary ids give zero rows",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const cases = [
      { V: 1, C: 1, T: 1, offset: 0 },
      { V: 50, C: 7, T: 16, offset: 3 },
      { V: 300, C: 64, T: 64, offset: 0 },
      { V: 33, C: 130, T: 5, offset: 11 },
    ];
    const step = new Step(gpu, "embedding");
    const runs = cases.map((c, i) => {
      const table = randomArray(c.V * c.C, 10 + i);
      const tokens = randomTokens(c.offset + c.T + 2, c.V, 20 + i);
      tokens[c.offset + c.T - 1] = c.V; // just past the vocabulary
      if (c.T > 2) tokens[c.offset + 1] = 0xffffffff;
      const out = new Tensor(gpu, [c.T, c.C], "f32", `out${i}`);
      const tTable = Tensor.from(gpu, table, [c.V, c.C], `table${i}`);
      const tTokens = Tensor.from(gpu, tokens, [tokens.length], `tokens${i}`);
      embeddingForward(step, tTable, tTokens, out, { tokenOffset: c.offset });
      return { c, table, tokens, out };
    });
    // rows < T: only the first rows are written; the rest keep their previous values.
    const table = randomArray(10 * 4, 99);
    const partial = Tensor.from(gpu, new Float32Array(8 * 4).fill(5), [8, 4], "partial");
    const tokens = new Uint32Array([9, 8, 7, 6, 5, 4, 3, 2]);
    embeddingForward(
      step,
      Tensor.from(gpu, table, [10, 4], "t"),
      Tensor.from(gpu, tokens, [8], "ids"),
      partial,
      {
        tokenOffset: 2,
        rows: 3,
      },
    );
    step.submit();
    const results = await readTensors(gpu, [...runs.map((r) => r.out), partial]);
    runs.forEach(({ c, table, tokens }, i) => {
      assertClose(
        results[i],
        embeddingReference(table, c.C, tokens, c.offset, c.T),
        EXACT,
        `embedding ${JSON.stringify(c)}`,
      );
    });
    const expected = new Float32Array(8 * 4).fill(5);
    expected.set(embeddingReference(table, 4, tokens, 2, 3));
    assertClose(results[runs.length], expected, EXACT, "rows = 3 of 8");
  },
);

/** Values rounded to a 16-bit format and back (what a table of that dtype holds). */
function rounded16(values: Float32Array, dtype: "f16" | "bf16"): Float32Array {
  if (dtype === "f16") return values.map((x) => f16BitsToF32(f32ToF16Bits(x)));
  return new Float32Array(Uint32Array.from(values, (x) => f32ToBf16Bits(x) << 16).buffer);
}

Deno.test(
  "embedding reads f16 and bf16 tables (bf16 as packed words), rows of any width",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const tokens = new Uint32Array([19, 0, 7, 7, 25, 3]);
    const T = tokens.length, V = 20;
    // Adapters without shader-f16 keep f32 tables; bf16 needs no feature.
    const dtypes = gpu.features.f16 ? ["f16", "bf16"] as const : ["bf16"] as const;
    for (const dtype of dtypes) {
      for (const C of [9, 12]) {
        const table = randomArray(V * C, 6 + C, 3);
        const out = new Tensor(gpu, [T, C], "f32", "out");
        const step = new Step(gpu, `embedding ${dtype}`);
        embeddingForward(
          step,
          Tensor.from(gpu, table, [V, C], `table ${dtype}`, dtype),
          Tensor.from(gpu, tokens, [T], "ids"),
          out,
        );
        step.submit();
        const [result] = await readTensors(gpu, [out]);
        // The reference reads the same rounded values, so the gather is exact.
        const expected = embeddingReference(rounded16(table, dtype), C, tokens, 0, T);
        assertClose(result, expected, EXACT, `${dtype} table, C=${C}`);
      }
    }
  },
);

Deno.test("embedding checks its arguments on the host", gpuTest, async () => {
  const gpu = await testGpu();
  const table = new Tensor(gpu, [10, 4], "f32", "table");
  const out = new Tensor(gpu, [2, 4], "f32", "out");
  const ids = new Tensor(gpu, [2], "u32", "ids");
  const step = new Step(gpu, "bad embedding");
  assert.throws(() => embeddingForward(step, table, new Tensor(gpu, [2], "f32", "f"), out), TypeError);
  assert.throws(() => embeddingForward(step, table, ids, out, { tokenOffset: 1 }), RangeError);
  assert.throws(() => embeddingForward(step, table, ids, new Tensor(gpu, [2, 5], "f32", "wide")), RangeError);
  step.submit();
});
