/**
 * The model at a real checkpoint's widths: a random TinyLlama-1.1B-shaped checkpoint (hidden 2048,
 * 32 heads / 4 KV heads, MLP 5632, vocab 32000) cut to one layer, bf16 in two shards as hubs ship
 * them (dev/random_checkpoint.ts), streamed to f16 on the GPU, against the f64 CPU reference
 * forward: logits, and the greedy tokens of AR and Jacobi decoding.
 */
import assert from "node:assert/strict";
import { writeRandomCheckpoint } from "../../dev/random_checkpoint.ts";
import { decode } from "../../decode/decode.ts";
import { runToEnd } from "../../decode/generation.ts";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { directoryFiles, Llama } from "../../model/mod.ts";
import { openCheckpointTensors } from "../../model/safetensors.ts";
import { refCache, refForward, type RefWeights } from "../_llama_reference.ts";
import { assertClose } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

Deno.test(
  "TinyLlama widths (1 layer, bf16 shards → f16): logits and greedy tokens match the f64 reference",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const dir = await Deno.makeTempDir({ prefix: "tinyllama_widths_" });
    try {
      await writeRandomCheckpoint(dir, {
        shape: "tinyllama-1.1b",
        layers: 1,
        dtype: "BF16",
        shards: 2,
        seed: 3,
      });
      const files = directoryFiles(dir);
      const model = await Llama.load(gpu, files, { dtype: "f16", maxLength: 64, maxRows: 16 });
      const cfg = model.config;
      assert.deepEqual([cfg.hiddenSize, cfg.numHeads, cfg.numKvHeads, cfg.intermediateSize, cfg.vocabSize], [
        2048,
        32,
        4,
        5632,
        32000,
      ]);
      // The reference reads the same stored values (bf16 values of this magnitude are exact in f16).
      const ckpt = await openCheckpointTensors((f) => files.source(f));
      const weights: RefWeights = new Map();
      for (const name of ckpt.names()) weights.set(name, (await ckpt.readTensor(name)).data);

      // Logits of a 6-row prefill.
      const prompt = [1, 4000, 777, 31999, 12, 9000];
      const V = cfg.vocabSize;
      const cache = model.createCache(64);
      const tokens = Tensor.from(gpu, Uint32Array.from(prompt), [prompt.length], "tokens");
      const logits = new Tensor(gpu, [prompt.length, V], "f32", "logits");
      const step = new Step(gpu, "real widths");
      model.forward(step, {
        tokens,
        tokenOffset: 0,
        rows: prompt.length,
        position: cache.at(0),
        cache,
        logits,
      });
      step.submit();
      const [got] = await readTensors(gpu, [logits]);
      const refCacheState = refCache(cfg);
      const ref = refForward(cfg, weights, refCacheState, prompt);
      for (let t = 0; t < prompt.length; t++) {
        assertClose(got.subarray(t * V, (t + 1) * V), ref[t], { atol: 1e-3, rtol: 1e-3 }, `row ${t}`);
      }
      cache.destroy();
      tokens.destroy();
      logits.destroy();

      // Greedy continuation: the reference's argmax chain, then AR and Jacobi on the GPU.
      const expected: number[] = [];
      let next = argmax(ref[prompt.length - 1]);
      for (let i = 0; i < 6; i++) {
        expected.push(next);
        next = argmax(refForward(cfg, weights, refCacheState, [next])[0]);
      }
      for (const d of [{ kind: "ar" }, { kind: "jacobi", blockSize: 4 }] as const) {
        const { result } = await runToEnd(decode(model, prompt, d, { maxNewTokens: 6 }));
        assert.deepEqual(result.tokens, expected, `${d.kind} greedy tokens`);
      }
      model.destroy();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
