import assert from "node:assert/strict";
import { generateGreedy } from "../../decode/ar.ts";
import { runToEnd } from "../../decode/generation.ts";
import { generateJacobi } from "../../decode/jacobi.ts";
import { generateLookahead } from "../../decode/lookahead.ts";
import { directoryFiles, Llama } from "../../model/mod.ts";
import { gpuTest, testGpu } from "../_gpu.ts";
import { writeTinyModel } from "../_tiny_model.ts";

// The greedy loops submit work past each readback to fill its fixed wait; whatever the cadence (fixed,
// or adaptive: decode/cadence.ts), the tokens, the streamed pieces and the counted forwards must be
// those of the plainest loop.
Deno.test(
  "greedy AR, Jacobi and lookahead give the same result for every readback cadence",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const dir = await Deno.makeTempDir();
    try {
      await writeTinyModel(dir, { numHeads: 4, numKvHeads: 2, vocabSize: 48, scale: 4, seed: 11 });
      const model = await Llama.load(gpu, directoryFiles(dir), { maxLength: 256, maxRows: 16 });
      const prompt = [1, 9, 4, 33, 17];
      const free = (await runToEnd(generateGreedy(model, prompt, { maxNewTokens: 40, eosIds: [] }))).result;
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
        const plain = (await runToEnd(generateGreedy(model, prompt, {
          maxNewTokens: budget,
          eosIds: eos,
          forwardsPerReadback: 1,
          forwardsDuringReadback: 0,
        }))).result;
        assert.equal(plain.stats.readbacks, plain.tokens.length - 1, `${what}: one readback per token`);
        // undefined: the adaptive cadence (the default), learning across these runs.
        const arCadences = [[1, 1], [4, 3], [16, 0], [16, 16], [5, 2], [undefined, undefined], [
          undefined,
          9,
        ]];
        for (const [per, ahead] of arCadences) {
          const { result, streamed } = await runToEnd(generateGreedy(model, prompt, {
            maxNewTokens: budget,
            eosIds: eos,
            forwardsPerReadback: per,
            forwardsDuringReadback: ahead,
          }));
          assert.deepEqual(result.tokens, plain.tokens, `${what}: AR ${per}/${ahead}`);
          assert.deepEqual(streamed, plain.tokens, `${what}: AR ${per}/${ahead} streamed`);
          assert.equal(result.stopReason, plain.stopReason, `${what}: AR ${per}/${ahead} stop`);
          assert.equal(result.stats.forwards, plain.stats.forwards, `${what}: AR ${per}/${ahead} forwards`);
        }
        for (const sliding of [false, true]) {
          const options = { maxNewTokens: budget, eosIds: eos, blockSize: 4, seed: 3, sliding };
          const one = (await runToEnd(generateJacobi(model, prompt, {
            ...options,
            iterationsPerReadback: 1,
            iterationsDuringReadback: 0,
          }))).result;
          assert.deepEqual(one.tokens, plain.tokens, `${what}: Jacobi (sliding ${sliding}) vs AR`);
          for (
            const [per, ahead] of [[1, 2], [3, 5], [8, 0], [8, 2], [undefined, undefined], [undefined, 6]]
          ) {
            const { result, streamed } = await runToEnd(generateJacobi(model, prompt, {
              ...options,
              iterationsPerReadback: per,
              iterationsDuringReadback: ahead,
            }));
            const how = `${what}: Jacobi (sliding ${sliding}) ${per}/${ahead}`;
            assert.deepEqual(result.tokens, plain.tokens, how);
            assert.deepEqual(streamed, plain.tokens, `${how} streamed`);
            assert.equal(result.stats.forwards, one.stats.forwards, `${how} forwards`);
            assert.deepEqual(result.trajectory, one.trajectory, `${how} trajectory`);
          }
        }
        const shape = { maxNewTokens: budget, eosIds: eos, ngram: 3, window: 2, guesses: 2 };
        const lone = (await runToEnd(generateLookahead(model, prompt, {
          ...shape,
          iterationsPerReadback: 1,
          iterationsDuringReadback: 0,
        }))).result;
        assert.deepEqual(lone.tokens, plain.tokens, `${what}: lookahead vs AR`);
        for (const [per, ahead] of [[1, 2], [3, 5], [8, 2], [undefined, undefined]]) {
          const { result, streamed } = await runToEnd(generateLookahead(model, prompt, {
            ...shape,
            iterationsPerReadback: per,
            iterationsDuringReadback: ahead,
          }));
          const how = `${what}: lookahead ${per}/${ahead}`;
          assert.deepEqual(result.tokens, plain.tokens, how);
          assert.deepEqual(streamed, plain.tokens, `${how} streamed`);
          assert.equal(result.stats.forwards, lone.stats.forwards, `${how} forwards`);
          assert.equal(result.stats.acceptedFromPool, lone.stats.acceptedFromPool, `${how} pool`);
        }
      }
      model.destroy();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
