import { loadStories } from "../_stories.ts";
import { sharedTest, STORIES_FIXTURE } from "../_fixtures.ts";
import assert from "node:assert/strict";
import { generateGreedy } from "../../decode/ar.ts";
import { type CausalLM, type GenerationResult, runToEnd } from "../../decode/generation.ts";
import { generateLookahead, type LookaheadOptions, type LookaheadResult } from "../../decode/lookahead.ts";
import {
  LOOKAHEAD_SLOTS as S,
  lookaheadAcceptReference,
  lookaheadLayout,
  type LookaheadShape,
  lookaheadStartReference,
  promptPool,
} from "../../kernels/lookahead.ts";
import { gpuTest, testGpu } from "../_gpu.ts";
import { withPeakedTinyLlama } from "../_tiny_model.ts";
import { RowOracle } from "./_oracle_model.ts";

const drain = runToEnd;

/** Runs greedy AR and lookahead, and checks that they agree token for token. */
async function compare(
  model: CausalLM,
  prompt: number[],
  options: LookaheadOptions,
  what: string,
): Promise<{ ar: GenerationResult; la: LookaheadResult }> {
  const { maxNewTokens, eosIds } = options;
  const ar = (await drain(generateGreedy(model, prompt, { maxNewTokens, eosIds }))).result;
  const { result: la, streamed } = await drain(generateLookahead(model, prompt, options));
  const cfg = `N=${options.ngram}, W=${options.window}, G=${options.candidates}`;
  assert.deepEqual(la.tokens, ar.tokens, `${what}: lookahead (${cfg}) differs from greedy AR`);
  assert.deepEqual(streamed, la.tokens, `${what}: streamed pieces differ from the result`);
  assert.equal(la.stopReason, ar.stopReason, `${what}: stop reason`);
  // Every decoding forward commits one token plus the verified candidate tokens.
  assert.equal(la.stats.tokens, la.stats.forwards + la.stats.acceptedFromPool, `${what}: token count`);
  return { ar, la };
}

/**
 * The whole decoder on the CPU for the oracle (row t predicts target[base + rel[t] + 1]), from the
 * kernels' CPU references: the expected tokens and counters of a GPU run.
 */
function simulateOracle(
  target: number[],
  prompt: number[],
  shape: LookaheadShape,
  maxNewTokens: number,
  seed: number,
  vocabSize: number,
): { tokens: number[]; forwards: number; accepted: number; hitSteps: number } {
  const P = prompt.length;
  const predict = (pos: number) => pos + 1 < target.length ? target[pos + 1] : vocabSize - 2; // as the oracle
  const limit = P + maxNewTokens;
  const tokens = new Uint32Array(limit + 64);
  tokens.set(target.slice(0, P + 1)); // the prompt and the prefill's token
  const pool = promptPool(prompt, shape);
  const { st, block } = lookaheadStartReference(Array.from(tokens), pool, shape, P, seed);
  const { relPositions } = lookaheadLayout(shape);
  if (P + 1 < limit) {
    while (!st[S.done]) {
      const base = st[S.base];
      const pred = relPositions.map((r) => predict(base + r));
      lookaheadAcceptReference({ st, tokens, block, pred, pool, eos: [], shape, vocabSize, limit });
    }
  }
  const end = P + 1 < limit ? st[S.end] : limit;
  return {
    tokens: Array.from(tokens.subarray(P, end)),
    forwards: 1 + st[S.forwards],
    accepted: st[S.accepted],
    hitSteps: st[S.hitSteps],
  };
}

Deno.test(
  "oracle model: tokens per forward by hand, and equal to a CPU model of the decoder",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    // A period-2 text: every pool key has one right continuation, seeded from the prompt. With
    // N = 3 (p | N−1), each step's window n-grams are right n-grams too once the window holds only
    // the oracle's outputs, and at most W·(N−1) = 4 partly random n-grams enter the pool before that,
    // so with G = 5 the right one is never evicted: every step commits all N−1 candidate tokens plus
    // the bonus, N = 3 tokens, after the prefill's one.
    const cycle = Array.from({ length: 120 }, (_, i) => (i % 2 === 0 ? 5 : 6));
    const prompt = cycle.slice(0, 5);
    const model = new RowOracle(gpu, cycle, 64);
    const shape = { ngram: 3, window: 2, candidates: 5 };
    for (const [M, forwards] of [[31, 11], [30, 11], [4, 2], [1, 1]]) {
      const { la } = await compare(
        model,
        prompt,
        { maxNewTokens: M, ...shape, iterationsPerReadback: 3 },
        "cycle",
      );
      assert.deepEqual(la.tokens, cycle.slice(5, 5 + M));
      assert.equal(la.stats.forwards, forwards, `M=${M}: 1 + ceil((M−1)/3) forwards`);
      assert.equal(la.stats.acceptedFromPool, M - forwards);
      assert.equal(la.stats.hitSteps, forwards - 1);
    }
    // EOS as the bonus token of the second step: position 11 holds EOS 9.
    const stopping = new RowOracle(gpu, [...cycle.slice(0, 11), 9, ...cycle.slice(12)], 64);
    const { la } = await compare(stopping, prompt, { maxNewTokens: 30, eosIds: [9], ...shape }, "cycle EOS");
    assert.deepEqual(la.tokens, [6, 5, 6, 5, 6, 5, 9]);
    assert.deepEqual([la.stats.forwards, la.stats.acceptedFromPool], [3, 4]);

    // A text that never repeats: the prompt pool is useless, the window must find the n-grams.
    // Compared with the CPU model of the decoder (the kernels' references) for exact counters.
    const rising = [1, 3, 4, 2, ...Array.from({ length: 60 }, (_, i) => 7 + i)];
    const oracle = new RowOracle(gpu, rising, 128);
    for (
      const [shp, M] of [[{ ngram: 3, window: 3, candidates: 2 }, 40], [
        { ngram: 4, window: 5, candidates: 5 },
        37,
      ]] as const
    ) {
      const { la } = await compare(
        oracle,
        rising.slice(0, 4),
        { maxNewTokens: M, ...shp, seed: 3 },
        "rising",
      );
      const sim = simulateOracle(rising, rising.slice(0, 4), { ...shp, guesses: shp.candidates }, M, 3, 128);
      assert.deepEqual(la.tokens, sim.tokens);
      assert.deepEqual(
        [la.stats.forwards, la.stats.acceptedFromPool, la.stats.hitSteps],
        [sim.forwards, sim.accepted, sim.hitSteps],
      );
      // The window's n-grams pay off (28 and 19 forwards for 40 and 37 tokens).
      assert.ok(la.stats.tokensPerForward > 1.4, `tokens per forward ${la.stats.tokensPerForward}`);
    }
  },
);

Deno.test(
  "lookahead equals greedy AR on a tiny random model: (N, W, G), prompt lengths, EOS, budgets",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    // Peaked logits (scale 4) keep top-2 gaps far above f32 summation-order noise.
    await withPeakedTinyLlama(gpu, 7, { maxLength: 256, maxRows: 64 }, async (model) => {
      const shapes = [
        { ngram: 3, window: 1, candidates: 1 },
        { ngram: 3, window: 4, candidates: 3 },
        { ngram: 4, window: 5, candidates: 5 },
        { ngram: 6, window: 3, candidates: 4 },
      ];
      let accepted = 0;
      for (const [i, P] of [1, 5, 17, 40].entries()) {
        const prompt = Array.from({ length: P }, (_, j) => 3 + ((j * 7 + i) % 44));
        const ar = (await drain(generateGreedy(model, prompt, { maxNewTokens: 30, eosIds: [] }))).result;
        for (const [j, shape] of shapes.entries()) {
          const M = 13 + i * 11 + j;
          const { la } = await compare(model, prompt, { maxNewTokens: M, ...shape, seed: i }, `prompt ${P}`);
          accepted += la.stats.acceptedFromPool;
        }
        // EOS mid-way, and a budget that may end inside a step (1 readback per 2 steps).
        const eos = ar.tokens[9];
        const { la } = await compare(
          model,
          prompt,
          { maxNewTokens: 30, eosIds: [eos], ngram: 4, window: 3, candidates: 3, iterationsPerReadback: 2 },
          `prompt ${P} EOS`,
        );
        assert.equal(la.tokens.at(-1), eos);
        assert.equal(la.tokens.indexOf(eos), la.tokens.length - 1);
      }
      // The tiny model repeats itself, so some candidates must have been accepted (moved K/V used).
      assert.ok(accepted > 0, "no candidate token was ever accepted");
      assert.throws(
        () => generateLookahead(model, [1], { maxNewTokens: 4, ngram: 5, window: 20, candidates: 20 }),
        RangeError,
      );
    });
  },
);

sharedTest([STORIES_FIXTURE], "lookahead equals greedy AR on stories260K", gpuTest, async () => {
  const gpu = await testGpu();
  const dir = await Deno.makeTempDir();
  try {
    const p = await loadStories(gpu, dir);
    const prompts = [
      [p.tokenizer.bosId!],
      p.tokenizer.encode("Once upon a time, there was a little dog"),
      p.tokenizer.encode("Tom and his sister went to the park. They saw a big tree.").slice(0, 40),
    ];
    for (const [i, prompt] of prompts.entries()) {
      for (const shape of [{ ngram: 4, window: 5, candidates: 5 }, { ngram: 3, window: 7, candidates: 4 }]) {
        const { la } = await compare(
          p.model,
          prompt,
          { maxNewTokens: 45, eosIds: p.eosIds, ...shape, seed: i },
          `stories prompt ${prompt.length}`,
        );
        assert.ok(la.stats.tokensPerForward >= 1 && la.stats.tokensPerForward <= shape.ngram);
      }
    }
    p.model.destroy();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
