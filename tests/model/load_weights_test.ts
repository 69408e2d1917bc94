import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { decode } from "../../decode/decode.ts";
import { runToEnd } from "../../decode/generation.ts";
import type { Gpu } from "../../core/mod.ts";
import { fileSource } from "../../model/deno_files.ts";
import { parseLlamaConfig } from "../../model/config.ts";
import { directoryFiles } from "../../model/deno_files.ts";
import { Llama } from "../../model/llama.ts";
import { planWeights, uploadWeights } from "../../model/load_weights.ts";
import {
  bf16ToF32,
  encodeSafetensors,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  openCheckpointTensors,
  openSafetensors,
  type TensorToWrite,
} from "../../model/safetensors.ts";
import { gpuTest, testGpu } from "../_gpu.ts";
import { assertClose } from "../_assert.ts";
import { refCache, refForward, type RefWeights } from "../_llama_reference.ts";
import { dequantizeQ8Reference, quantizeQ8Reference } from "../../kernels/quantize.ts";
import { writeTinyModel } from "../_tiny_model.ts";

/** Rewrites `dir`'s model.safetensors as `shards` shard files with an index, as hubs ship them. */
async function shard(
  dir: string,
  shards: number,
  retype?: (name: string) => string | undefined,
): Promise<void> {
  const file = await openSafetensors(await fileSource(`${dir}/model.safetensors`));
  const names = [...file.tensors.keys()];
  const weightMap: Record<string, string> = {};
  for (let k = 0; k < shards; k++) {
    const shardName = `model-${String(k + 1).padStart(5, "0")}-of-${
      String(shards).padStart(5, "0")
    }.safetensors`;
    const mine = names.filter((_, i) => i % shards === k);
    const tensors: TensorToWrite[] = [];
    for (const name of mine) {
      const info = file.tensors.get(name)!;
      tensors.push({
        name,
        dtype: info.dtype as "F32",
        shape: info.shape,
        data: (await file.readTensor(name)).data,
      });
      weightMap[name] = shardName;
    }
    const bytes = encodeSafetensors(tensors);
    // A tensor re-labelled in the header with another dtype of the same size and name length (as a
    // quantised export would label it); the header is ASCII, patched in place.
    const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    const header = new TextDecoder().decode(bytes.subarray(8, 8 + headerLength));
    for (const name of mine) {
      const dtype = retype?.(name);
      if (!dtype) continue;
      const from = header.indexOf('"dtype":"', header.indexOf(`"${name}"`)) + 9;
      assert.equal(header.indexOf('"', from) - from, dtype.length, "same-length dtype names only");
      bytes.set(new TextEncoder().encode(dtype), 8 + from);
    }
    await Deno.writeFile(`${dir}/${shardName}`, bytes);
  }
  await Deno.remove(`${dir}/model.safetensors`);
  await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify({ weight_map: weightMap }));
}

/** The f16 rounding of values, as f32 (what an f16 tensor reads back as). */
const asF16 = (v: Float32Array) => f16ToF32(f32ToF16(v));
/** The bf16 rounding of values, as f32. */
const asBf16 = (v: Float32Array) => bf16ToF32(f32ToBf16(v));

Deno.test(
  "weights stream as raw bytes: every stored dtype to f32 and f16, sharded, in small chunks",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    for (const stored of ["F32", "F16", "BF16"] as const) {
      const dir = await Deno.makeTempDir();
      try {
        // Odd sizes: 30 × 37 matrices have an odd element count, so 16-bit tensors end mid-word.
        const { config, weights } = await writeTinyModel(dir, {
          dtype: stored,
          hiddenSize: 30,
          intermediateSize: 37,
          numHeads: 3,
          numKvHeads: 1,
          vocabSize: 41,
        });
        await shard(dir, 3);
        const checkpoint = await openCheckpointTensors((f) => directoryFiles(dir).source(f));
        for (const dtype of ["f32", "f16", "bf16", "stored"] as const) {
          const plans = planWeights(gpu, config, checkpoint, dtype, dir);
          for (const chunk of [64, 1 << 20]) {
            const progress: number[] = [];
            // Small sizes: several reads per tensor, and conversions in several pieces at offsets.
            const sizes = { chunkBytes: chunk, convertBytes: chunk === 64 ? 256 : chunk };
            const uploaded = await uploadWeights(
              gpu,
              checkpoint,
              plans,
              (done) => progress.push(done),
              sizes,
            );
            const names = [...uploaded.keys()];
            const read = await readTensors(
              gpu,
              names.map((n) => uploaded.get(n) as Tensor), // nothing splits at this adapter's limits
            );
            names.forEach((name, i) => {
              const t = uploaded.get(name) as Tensor;
              const w = weights.get(name)!;
              const expected = t.dtype === "f16" ? asF16(w) : t.dtype === "bf16" ? asBf16(w) : w;
              assert.deepEqual(
                Array.from(read[i]),
                Array.from(expected),
                `${stored} → ${t.dtype} (asked ${dtype}), chunk ${chunk}: ${name}`,
              );
              // Matrices as asked ("stored": as the file has them), norms f32.
              const asked = dtype === "stored" ? stored.toLowerCase() : dtype;
              assert.equal(t.dtype, t.shape.length === 2 ? asked : "f32", `${name} asked ${dtype}`);
            });
            const total = plans.reduce((a, p) => a + p.fileBytes, 0);
            assert.equal(progress.at(-1), total, "progress ends at the checkpoint's bytes");
            if (chunk === 64) assert.ok(progress.length > plans.length, "small chunks: several per tensor");
            for (const t of [...uploaded.values()].flat()) t.destroy();
          }
        }
        // And through Llama.load, the model's own path.
        const model = await Llama.load(gpu, directoryFiles(dir), { maxLength: 32, maxRows: 8, dtype: "f16" });
        model.destroy();
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }
  },
);

/** An adapter whose storage bindings hold `limit` bytes (planWeights reads only limits and features). */
const smallAdapter = (limit: number) =>
  ({
    limits: { maxStorageBufferBindingSize: limit, maxBufferSize: 1 << 30 },
    features: { f16: true },
  }) as unknown as Gpu;

Deno.test(
  "bad checkpoints are refused before anything is allocated, naming the file, tensor and fix",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const dir = await Deno.makeTempDir();
    try {
      const { config } = await writeTinyModel(`${dir}/m`, { dtype: "F16" });
      // A tensor that does not fit one storage binding (and cannot split: only the embedding and head
      // do): its need, the limit and the fix.
      const ckpt = await openCheckpointTensors((f) => directoryFiles(`${dir}/m`).source(f));
      assert.throws(
        () => planWeights(smallAdapter(4096), config, ckpt, "f32", `${dir}/m`),
        /Tensor "model\.layers\.0\.mlp\.gate_proj\.weight" \[48, 32\] needs 6144 B as f32 .* limit of 4096 B .*--dtype f16/,
      );
      // At 16 bits the fix is quantising; once nothing smaller exists, the model is too large.
      assert.throws(
        () => planWeights(smallAdapter(3000), config, ckpt, "f16", `${dir}/m`),
        /gate_proj.* needs 3072 B as f16 .*--dtype q8 or q4/,
      );
      assert.throws(
        () => planWeights(smallAdapter(1500), config, ckpt, "q8", `${dir}/m`),
        /gate_proj.* as q8 .*--dtype q4/,
      );
      assert.throws(
        () => planWeights(smallAdapter(500), config, ckpt, "q4", `${dir}/m`),
        /too large for this adapter/,
      );
      // A quantised export: a tensor labelled I8 (same bytes) is refused by name.
      await shard(`${dir}/m`, 2, (name) => name === "model.layers.1.mlp.up_proj.weight" ? "I16" : undefined);
      await assert.rejects(
        () => Llama.load(gpu, directoryFiles(`${dir}/m`)),
        /model-0000\d-of-00002\.safetensors.*"model\.layers\.1\.mlp\.up_proj\.weight" is stored as I16.*unquantised/,
      );
      // A shard named in the index but missing, and a shard cut mid-tensor.
      const { config: c2 } = await writeTinyModel(`${dir}/n`);
      await shard(`${dir}/n`, 2);
      const second = `${dir}/n/model-00002-of-00002.safetensors`;
      const bytes = await Deno.readFile(second);
      await Deno.writeFile(second, bytes.subarray(0, bytes.length - 100));
      await assert.rejects(
        () => Llama.load(gpu, directoryFiles(`${dir}/n`)),
        /model-00002-of-00002\.safetensors.*truncated/,
      );
      await Deno.remove(second);
      await assert.rejects(
        () => Llama.load(gpu, directoryFiles(`${dir}/n`)),
        /shard "model-00002-of-00002\.safetensors".*missing/,
      );
      assert.equal(c2.numLayers, 2);
      assert.deepEqual(
        parseLlamaConfig(JSON.parse(await Deno.readTextFile(`${dir}/n/config.json`))).numLayers,
        2,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test(
  "embedding and head split over small bindings: the same logits and tokens as whole tensors",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    for (const [dtype, tie] of [["F32", false], ["BF16", false], ["F16", true]] as const) {
      const dir = await Deno.makeTempDir();
      try {
        // 300 × 32 tables: 38400 bytes in f32; a 7000-byte binding (over every layer matrix) splits them
        // into 6 parts of 54 rows (3 parts of 108 rows in 16 bits).
        await writeTinyModel(dir, {
          dtype,
          tie,
          vocabSize: 300,
          hiddenSize: 32,
          numHeads: 4,
          numKvHeads: 2,
          scale: 4,
        });
        const load = (maxBindingBytes?: number) =>
          Llama.load(gpu, directoryFiles(dir), { maxLength: 64, maxRows: 8, maxBindingBytes });
        const whole = await load();
        const split = await load(7000);
        assert.equal(whole.splitWeights.size, 0);
        assert.ok(split.splitWeights.size >= 1, `${dtype}: split`);
        const parts = split.splitWeights.get("model.embed_tokens.weight")!;
        assert.ok(
          parts.length >= 3 && parts.every((p) => p.byteLength <= 7000),
          `${dtype}: parts of ${parts.map((p) => p.byteLength).join(", ")} bytes`,
        );
        // Logits of a prefill with ids in every part, and one past the vocabulary (a zero row).
        const prompt = [1, 5, 299, 120, 240, 300, 60, 2];
        const logits = async (m: Llama) => {
          const cache = m.createCache(64);
          const tokens = Tensor.from(gpu, Uint32Array.from(prompt), [prompt.length], "tokens");
          const out = new Tensor(gpu, [prompt.length, 300], "f32", "logits");
          const step = new Step(gpu, "split check");
          m.forward(step, {
            tokens,
            tokenOffset: 0,
            rows: prompt.length,
            position: cache.at(0),
            cache,
            logits: out,
          });
          step.submit();
          const [r] = await readTensors(gpu, [out]);
          cache.destroy();
          return Array.from(r);
        };
        assert.deepEqual(await logits(split), await logits(whole), `${dtype} tie=${tie}: logits`);
        for (const d of [{ kind: "ar" }, { kind: "jacobi", blockSize: 4 }] as const) {
          const a = (await runToEnd(decode(whole, [1, 5, 9], d, { maxNewTokens: 12 }))).result.tokens;
          const b = (await runToEnd(decode(split, [1, 5, 9], d, { maxNewTokens: 12 }))).result.tokens;
          assert.deepEqual(b, a, `${dtype}: ${d.kind} tokens`);
        }
        whole.destroy();
        split.destroy();
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }
  },
);

Deno.test(
  "q8 and q4 weights: the layers' matrices quantised at load; logits match the f64 reference on the dequantised weights, Jacobi = AR",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    for (const [stored, q] of [["F32", "q8"], ["BF16", "q8"], ["BF16", "q4"], ["F32", "q4"]] as const) {
      const dir = await Deno.makeTempDir();
      try {
        // Rows of 32 and 64 values quantise; the embedding and head stay 16-bit.
        const { config, weights } = await writeTinyModel(dir, {
          dtype: stored,
          hiddenSize: 32,
          intermediateSize: 64,
          numHeads: 4,
          numKvHeads: 2,
          vocabSize: 64,
          scale: 4,
        });
        // Small pieces: quantisation in several pieces at offsets.
        const checkpoint = await openCheckpointTensors((f) => directoryFiles(dir).source(f));
        const plans = planWeights(gpu, config, checkpoint, q, dir);
        const kinds = Object.fromEntries(plans.map((p) => [p.name, p.dtype]));
        assert.equal(kinds["model.layers.0.mlp.down_proj.weight"], q);
        assert.equal(kinds["model.embed_tokens.weight"], stored === "F32" ? "f16" : "bf16");
        assert.equal(kinds["model.norm.weight"], "f32");
        const uploaded = await uploadWeights(gpu, checkpoint, plans, undefined, { convertBytes: 256 });
        for (const t of [...uploaded.values()].flat()) t.destroy();

        const model = await Llama.load(gpu, directoryFiles(dir), { maxLength: 64, maxRows: 8, dtype: q });
        // The reference: q8 matrices dequantised, 16-bit ones rounded as the GPU holds them.
        const ref: RefWeights = new Map();
        for (const p of plans) {
          const w = weights.get(p.name)!;
          if (p.dtype === "q8" || p.dtype === "q4") {
            const r = quantizeQ8Reference(w, p.dtype === "q8" ? 8 : 4);
            ref.set(p.name, dequantizeQ8Reference(r.q, r.scales));
          } else ref.set(p.name, p.dtype === "f16" ? asF16(w) : p.dtype === "bf16" ? asBf16(w) : w);
        }
        const prompt = [1, 17, 5, 33, 60, 9];
        const cache = model.createCache(64);
        const tokens = Tensor.from(gpu, Uint32Array.from(prompt), [prompt.length], "tokens");
        const logits = new Tensor(gpu, [prompt.length, 64], "f32", "logits");
        const step = new Step(gpu, `${q} forward`);
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
        const expected = refForward(config, ref, refCache(config), prompt);
        for (let t = 0; t < prompt.length; t++) {
          assertClose(
            got.subarray(t * 64, (t + 1) * 64),
            expected[t],
            { atol: 2e-4, rtol: 2e-3 },
            `${stored} ${q} row ${t}`,
          );
        }
        const ar =
          (await runToEnd(decode(model, [1, 5, 9], { kind: "ar" }, { maxNewTokens: 16 }))).result.tokens;
        const jacobi =
          (await runToEnd(decode(model, [1, 5, 9], { kind: "jacobi", blockSize: 4 }, { maxNewTokens: 16 })))
            .result.tokens;
        assert.deepEqual(jacobi, ar, `${stored} ${q}: Jacobi = AR`);
        cache.destroy();
        model.destroy();
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }
  },
);

Deno.test(
  "a model over the memory budget is refused before any allocation, with the fixes that fit",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const dir = await Deno.makeTempDir();
    try {
      // 256 × 64 embedding and head, 2 layers of 64-wide matrices (multiples of 32: q4 applies).
      await writeTinyModel(dir, {
        dtype: "F32",
        vocabSize: 256,
        hiddenSize: 64,
        intermediateSize: 96,
        numHeads: 4,
        numKvHeads: 2,
        maxPositionEmbeddings: 1024,
      });
      const load = (memoryBytes: number, maxLength = 512) =>
        Llama.load(gpu, directoryFiles(dir), { maxLength, maxRows: 8, memoryBytes });
      const fits = await load(1e9);
      const weights = [...fits.weights.values(), ...[...fits.splitWeights.values()].flat()]
        .reduce((a, t) => a + t.byteLength, 0);
      fits.destroy();
      const cache = 2 * 2 * 512 * 2 * 16 * 4; // layers × (k, v) × positions × kv heads × head dim × f32
      // Enough for the weights and 256 positions, not for 512: both fixes offered, q4 fits.
      const budget = weights + cache / 2 + 100;
      const created: string[] = [];
      const createBuffer = gpu.device.createBuffer.bind(gpu.device);
      gpu.device.createBuffer = (d: GPUBufferDescriptor) => (created.push(d.label ?? ""), createBuffer(d));
      try {
        await assert.rejects(load(budget), (e: Error) => {
          assert.match(e.message, new RegExp(`KV cache .* for 512 positions\\), more than the`));
          assert.match(e.message, /--dtype q4 \(weights \d+ B, fits\)/);
          assert.match(e.message, /a shorter --context \(at most 256 fits\)/);
          return true;
        });
        assert.deepEqual(created, [], "buffers were allocated before the check");
      } finally {
        gpu.device.createBuffer = createBuffer;
      }
      // The suggested context does load.
      (await load(budget, 256)).destroy();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
