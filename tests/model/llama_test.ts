import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { directoryFiles, FormatError, Llama } from "../../model/mod.ts";
import { writeSafetensors } from "../../model/deno_files.ts";
import { assertClose } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";
import { refCache, refForward } from "../_llama_reference.ts";
import { writeTinyModel } from "../_tiny_model.ts";

// GPU f32 vs an f64-accumulated CPU reference through 2 layers: differences come from summation
// order in matmuls, attention and norms only.
const LOGITS_TOL = { atol: 2e-4, rtol: 2e-3 };

Deno.test(
  "tiny GQA Llama (BF16, untied) matches the CPU reference, fused and separate paths: prefill 7 rows, then 5 cached steps",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const dir = await Deno.makeTempDir();
    try {
      const { config, weights } = await writeTinyModel(dir, {
        numHeads: 4,
        numKvHeads: 2,
        tie: false,
        dtype: "BF16",
      });
      const model = await Llama.load(gpu, directoryFiles(dir), { maxLength: 64, maxRows: 16 });
      // Both forward paths (fused: 6 dispatches a layer; separate: one kernel per operation).
      for (const path of ["fused", "separate"] as const) {
        model.forwardPath = path;
        const cache = model.createCache(64);
        const prompt = [1, 17, 5, 33, 60, 9, 41];
        const steps = [12, 3, 50, 27, 8];
        const all = [...prompt, ...steps];
        const tokens = Tensor.from(gpu, Uint32Array.from(all), [all.length], "tokens");
        const V = config.vocabSize;
        const prefillLogits = new Tensor(gpu, [prompt.length, V], "f32", "prefill logits");
        const stepLogits = steps.map((_, i) => new Tensor(gpu, [1, V], "f32", `step ${i} logits`));
        const step = new Step(gpu, "tiny model");
        model.forward(step, {
          tokens,
          tokenOffset: 0,
          rows: prompt.length,
          position: cache.at(0),
          cache,
          logits: prefillLogits,
        });
        steps.forEach((_, i) => {
          const pos = prompt.length + i;
          model.forward(step, {
            tokens,
            tokenOffset: pos,
            rows: 1,
            position: cache.at(pos),
            cache,
            logits: stepLogits[i],
          });
        });
        step.submit();
        const results = await readTensors(gpu, [prefillLogits, ...stepLogits]);
        const ref = refForward(config, weights, refCache(config), all);
        for (let t = 0; t < prompt.length; t++) {
          assertClose(
            results[0].subarray(t * V, (t + 1) * V),
            ref[t],
            LOGITS_TOL,
            `${path}: prefill row ${t}`,
          );
        }
        steps.forEach((_, i) =>
          assertClose(results[1 + i], ref[prompt.length + i], LOGITS_TOL, `${path}: step ${i}`)
        );
        cache.destroy();
      }
      model.destroy();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("f16 weight storage matches the reference on f16-rounded weights", gpuTest, async () => {
  const gpu = await testGpu();
  const dir = await Deno.makeTempDir();
  try {
    // The file holds F16 values, so the reference sees exactly what the GPU stores.
    const { config, weights } = await writeTinyModel(dir, {
      numHeads: 4,
      numKvHeads: 2,
      dtype: "F16",
      seed: 11,
    });
    const model = await Llama.load(gpu, directoryFiles(dir), { maxLength: 64, maxRows: 16, dtype: "f16" });
    assert.equal(model.weights.get("model.layers.0.self_attn.q_proj.weight")!.dtype, "f16");
    assert.equal(model.weights.get("model.norm.weight")!.dtype, "f32");
    const cache = model.createCache(64);
    const seq = [1, 9, 4, 22, 17, 3];
    const tokens = Tensor.from(gpu, Uint32Array.from(seq), [seq.length], "tokens");
    const logits = new Tensor(gpu, [seq.length, config.vocabSize], "f32", "logits");
    const step = new Step(gpu, "f16 model");
    model.forward(step, { tokens, tokenOffset: 0, rows: seq.length, position: cache.at(0), cache, logits });
    step.submit();
    const [out] = await readTensors(gpu, [logits]);
    const ref = refForward(config, weights, refCache(config), seq);
    ref.forEach((row, t) =>
      assertClose(out.subarray(t * config.vocabSize, (t + 1) * config.vocabSize), row, LOGITS_TOL, `row ${t}`)
    );
    model.destroy();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a checkpoint that disagrees with config.json is refused by name", gpuTest, async () => {
  const gpu = await testGpu();
  const dir = await Deno.makeTempDir();
  try {
    const { config, weights } = await writeTinyModel(dir, { tie: true });
    // Missing tensor.
    const without = [...weights].filter(([n]) => n !== "model.layers.1.mlp.up_proj.weight");
    const shapes = new Map(
      [...weights].map((
        [n, d],
      ) => [n, n.includes("norm") ? [d.length] : [d.length / config.hiddenSize, config.hiddenSize]]),
    );
    shapes.set("model.layers.0.mlp.down_proj.weight", [config.hiddenSize, config.intermediateSize]);
    shapes.set("model.layers.1.mlp.down_proj.weight", [config.hiddenSize, config.intermediateSize]);
    shapes.set("model.layers.0.self_attn.o_proj.weight", [
      config.hiddenSize,
      config.numHeads * config.headDim,
    ]);
    shapes.set("model.layers.1.self_attn.o_proj.weight", [
      config.hiddenSize,
      config.numHeads * config.headDim,
    ]);
    await writeSafetensors(
      `${dir}/model.safetensors`,
      without.map(([name, data]) => ({ name, dtype: "F32", shape: shapes.get(name)!, data })),
    );
    await assert.rejects(
      () => Llama.load(gpu, directoryFiles(dir)),
      (e: unknown) =>
        e instanceof FormatError && /model\.layers\.1\.mlp\.up_proj\.weight/.test(e.message) &&
        /missing/.test(e.message),
    );
    // Wrong shape: the embedding transposed.
    const embed = "model.embed_tokens.weight";
    await writeSafetensors(
      `${dir}/model.safetensors`,
      [...weights].map(([name, data]) => ({
        name,
        dtype: "F32" as const,
        shape: name === embed ? [config.hiddenSize, config.vocabSize] : shapes.get(name)!,
        data,
      })),
    );
    await assert.rejects(
      () => Llama.load(gpu, directoryFiles(dir)),
      (e: unknown) =>
        e instanceof FormatError && e.message.includes(embed) && /\[32, 64\]/.test(e.message) &&
        /\[64, 32\]/.test(e.message),
    );
    // Missing and malformed config.json.
    await Deno.writeTextFile(`${dir}/config.json`, "{ not json");
    await assert.rejects(
      () => Llama.load(gpu, directoryFiles(dir)),
      (e: unknown) => e instanceof FormatError && /config\.json/.test(e.message) && /JSON/.test(e.message),
    );
    await Deno.remove(`${dir}/config.json`);
    await assert.rejects(
      () => Llama.load(gpu, directoryFiles(dir)),
      (e: unknown) =>
        e instanceof FormatError && /config\.json/.test(e.message) && /does not exist/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
