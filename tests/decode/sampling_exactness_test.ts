import assert from "node:assert/strict";
import { type Decoder, decoderLabel } from "../../decode/decoder.ts";
import { sampleMany } from "../../decode/sample_many.ts";
import type { SamplingOptions } from "../../decode/sampling.ts";
import { samplingDistributionReference, type SamplingParams } from "../../kernels/sample.ts";
import { gpuTest, testGpu } from "../_gpu.ts";
import { gTest } from "../_stats.ts";
import { MarkovModel } from "./_markov_model.ts";

// Sampled decoding is lossless when the first tokens' joint distribution is the model's, whatever
// the decoder. The Markov model (tests/decode/_markov_model.ts) gives the exact distributions, so
// the joint law of the first 3 tokens is a product of known factors over at most V³ = 512
// outcomes. 20,000 seeded generations per decoder; a G-test (cells of expected count < 5 pooled)
// must give p ≥ 0.001. The seeds are fixed, so each result is deterministic: a pass is not luck
// that can change from run to run, and the wrong rule below fails with p far below 1e-6.
const V = 8;
const PERIOD = 3;
// The prompt repeats pairs so that lookahead's pool holds candidates for the first steps.
const PROMPT = [1, 2, 3, 1, 2, 4, 1, 2, 3, 5, 3];
const TOKENS = 3;
const SAMPLES = 20_000;
const PASS_P = 1e-3;

function exactJoint(model: MarkovModel, s: SamplingParams): Map<string, number> {
  const P = PROMPT.length;
  const dist = (pos: number, input: number) => samplingDistributionReference(model.logitsAt(pos, input), s);
  const joint = new Map<string, number>();
  const walk = (pos: number, input: number, prefix: number[], mass: number) => {
    const d = dist(pos, input);
    for (let t = 0; t < V; t++) {
      if (d[t] === 0) continue;
      const seq = [...prefix, t];
      if (seq.length === TOKENS) joint.set(seq.join(","), mass * d[t]);
      else walk(pos + 1, t, seq, mass * d[t]);
    }
  };
  walk(P - 1, PROMPT[P - 1], [], 1);
  return joint;
}

async function fit(model: MarkovModel, decoder: Decoder) {
  const seeds = Array.from({ length: SAMPLES }, (_, i) => i);
  const samples = await sampleMany(model, PROMPT, decoder, { maxNewTokens: TOKENS, seeds, perSubmit: 500 });
  const observed = new Map<string, number>();
  for (const s of samples) {
    assert.equal(s.length, TOKENS);
    const key = s.join(",");
    observed.set(key, (observed.get(key) ?? 0) + 1);
  }
  const s = decoder.sampling!;
  const exact = exactJoint(model, { temperature: s.temperature!, topK: s.topK ?? 0, topP: s.topP ?? 1 });
  return gTest(observed, exact);
}

const PLAIN: SamplingOptions = { temperature: 1 };
const FILTERED: SamplingOptions = { temperature: 0.7, topK: 6, topP: 0.9 };

const CASES: Decoder[] = [
  { kind: "ar", sampling: PLAIN },
  { kind: "ar", sampling: FILTERED },
  { kind: "jacobi", blockSize: 4, sampling: PLAIN },
  { kind: "jacobi", blockSize: 4, sampling: FILTERED },
  { kind: "jacobi", blockSize: 16, sampling: PLAIN },
  { kind: "jacobi", blockSize: 4, sliding: true, sampling: PLAIN },
  { kind: "jacobi", blockSize: 2, blocks: 2, sampling: PLAIN },
  { kind: "jacobi", blockSize: 4, guessSource: "context", sampling: FILTERED },
  { kind: "lookahead", ngram: 3, window: 2, candidates: 3, sampling: PLAIN },
  { kind: "lookahead", ngram: 4, window: 3, candidates: 4, sampling: FILTERED },
];

for (const decoder of CASES) {
  Deno.test(
    `sampled ${decoderLabel(decoder)}: the first ${TOKENS} tokens follow the exact joint law`,
    gpuTest,
    async () => {
      const gpu = await testGpu();
      const model = new MarkovModel(gpu, V, PERIOD, 7);
      const r = await fit(model, decoder);
      console.log(
        `  ${decoderLabel(decoder)}: G = ${r.g.toFixed(1)}, df = ${r.df}, p = ${r.pValue.toPrecision(3)}`,
      );
      assert.equal(r.impossible, 0, "a sample the filtered distribution gives probability 0");
      assert.ok(r.pValue >= PASS_P, `p = ${r.pValue} < ${PASS_P}: not the model's distribution`);
    },
  );
}

Deno.test(
  "the negative control: resampling from p after a rejection fails the same test",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const model = new MarkovModel(gpu, V, PERIOD, 7);
    const wrong = { kind: "jacobi", blockSize: 4, sampling: PLAIN, acceptRule: "resample" } as Decoder;
    const r = await fit(model, wrong);
    console.log(`  wrong rule: G = ${r.g.toFixed(1)}, df = ${r.df}, p = ${r.pValue.toPrecision(3)}`);
    assert.ok(r.pValue < 1e-6, `the wrong rule passed (p = ${r.pValue})`);
  },
);
