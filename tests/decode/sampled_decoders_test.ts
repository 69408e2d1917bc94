import assert from "node:assert/strict";
import { decode } from "../../decode/decode.ts";
import { type Decoder, decoderLabel } from "../../decode/decoder.ts";
import { runToEnd } from "../../decode/generation.ts";
import { sampleMany } from "../../decode/sample_many.ts";
import { gpuTest, testGpu } from "../_gpu.ts";
import { withPeakedTinyLlama } from "../_tiny_model.ts";
import { MarkovModel } from "./_markov_model.ts";

const SAMPLING = { temperature: 0.9, topP: 0.95 };

const DECODERS: Decoder[] = [
  { kind: "ar", sampling: SAMPLING },
  { kind: "jacobi", blockSize: 4, sampling: SAMPLING },
  { kind: "jacobi", blockSize: 8, sliding: true, sampling: SAMPLING },
  { kind: "jacobi", blockSize: 2, blocks: 3, sampling: SAMPLING },
  { kind: "jacobi", blockSize: 4, guessSource: "context", sampling: SAMPLING },
  { kind: "lookahead", ngram: 3, window: 2, candidates: 2, sampling: SAMPLING },
];

const CADENCES: [number | undefined, number | undefined][] = [[1, 0], [1, 2], [4, 3], [16, 16], [
  undefined,
  undefined,
]];

// Every draw is keyed by (seed, purpose, counter) with counters the GPU keeps, so the readback
// cadence cannot change a sampled text; the seed does. sampleMany's generation for a seed is the
// same as decode's. On a real (tiny) transformer, with an EOS mid-way.
Deno.test(
  "sampled decoders: a seed gives one text on every cadence; sampleMany agrees",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    await withPeakedTinyLlama(gpu, 5, { maxLength: 256, maxRows: 16 }, async (model) => {
      const prompt = [1, 9, 4, 33, 17];
      for (const d of DECODERS) {
        const label = decoderLabel(d);
        assert.match(label, /sampled t=0\.9 top-p=0\.95$/);
        const texts: number[][] = [];
        for (const seed of [1, 2]) {
          const base = { maxNewTokens: 24, seed };
          const plain =
            (await runToEnd(decode(model, prompt, d, { ...base, iterationsPerReadback: 1 }))).result;
          assert.equal(plain.stats.decoder, label);
          texts.push(plain.tokens);
          for (const [per, behind] of CADENCES) {
            const { result, streamed } = await runToEnd(
              decode(model, prompt, d, {
                ...base,
                iterationsPerReadback: per,
                iterationsBehindReadback: behind,
              }),
            );
            assert.deepEqual(result.tokens, plain.tokens, `${label} seed ${seed}, cadence ${per}/${behind}`);
            assert.deepEqual(streamed, plain.tokens, `${label}: streamed`);
            assert.equal(result.stats.forwards, plain.stats.forwards, `${label}: forwards`);
          }
          // An EOS inside the text stops it there, whatever the decoder.
          const eos = plain.tokens[10];
          const stopped = (await runToEnd(decode(model, prompt, d, { ...base, eosIds: [eos] }))).result;
          assert.deepEqual(
            stopped.tokens,
            plain.tokens.slice(0, plain.tokens.indexOf(eos) + 1),
            `${label}: EOS`,
          );
        }
        assert.notDeepEqual(texts[0], texts[1], `${label}: two seeds gave one text`);
        const many = await sampleMany(model, prompt, d, { maxNewTokens: 24, seeds: [1, 2] });
        assert.deepEqual(many, texts, `${label}: sampleMany vs decode`);
      }
    });
  },
);

// The statistical test (sampling_exactness_test.ts) shows the law is right; this shows the
// decoders are not AR in disguise: on the Markov model, sampled Jacobi and lookahead commit more
// than one token per forward on average, and lookahead accepts pool candidates.
Deno.test(
  "sampled Jacobi and lookahead accept guesses (more than one token per forward)",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const model = new MarkovModel(gpu, 8, 3, 7, 3);
    const prompt = [1, 2, 3, 1, 2, 4, 1, 2, 3, 5, 3];
    for (const d of DECODERS.slice(1)) {
      let tokens = 0;
      let forwards = 0;
      let fromPool = 0;
      for (let seed = 0; seed < 12; seed++) {
        const { result } = await runToEnd(decode(model, prompt, { ...d, sampling: { temperature: 0.5 } }, {
          maxNewTokens: 40,
          seed,
        }));
        tokens += result.tokens.length;
        forwards += result.stats.forwards;
        if ("acceptedFromPool" in result.stats) fromPool += result.stats.acceptedFromPool;
      }
      assert.ok(tokens / forwards > 1.1, `${decoderLabel(d)}: ${tokens / forwards} tokens per forward`);
      if (d.kind === "lookahead") assert.ok(fromPool > 0, "lookahead accepted no pool candidate");
    }
  },
);

Deno.test("bad sampling settings are clear errors", gpuTest, async () => {
  const gpu = await testGpu();
  const model = new MarkovModel(gpu, 8, 3, 7);
  const bad: [object, RegExp][] = [
    [{ temperature: -0.5 }, /temperature must be a finite number ≥ 0/],
    [{ temperature: 1, topP: 0 }, /top-p must be in \(0, 1\]/],
    [{ temperature: 1, topP: 1.5 }, /top-p must be in \(0, 1\]/],
    [{ temperature: 1, topK: 0 }, /top-k must be an integer ≥ 1/],
    [{ temperature: 1, topK: 2.5 }, /top-k must be an integer ≥ 1/],
  ];
  for (const [sampling, message] of bad) {
    for (const kind of ["ar", "jacobi", "lookahead"] as const) {
      await assert.rejects(
        async () => await runToEnd(decode(model, [1, 2], { kind, sampling } as Decoder, { maxNewTokens: 4 })),
        message,
      );
    }
  }
});
