import assert from "node:assert/strict";
import { decode } from "../../decode/decode.ts";
import { type Decoder, decoderLabel } from "../../decode/decoder.ts";
import { runToEnd } from "../../decode/generation.ts";
import { gpuTest, testGpu } from "../_gpu.ts";
import { withPeakedTinyLlama } from "../_tiny_model.ts";
import { RowOracle } from "./_oracle_model.ts";

/** Every decoder, described once: each runs through the same cadence checks. */
const DECODERS: Decoder[] = [
  { kind: "ar" },
  { kind: "jacobi", blockSize: 4 },
  { kind: "jacobi", blockSize: 4, sliding: true },
  { kind: "jacobi", blockSize: 2, blocks: 3 },
  { kind: "jacobi", blockSize: 4, recycle: 2 },
  { kind: "jacobi", blockSize: 2, blocks: 2, recycle: 1, recycleLength: 3 },
  { kind: "jacobi", blockSize: 4, sliding: true, recycle: 2, recycleLength: 2 },
  { kind: "jacobi", blockSize: 4, guessSource: "context" },
  { kind: "lookahead", ngram: 3, window: 2, candidates: 2 },
];

/** [iterations per readback, iterations behind it]; undefined: the adaptive cadence (the default). */
const CADENCES: [number | undefined, number | undefined][] = [
  [1, 2],
  [3, 5],
  [4, 3],
  [8, 0],
  [16, 16],
  [undefined, undefined],
  [undefined, 6],
];

// The GPU-resident loops submit work past each readback to fill its fixed wait; whatever the
// cadence (fixed, or adaptive: decode/cadence.ts), the tokens, the streamed pieces, the counted
// forwards and the decoder's own statistics must be those of its plainest loop (one readback per
// iteration, nothing behind it), and every decoder's tokens those of greedy AR.
Deno.test("every decoder gives the same result for every readback cadence", gpuTest, async () => {
  const gpu = await testGpu();
  // Peaked logits (scale 4) keep top-2 gaps far above f32 summation-order noise.
  await withPeakedTinyLlama(gpu, 11, { maxLength: 256, maxRows: 16 }, async (model) => {
    const prompt = [1, 9, 4, 33, 17];
    const run = (d: Decoder, options: Parameters<typeof decode>[3]) =>
      runToEnd(decode(model, prompt, d, options));
    const free = (await run({ kind: "ar" }, { maxNewTokens: 40 })).result;
    // Budgets that end inside and at the edge of a chunk; an EOS early, mid-way and at the end.
    const cases = [
      { budget: 1, eos: [] },
      { budget: 2, eos: [] },
      { budget: 17, eos: [] },
      { budget: 40, eos: [] },
      { budget: 40, eos: [free.tokens[0]] },
      { budget: 40, eos: [free.tokens[6]] },
      { budget: 40, eos: [free.tokens[39]] },
    ];
    for (const { budget, eos } of cases) {
      const what = `budget ${budget}, EOS ${eos}`;
      let arTokens: number[] | null = null;
      for (const d of DECODERS) {
        const label = decoderLabel(d);
        const options = { maxNewTokens: budget, eosIds: eos, seed: 3 };
        const plain =
          (await run(d, { ...options, iterationsPerReadback: 1, iterationsBehindReadback: 0 })).result;
        assert.equal(plain.stats.decoder, label);
        if (d.kind === "ar") {
          assert.equal(
            plain.stats.readbacks,
            plain.tokens.length - 1,
            `${what}: AR reads back once per token`,
          );
        }
        arTokens ??= plain.tokens;
        assert.deepEqual(plain.tokens, arTokens, `${what}: ${label} vs greedy AR`);
        for (const [per, behind] of CADENCES) {
          const { result, streamed } = await run(d, {
            ...options,
            iterationsPerReadback: per,
            iterationsBehindReadback: behind,
          });
          const how = `${what}: ${label} ${per}/${behind}`;
          assert.deepEqual(result.tokens, plain.tokens, how);
          assert.deepEqual(streamed, plain.tokens, `${how} streamed`);
          assert.equal(result.stopReason, plain.stopReason, `${how} stop`);
          assert.equal(result.stats.forwards, plain.stats.forwards, `${how} forwards`);
          if ("trajectory" in result && "trajectory" in plain) {
            assert.deepEqual(result.trajectory, plain.trajectory, `${how} trajectory`);
          }
          if ("acceptedFromPool" in result.stats && "acceptedFromPool" in plain.stats) {
            assert.equal(result.stats.acceptedFromPool, plain.stats.acceptedFromPool, `${how} pool`);
          }
        }
      }
    }
  });
});

// The oracle model (tests/decode/_oracle_model.ts) knows its text exactly, so every decoder must
// produce that text, stop exactly at the budget and at the first EOS (kept), and never take more
// forwards than tokens (each forward commits at least one). The decoders' own tests count their
// forwards by hand on the same oracle.
Deno.test("every decoder reproduces the oracle model's text, with exact stops", gpuTest, async () => {
  const gpu = await testGpu();
  const prompt = [1, 3, 4, 3, 4];
  // A text that repeats itself, so lookahead's pool and context-copy guesses find something.
  const text = Array.from({ length: 60 }, (_, i) => 10 + (i % 7) + (i % 3));
  const target = [...prompt, ...text];
  const oracle = new RowOracle(gpu, target, 64);
  for (const d of DECODERS) {
    const label = decoderLabel(d);
    for (
      const { budget, eos } of [{ budget: 37, eos: [] }, { budget: 60, eos: [text[23]] }, {
        budget: 1,
        eos: [],
      }]
    ) {
      const what = `${label}, budget ${budget}, EOS ${eos}`;
      const { result, streamed } = await runToEnd(
        decode(oracle, prompt, d, { maxNewTokens: budget, eosIds: eos }),
      );
      const end = eos.length ? Math.min(budget, text.indexOf(eos[0]) + 1) : budget;
      assert.deepEqual(result.tokens, text.slice(0, end), what);
      assert.deepEqual(streamed, result.tokens, `${what}: streamed`);
      assert.equal(result.stopReason, eos.length && end < budget ? "eos" : "length", what);
      assert.ok(
        result.stats.forwards >= 1 && result.stats.forwards <= result.tokens.length,
        `${what}: forwards`,
      );
      if (d.kind === "ar") assert.equal(result.stats.forwards, result.tokens.length, `${what}: AR forwards`);
    }
  }
});
