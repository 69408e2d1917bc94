import { loadStories } from "../_stories.ts";
import { decoderLabel } from "../../decode/decoder.ts";
import { sharedTest, STORIES_FIXTURE } from "../_fixtures.ts";
import assert from "node:assert/strict";
import { generateGreedy } from "../../decode/ar.ts";
import { type CausalLM, type GenerationResult, runToEnd } from "../../decode/generation.ts";
import { generateJacobi, type JacobiResult } from "../../decode/jacobi.ts";
import { gpuTest, testGpu } from "../_gpu.ts";
import { withPeakedTinyLlama } from "../_tiny_model.ts";
import { OracleModel } from "./_oracle_model.ts";
import { fillGuessesReference } from "../../kernels/jacobi_accept.ts";

const drain = runToEnd;

async function compare(
  model: CausalLM,
  prompt: number[],
  blockSize: number,
  maxNewTokens: number,
  eosIds: number[],
  what: string,
  sliding = false,
  guesses: "random" | "context" = "random",
): Promise<{ ar: GenerationResult; jacobi: JacobiResult }> {
  const ar = (await drain(generateGreedy(model, prompt, { maxNewTokens, eosIds }))).result;
  const { result: jacobi, streamed } = await drain(
    generateJacobi(model, prompt, {
      maxNewTokens,
      eosIds,
      blockSize,
      seed: prompt.length,
      sliding,
      guessSource: guesses,
    }),
  );
  assert.deepEqual(jacobi.tokens, ar.tokens, `${what}: Jacobi (n=${blockSize}) differs from greedy AR`);
  assert.equal(
    jacobi.stats.decoder,
    decoderLabel({ kind: "jacobi", blockSize, sliding, guessSource: guesses }),
  );
  assert.deepEqual(streamed, jacobi.tokens, `${what}: streamed pieces differ from the result`);
  assert.ok(jacobi.tokens.length <= maxNewTokens);
  return { ar, jacobi };
}

Deno.test(
  "oracle model: accepted tokens per forward, fast-forward and stationary counts by hand",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const prompt = [1, 3, 4];
    const target = [...prompt, ...Array.from({ length: 40 }, (_, i) => 10 + i)];
    // No blind spot: every block takes 2 forwards (guesses are never right), 12 tokens in 3 blocks,
    // plus prefill: 7 forwards.
    const plain = new OracleModel(gpu, target, 64);
    let r = await compare(plain, prompt, 4, 12, [], "oracle");
    assert.deepEqual(r.jacobi.tokens, target.slice(3, 15));
    assert.equal(r.jacobi.stats.forwards, 7);
    assert.equal(r.jacobi.stats.tokensPerForward, 12 / 7);
    assert.equal(r.jacobi.stats.fastForward, 4);
    assert.equal(r.jacobi.stats.stationary, 0);
    assert.equal(r.jacobi.trajectory.length, 3);
    // Budget mid-block: 10 tokens, the third block stops after its second forward.
    r = await compare(plain, prompt, 4, 10, [], "oracle mid-block");
    assert.equal(r.jacobi.stats.forwards, 7);
    assert.equal(r.jacobi.tokens.length, 10);
    // EOS inside block 1 (token 16 at its third slot): nothing after it.
    r = await compare(plain, prompt, 4, 12, [16], "oracle EOS");
    assert.deepEqual(r.jacobi.tokens, [10, 11, 12, 13, 14, 15, 16]);
    assert.equal(r.jacobi.stopReason, "eos");
    assert.equal(r.jacobi.stats.forwards, 5);
    // Blind at position 4: block 0 needs 3 forwards, states [10 g g g], [10 11 W 13], [10 11 12 13]:
    // FF (2 + 2) / 2 = 2, and position 3 (token 13) is stationary.
    const blind = new OracleModel(gpu, target, 64, 4);
    r = await compare(blind, prompt, 4, 12, [], "blind oracle");
    assert.deepEqual(r.jacobi.trajectory[0].states.slice(1), [[10, 11, 63, 13], [10, 11, 12, 13]]);
    assert.equal(r.jacobi.stats.forwards, 8);
    assert.equal(r.jacobi.stats.tokensPerForward, 1.5);
    assert.equal(r.jacobi.stats.fastForward, 10 / 3);
    assert.equal(r.jacobi.stats.stationary, 1);
  },
);

Deno.test(
  "Jacobi equals greedy AR on tiny random models: block sizes, prompt lengths, EOS, budgets",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    // Peaked logits (scale 4) keep top-2 gaps far above f32 summation-order noise.
    await withPeakedTinyLlama(gpu, 7, { maxLength: 256, maxRows: 32 }, async (model) => {
      const blockSizes = [1, 2, 3, 8, 16, 32];
      for (const [i, P] of [1, 5, 17, 40].entries()) {
        const prompt = Array.from({ length: P }, (_, j) => 3 + ((j * 7 + i) % 44));
        for (const n of blockSizes) await compare(model, prompt, n, 13 + i * 11, [], `prompt ${P}`);
        for (const n of [3, 16]) {
          await compare(model, prompt, n, 13 + i * 11, [], `prompt ${P} sliding`, true);
        }
        // EOS inside a block: stop at a token AR produces mid-way.
        const ar = (await drain(generateGreedy(model, prompt, { maxNewTokens: 30, eosIds: [] }))).result;
        const eos = ar.tokens[9];
        for (const n of [3, 8, 16]) {
          const { jacobi } = await compare(model, prompt, n, 30, [eos], `prompt ${P} EOS`);
          assert.equal(jacobi.tokens.at(-1), eos);
          assert.equal(jacobi.tokens.indexOf(eos), jacobi.tokens.length - 1);
        }
      }
    });
  },
);

sharedTest(
  [STORIES_FIXTURE],
  "Jacobi equals greedy AR on stories260K for block sizes 1..32",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const dir = await Deno.makeTempDir();
    try {
      const p = await loadStories(gpu, dir);
      const prompts = [
        [p.tokenizer.bosId!],
        p.tokenizer.encode("Once upon a time, there was a little dog"),
        p.tokenizer.encode("Tom and his sister went to the park. They saw a big tree.").slice(0, 40),
      ];
      assert.ok(prompts[2].length >= 20, `prompt of ${prompts[2].length} tokens`);
      for (const prompt of prompts) {
        for (const n of [1, 2, 3, 8, 16, 32]) {
          const { jacobi } = await compare(
            p.model,
            prompt,
            n,
            45,
            p.eosIds,
            `stories prompt ${prompt.length}`,
          );
          assert.ok(jacobi.stats.tokensPerForward >= 0.9 && jacobi.stats.tokensPerForward <= 2);
          if (n === 8) {
            await compare(p.model, prompt, n, 45, p.eosIds, `stories prompt ${prompt.length} sliding`, true);
          }
        }
      }
      p.model.destroy();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

sharedTest(
  [STORIES_FIXTURE],
  "Jacobi with context guesses: copies spans from the context, same output as greedy AR",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const dir = await Deno.makeTempDir();
    try {
      const p = await loadStories(gpu, dir);
      const prompt = p.tokenizer.encode(
        "Tom and his sister went to the park. Tom and his sister saw a big tree. Tom and",
      );
      for (const n of [4, 16]) {
        for (const sliding of [false, true]) {
          const { jacobi } = await compare(
            p.model,
            prompt,
            n,
            40,
            p.eosIds,
            `context guesses n=${n}`,
            sliding,
            "context",
          );
          // The first block is the start kernel's: the prefill's token, then copied guesses (random
          // only where nothing matched), exactly as the CPU twin computes them.
          const first = jacobi.trajectory[0].states[0];
          const expected = Uint32Array.from({ length: n }, (_, j) => j === 0 ? first[0] : 0);
          fillGuessesReference(Uint32Array.from(prompt), expected, {
            known: 1,
            base: prompt.length,
            n,
            r: 0,
            seed: prompt.length,
            guesses: "context",
          });
          assert.deepEqual(first, Array.from(expected), `first block, n=${n} sliding=${sliding}`);
        }
      }
      p.model.destroy();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
