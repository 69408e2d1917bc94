import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { convertFloats, convertReference, type StoredFloat } from "../../kernels/convert.ts";
import { f16ToF32, f32ToBf16, f32ToF16 } from "../../model/safetensors.ts";
import { rng } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

/** Values over f16's range and below it (subnormals), both signs, zeros and a few exact ties. */
function values(n: number, seed: number): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const kind = i % 7;
    const mag = kind === 0 ? r() * 1e-6 : kind === 1 ? r() * 60000 : kind === 2 ? 0 : (r() - 0.5) * 8;
    out[i] = (r() < 0.5 ? -1 : 1) * mag;
  }
  // Exact f16 ties: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
  if (n > 3) [out[0], out[1], out[2]] = [1 + 2 ** -11, 1 + 3 * 2 ** -11, -(2 + 2 ** -10)];
  return out;
}

/** The stored words of `v` in `format`, padded to whole u32 words. */
function stored(
  v: Float32Array,
  format: StoredFloat,
): { words: Uint32Array; elements: Float32Array | Uint16Array } {
  if (format === "f32") return { words: new Uint32Array(v.slice().buffer), elements: v };
  const half = format === "f16" ? f32ToF16(v) : f32ToBf16(v);
  const padded = new Uint16Array(half.length + (half.length & 1));
  padded.set(half);
  return { words: new Uint32Array(padded.buffer), elements: half };
}

Deno.test(
  "convertFloats: bf16, f16 and f32 words to f32 and f16 tensors, bit for bit, at offsets",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const step = new Step(gpu, "convert");
    // readTensors hands f16 tensors back as f32 values; f16 → f32 is exact, so comparing the f32 bit
    // patterns of the values compares the f16 bits.
    const cases: { what: string; out: Tensor; expect: Float32Array; at: number }[] = [];
    for (const from of ["bf16", "f16", "f32"] as const) {
      for (const to of ["f32", "f16", "bf16"] as const) {
        // Misaligned (scalar form), and aligned with and without a tail (vector form + scalar tail).
        for (
          const [n, srcWord, dstElement] of [
            [1, 0, 0],
            [37, 3, 2],
            [1000, 0, 6],
            [4097, 5, 0],
            [4099, 0, 0],
            [1030, 4, 8],
            [4096, 8, 16],
          ]
        ) {
          const { words, elements } = stored(values(n, n + srcWord), from);
          const src = new Tensor(gpu, [srcWord + words.length], "u32", `src ${from} ${n}`);
          src.write(words, srcWord);
          const out = new Tensor(gpu, [dstElement + n + 2], to, `dst ${to} ${n}`);
          convertFloats(step, src, out, { from, count: n, srcWord, dstElement });
          const ref = convertReference(elements, from, to);
          const expect = to === "f32"
            ? ref as Float32Array
            : to === "f16"
            ? f16ToF32(ref as Uint16Array)
            : new Float32Array(Uint32Array.from(ref as Uint16Array, (b) => b << 16).buffer);
          cases.push({
            what: `${from} → ${to}, ${n} values at ${srcWord}/${dstElement}`,
            out,
            expect,
            at: dstElement,
          });
        }
      }
    }
    step.submit();
    const results = await readTensors(gpu, cases.map((c) => c.out));
    cases.forEach((c, k) => {
      const got = new Uint32Array(
        Float32Array.from(results[k].subarray(c.at, c.at + c.expect.length)).buffer,
      );
      // Nothing outside the range is written (an f16/bf16 range of odd length fills its word's pad).
      const outside = [...results[k].subarray(0, c.at), ...results[k].subarray(c.at + c.expect.length + 1)];
      assert.ok(outside.every((x) => x === 0), `${c.what}: wrote outside its range`);
      const want = new Uint32Array(c.expect.slice().buffer);
      const bad = want.findIndex((w, i) => w !== got[i]);
      assert.equal(
        bad,
        -1,
        `${c.what}: value ${bad} has bits ${got[bad]?.toString(16)}, expected ${want[bad]?.toString(16)}`,
      );
    });
  },
);

Deno.test("convertFloats checks its arguments on the host", gpuTest, async () => {
  const gpu = await testGpu();
  const src = new Tensor(gpu, [4], "u32", "src");
  const f16 = new Tensor(gpu, [8], "f16", "f16");
  const u32 = new Tensor(gpu, [8], "u32", "u32");
  // Each check throws before anything is recorded; the caller abandons the step.
  const bad = (fn: (step: Step) => void, pattern: RegExp) => {
    const step = new Step(gpu, "bad convert");
    assert.throws(() => fn(step), pattern);
    step.abandon();
  };
  bad((step) => convertFloats(step, src, u32, { from: "f32", count: 4 }), /must be f32, f16 or bf16/);
  bad((step) => convertFloats(step, src, f16, { from: "f16", count: 2, dstElement: 1 }), /even element/);
  bad((step) => convertFloats(step, src, f16, { from: "f32", count: 9 }), /overrun/);
});
