/**
 * Random Llama checkpoints of real shapes, written as Hugging Face ships them: config.json, the
 * weights in N shards with `model.safetensors.index.json`, and a byte-level tokenizer, in a chosen
 * dtype. For tests at real widths (fewer layers) and the scale benchmark; the values are random
 * (σ ≈ 0.02, norms 1), so the text is meaningless but every byte path is the real one.
 *
 * Fast enough for billions of weights: values are drawn as bit patterns straight from a xorshift
 * generator (sign, a small exponent range, random mantissa) and written tensor by tensor in 16 MiB
 * chunks, so memory stays flat whatever the model's size.
 *
 *     deno run -A dev/random_checkpoint.ts --shape tinyllama-1.1b --layers 4 --dtype bf16 --shards 4 --out DIR
 *
 * @module
 */

import { expectedTensorShapes, llamaConfigToJson, parseLlamaConfig } from "../model/config.ts";

/** The real shapes this generator knows (config.json fields). */
export const REAL_SHAPES: Record<string, Record<string, unknown>> = {
  "tinyllama-1.1b": {
    hidden_size: 2048,
    intermediate_size: 5632,
    num_hidden_layers: 22,
    num_attention_heads: 32,
    num_key_value_heads: 4,
    vocab_size: 32000,
    max_position_embeddings: 2048,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: false,
  },
  "llama-2-7b": {
    hidden_size: 4096,
    intermediate_size: 11008,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 32,
    vocab_size: 32000,
    max_position_embeddings: 4096,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    tie_word_embeddings: false,
  },
  "deepseek-coder-6.7b": {
    hidden_size: 4096,
    intermediate_size: 11008,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 32,
    vocab_size: 32256,
    max_position_embeddings: 16384,
    rms_norm_eps: 1e-6,
    rope_theta: 100000,
    rope_scaling: { type: "linear", factor: 4.0 },
    tie_word_embeddings: false,
  },
};

/** Options of {@linkcode writeRandomCheckpoint}. */
export interface RandomCheckpointOptions {
  /** A key of {@linkcode REAL_SHAPES}. */
  shape: string;
  /** Layers to keep (default: the shape's own). */
  layers?: number;
  /** Stored dtype (default BF16, as the released checkpoints). */
  dtype?: "F32" | "F16" | "BF16";
  /** Shard files (default 1: a single `model.safetensors`). */
  shards?: number;
  /** Seed of the values. */
  seed?: number;
}

const CHUNK = 16 * 1024 * 1024;

/** xorshift32 words, filled in place. */
function fillRandom(words: Uint32Array, state: { s: number }): void {
  let s = state.s;
  for (let i = 0; i < words.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    words[i] = s >>> 0;
  }
  state.s = s;
}

/**
 * Turns random words into values of magnitude in [2^-7, 2^-5) (≈ 0.008-0.03) with random signs, as
 * bit patterns of `dtype`; norms are 1.0.
 */
function shapeBits(words: Uint32Array, dtype: "F32" | "F16" | "BF16", ones: boolean): void {
  for (let i = 0; i < words.length; i++) {
    const r = words[i];
    if (dtype === "F32") {
      // sign | exponent 120..123 (2^-7..2^-4) limited to 120..121 | 23 random mantissa bits
      words[i] = ones ? 0x3f800000 : (r & 0x807fffff) | ((120 + ((r >>> 23) & 1)) << 23);
    } else if (dtype === "BF16") {
      const lo = ones ? 0x3f80 : (r & 0x807f) | ((120 + ((r >>> 7) & 1)) << 7);
      const hi = ones ? 0x3f80 : ((r >>> 16) & 0x807f) | ((120 + ((r >>> 23) & 1)) << 7);
      words[i] = (lo | (hi << 16)) >>> 0;
    } else {
      // f16: exponent bias 15, 2^-7 → 8, 2^-6 → 9
      const lo = ones ? 0x3c00 : (r & 0x83ff) | ((8 + ((r >>> 10) & 1)) << 10);
      const hi = ones ? 0x3c00 : ((r >>> 16) & 0x83ff) | ((8 + ((r >>> 26) & 1)) << 10);
      words[i] = (lo | (hi << 16)) >>> 0;
    }
  }
}

/** A byte-level tokenizer.json for `vocab` ids (ids ≥ 259 decode to `t<id>`). */
function tokenizerJson(vocab: number): unknown {
  const v: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  for (let b = 0; b < 256; b++) v[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = 3 + b;
  for (let id = 259; id < vocab; id++) v[`t${id}`] = id;
  return {
    version: "1.0",
    added_tokens: [0, 1, 2].map((id) => ({
      id,
      content: ["<unk>", "<s>", "</s>"][id],
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: { type: "ByteFallback" },
    model: { type: "BPE", vocab: v, merges: [], byte_fallback: true, unk_token: "<unk>", fuse_unk: true },
  };
}

/**
 * Writes the checkpoint into `dir`; returns its weight bytes. Shards hold consecutive tensors of
 * about equal size.
 *
 * @example Two layers of TinyLlama's widths, bf16, in two shards
 * ```ts ignore
 * await writeRandomCheckpoint("/tmp/tl", { shape: "tinyllama-1.1b", layers: 2, shards: 2 });
 * ```
 */
export async function writeRandomCheckpoint(dir: string, options: RandomCheckpointOptions): Promise<number> {
  const base = REAL_SHAPES[options.shape];
  if (!base) {
    throw new RangeError(
      `Unknown shape "${options.shape}"; choose one of ${Object.keys(REAL_SHAPES).join(", ")}`,
    );
  }
  const json = {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_act: "silu",
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: (options.dtype ?? "BF16") === "BF16"
      ? "bfloat16"
      : (options.dtype === "F16" ? "float16" : "float32"),
    ...base,
    num_hidden_layers: options.layers ?? base.num_hidden_layers,
  };
  const config = parseLlamaConfig(json, `${options.shape} config`);
  const dtype = options.dtype ?? "BF16";
  const elem = dtype === "F32" ? 4 : 2;
  const tensors = [...expectedTensorShapes(config)].map(([name, shape]) => ({
    name,
    shape,
    bytes: shape.reduce((a, b) => a * b, 1) * elem,
  }));
  const total = tensors.reduce((a, t) => a + t.bytes, 0);
  const shardCount = Math.max(1, options.shards ?? 1);
  // Consecutive tensors, cut when a shard reaches its share.
  const groups: (typeof tensors)[] = [[]];
  let filled = 0;
  for (const t of tensors) {
    if (groups.length < shardCount && filled >= (total / shardCount) * groups.length) groups.push([]);
    groups[groups.length - 1].push(t);
    filled += t.bytes;
  }
  await Deno.mkdir(dir, { recursive: true });
  const weightMap: Record<string, string> = {};
  const state = { s: (options.seed ?? 1) * 2654435761 >>> 0 || 1 };
  const words = new Uint32Array(CHUNK / 4);
  for (const [k, group] of groups.entries()) {
    const file = groups.length === 1
      ? "model.safetensors"
      : `model-${String(k + 1).padStart(5, "0")}-of-${String(groups.length).padStart(5, "0")}.safetensors`;
    const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
    let offset = 0;
    for (const t of group) {
      header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes] };
      offset += t.bytes;
      weightMap[t.name] = file;
    }
    let headerText = JSON.stringify(header);
    headerText += " ".repeat((8 - (headerText.length % 8)) % 8);
    const out = await Deno.open(`${dir}/${file}.tmp`, { write: true, create: true, truncate: true });
    try {
      const prefix = new Uint8Array(8);
      new DataView(prefix.buffer).setBigUint64(0, BigInt(headerText.length), true);
      await out.write(prefix);
      await out.write(new TextEncoder().encode(headerText));
      for (const t of group) {
        const ones = t.name.endsWith("norm.weight");
        for (let done = 0; done < t.bytes; done += CHUNK) {
          const length = Math.min(CHUNK, t.bytes - done);
          const view = words.subarray(0, Math.ceil(length / 4));
          fillRandom(view, state);
          shapeBits(view, dtype, ones);
          const bytes = new Uint8Array(view.buffer, 0, length);
          for (let w = 0; w < bytes.length;) w += await out.write(bytes.subarray(w));
        }
      }
    } finally {
      out.close();
    }
    await Deno.rename(`${dir}/${file}.tmp`, `${dir}/${file}`);
  }
  if (groups.length > 1) {
    await Deno.writeTextFile(
      `${dir}/model.safetensors.index.json`,
      JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2),
    );
  }
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify({ ...llamaConfigToJson(config), ...json }, null, 2),
  );
  await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(tokenizerJson(config.vocabSize)));
  await Deno.writeTextFile(
    `${dir}/tokenizer_config.json`,
    JSON.stringify({ add_bos_token: true, bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>" }),
  );
  return total;
}

if (import.meta.main) {
  const { parseArgs } = await import("node:util");
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      shape: { type: "string" },
      layers: { type: "string" },
      dtype: { type: "string" },
      shards: { type: "string" },
      seed: { type: "string" },
      out: { type: "string" },
    },
  });
  if (!values.shape || !values.out) {
    console.error(
      `usage: deno run -A dev/random_checkpoint.ts --shape ${Object.keys(REAL_SHAPES).join("|")} --out DIR ` +
        "[--layers L] [--dtype F32|F16|BF16] [--shards N] [--seed S]",
    );
    Deno.exit(2);
  }
  const t0 = performance.now();
  const bytes = await writeRandomCheckpoint(values.out, {
    shape: values.shape,
    layers: values.layers ? Number(values.layers) : undefined,
    dtype: (values.dtype?.toUpperCase() as "F32" | "F16" | "BF16" | undefined) ?? "BF16",
    shards: values.shards ? Number(values.shards) : 1,
    seed: values.seed ? Number(values.seed) : 1,
  });
  const s = (performance.now() - t0) / 1000;
  console.log(`wrote ${(bytes / 1e9).toFixed(2)} GB of weights to ${values.out} in ${s.toFixed(1)} s`);
}
