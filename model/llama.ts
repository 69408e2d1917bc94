/**
 * A Llama-family transformer on WebGPU, top to bottom like llama2.c's `run.c`:
 * config → weights (named exactly as in the checkpoint) → KV cache → `forward`.
 *
 * One forward serves every caller: prefill (T = prompt rows), AR decoding
 * (T = 1) and Jacobi verification (T = n rows), all at a start position read from the GPU.
 *
 * Dimension letters: T rows (tokens), C channels (hidden size), H heads, KVH key/value heads,
 * D head size, I MLP width, V vocabulary, L layers, S cache capacity.
 *
 * @module
 */

import { type Gpu, type Step, Tensor } from "../core/mod.ts";
import { addInPlace } from "../kernels/add.ts";
import { argmaxForward } from "../kernels/argmax.ts";
import { attentionForward } from "../kernels/attention.ts";
import { embeddingForward } from "../kernels/embedding.ts";
import { matmulForward, matmulGroupsForward } from "../kernels/matmul.ts";
import { rmsNormForward } from "../kernels/rms_norm.ts";
import { ropeForward } from "../kernels/rope.ts";
import { ropeQkvForward } from "../kernels/rope_qkv.ts";
import { siluMulForward } from "../kernels/silu_mul.ts";
import { storeRowsForward } from "../kernels/store_rows.ts";
import { type LlamaConfig, parseLlamaConfig } from "./config.ts";
import { FormatError } from "./format_error.ts";
import { KvCache, type PositionRef } from "./kv_cache.ts";
import type { ModelFiles } from "./model_files.ts";
import { checkMemory, planWeights, uploadWeights } from "./load_weights.ts";
import { openCheckpointTensors } from "./safetensors.ts";

// ----------------------------------------------------------------------------------------------
// Weights

/** The tensors of one decoder layer, named after the checkpoint's `model.layers.{i}.*`. */
export interface LayerWeights {
  /** input_layernorm.weight (C) */
  inputNorm: Tensor;
  /** self_attn.q_proj.weight (H*D, C) */
  q: Tensor;
  /** self_attn.k_proj.weight (KVH*D, C) */
  k: Tensor;
  /** self_attn.v_proj.weight (KVH*D, C) */
  v: Tensor;
  /** self_attn.o_proj.weight (C, H*D) */
  o: Tensor;
  /** post_attention_layernorm.weight (C) */
  postNorm: Tensor;
  /** mlp.gate_proj.weight (I, C) */
  gate: Tensor;
  /** mlp.up_proj.weight (I, C) */
  up: Tensor;
  /** mlp.down_proj.weight (C, I) */
  down: Tensor;
}

/** Checkpoint name → GPU tensor, for every weight of the model. */
export type WeightMap = Map<string, Tensor>;

/** A weight matrix, whole or split by rows into parts (each within one storage binding). */
export type SplitWeight = Tensor | Tensor[];

/** Progress callback for loading: bytes read so far and in total. */
export type LoadProgress = (done: number, total: number, name: string) => void;

/** Options for {@linkcode Llama.load}. */
export interface LoadOptions {
  /** KV cache capacity (default: min(max_position_embeddings, 2048)). */
  maxLength?: number;
  /** Largest number of rows one forward takes (default 64; longer prompts are fed in chunks). */
  maxRows?: number;
  /** Called after each uploaded chunk with the checkpoint bytes done and in all. */
  onProgress?: (done: number, total: number, name: string) => void;
  /**
   * Storage of the weight matrices on the GPU (default "stored": as the checkpoint stores them, so
   * a 16-bit checkpoint loads without conversion). "f16" or "bf16" halve the memory and the bytes
   * a decoding step reads against f32 (matmuls accumulate in f32 either way); norms stay f32, and
   * an f16 embedding table stays f32 on adapters without `shader-f16`. "q8" keeps the layers'
   * matrices as int8 groups with f16 scales, "q4" as int4 groups (Q4_0); the embedding and head stay
   * 16-bit. Training needs "f32".
   */
  dtype?: "f32" | "f16" | "bf16" | "q8" | "q4" | "stored";
  /**
   * The most bytes one weight buffer may hold (default: the adapter's storage-binding limit); the
   * embedding and output head are split by rows to fit. Lower it to test splitting on small models.
   */
  maxBindingBytes?: number;
  /**
   * Bytes of memory the model may take on the adapter (weights + one KV cache of `maxLength`
   * positions). When set, a model that needs more is refused before anything is allocated, with
   * the fixes that would fit. WebGPU does not report an adapter's memory, so the caller decides
   * (the CLI passes the free host memory on a software adapter, whose buffers live there).
   */
  memoryBytes?: number;
}

/** The KV cache capacity when none is asked for: the model's context, at most 2048. */
function defaultMaxLength(config: LlamaConfig): number {
  return Math.min(config.maxPositionEmbeddings, 2048);
}

// ----------------------------------------------------------------------------------------------
// Scratch activations, sized for the largest block

interface Scratch {
  x: Tensor; // (T, C) residual stream
  xn: Tensor; // (T, C) normalised
  q: Tensor; // (T, H*D)
  qr: Tensor; // (T, H*D) rotated
  k: Tensor; // (T, KVH*D)
  v: Tensor; // (T, KVH*D)
  att: Tensor; // (T, H*D)
  proj: Tensor; // (T, C) attention / MLP output before the residual add
  gate: Tensor; // (T, I)
  up: Tensor; // (T, I)
  hidden: Tensor; // (T, I)
  last: Tensor; // (1, C) last row of xn, for last-row-only logits
  qkv: Tensor; // (T, (H + 2·KVH)·D): q | k | v of each row, the fused product's output
}

/** Arguments of one forward pass. */
export interface ForwardArgs {
  /** Token ids (u32). */
  tokens: Tensor;
  /** Index of the first token of this forward in `tokens`. */
  tokenOffset: number;
  /** Number of rows T (1..maxRows). */
  rows: number;
  /** Where the kernels read the start position (= the number of cached tokens). */
  position: PositionRef;
  /** The cache to read and to write rows base..base+T-1 into. */
  cache: KvCache;
  /** Output logits: (T, V), or (1, V) with `lastOnly`. */
  logits: Tensor;
  /** Compute logits for the last row only (prefill needs just the next token). */
  lastOnly?: boolean;
  /** Per-row position offsets (u32, T) instead of 0..T-1 (lookahead decoding). */
  relPositions?: Tensor;
  /** Block attention mask (T, ceil(T/32)) bits instead of causal (lookahead decoding). */
  mask?: Tensor;
}

/**
 * A Llama model whose weights live on the GPU.
 *
 * @example Loading and one forward pass
 * ```ts ignore
 * import { requestGpu, Step } from "../core/mod.ts";
 * import { directoryFiles, Llama } from "./mod.ts";
 * const gpu = await requestGpu();
 * const model = await Llama.load(gpu, directoryFiles("models/demo-base"));
 * const cache = model.createCache();
 * ```
 */
export class Llama {
  /** The device. */
  readonly gpu: Gpu;
  /** The parsed config.json. */
  readonly config: LlamaConfig;
  /**
   * Every weight by checkpoint name.
   * @internal
   */
  readonly weights: WeightMap;
  /**
   * Weights split by rows over several storage bindings (the embedding and output head of large
   * vocabularies on adapters with small bindings), by checkpoint name; not in `weights`.
   * @internal
   */
  readonly splitWeights: Map<string, Tensor[]>;
  /**
   * Per-layer views of `weights`.
   * @internal
   */
  readonly layers: LayerWeights[];
  /**
   * model.embed_tokens.weight (V, C).
   * @internal
   */
  readonly embed: SplitWeight;
  /**
   * model.norm.weight (C).
   * @internal
   */
  readonly norm: Tensor;
  /**
   * lm_head.weight (V, C), or the embedding when tied.
   * @internal
   */
  readonly lmHead: SplitWeight;
  /** The `forwardPath` of models created from now on (benchmarks compare the two). */
  static defaultForwardPath: "fused" | "separate" = "fused";
  /** Largest T a forward accepts. */
  readonly maxRows: number;
  /**
   * How a forward records its layers: `"fused"` (default) in 6 dispatches per layer (RMSNorm folded
   * into the next product, q/k/v as one product, RoPE and the KV store as one kernel, gate/up as one
   * product with silu·mul in its epilogue, the residual adds in the o and down products), or
   * `"separate"`, one kernel per operation (16 per layer; the plainest statement of the forward,
   * kept to compare against). Same result up to rounding.
   */
  forwardPath: "fused" | "separate";
  /** Default KV cache capacity. */
  readonly maxLength: number;
  readonly #scratch: Scratch;
  readonly #views = new Map<string, Tensor>();

  /**
   * Wraps weights already on the GPU (see {@linkcode Llama.load}).
   *
   * @param gpu the device
   * @param config the model config
   * @param weights every tensor of `expectedTensorShapes(config)`, by name
   * @param options capacities
   */
  constructor(gpu: Gpu, config: LlamaConfig, weights: Map<string, SplitWeight>, options: LoadOptions = {}) {
    this.gpu = gpu;
    this.config = config;
    this.weights = new Map();
    this.splitWeights = new Map();
    for (const [name, t] of weights) {
      if (t instanceof Tensor) this.weights.set(name, t);
      else this.splitWeights.set(name, t);
    }
    this.forwardPath = Llama.defaultForwardPath;
    this.maxRows = options.maxRows ?? 64;
    this.maxLength = options.maxLength ?? defaultMaxLength(config);
    const w = (name: string) => {
      const t = this.weights.get(name);
      if (!t) {
        throw new Error(`Weight "${name}" is missing (or split, which only the embedding and head may be)`);
      }
      return t;
    };
    const split = (name: string) => this.splitWeights.get(name) ?? w(name);
    this.layers = [];
    for (let i = 0; i < config.numLayers; i++) {
      const p = `model.layers.${i}.`;
      this.layers.push({
        inputNorm: w(`${p}input_layernorm.weight`),
        q: w(`${p}self_attn.q_proj.weight`),
        k: w(`${p}self_attn.k_proj.weight`),
        v: w(`${p}self_attn.v_proj.weight`),
        o: w(`${p}self_attn.o_proj.weight`),
        postNorm: w(`${p}post_attention_layernorm.weight`),
        gate: w(`${p}mlp.gate_proj.weight`),
        up: w(`${p}mlp.up_proj.weight`),
        down: w(`${p}mlp.down_proj.weight`),
      });
    }
    this.embed = split("model.embed_tokens.weight");
    this.norm = w("model.norm.weight");
    this.lmHead = config.tieWordEmbeddings ? this.embed : split("lm_head.weight");
    const { hiddenSize: C, numHeads: H, numKvHeads: KVH, headDim: D, intermediateSize: I } = config;
    const T = this.maxRows;
    const f = (shape: number[], label: string) => new Tensor(gpu, shape, "f32", label);
    this.#scratch = {
      x: f([T, C], "x"),
      xn: f([T, C], "xn"),
      q: f([T, H * D], "q"),
      qr: f([T, H * D], "q_rot"),
      k: f([T, KVH * D], "k"),
      v: f([T, KVH * D], "v"),
      att: f([T, H * D], "att"),
      proj: f([T, C], "proj"),
      gate: f([T, I], "gate"),
      up: f([T, I], "up"),
      hidden: f([T, I], "hidden"),
      last: f([1, C], "last"),
      qkv: f([T, (H + 2 * KVH) * D], "qkv"),
    };
  }

  /**
   * Loads config.json and the safetensors weights (single file or sharded) from `files`, checking
   * every tensor's presence, shape, dtype and size against the config and the adapter before
   * anything is allocated; the tensors then stream to the GPU as raw bytes (model/load_weights.ts).
   *
   * @example Loading from a directory
   * ```ts ignore
   * const model = await Llama.load(gpu, directoryFiles("models/demo-base"));
   * ```
   */
  static async load(gpu: Gpu, files: ModelFiles, options: LoadOptions = {}): Promise<Llama> {
    const configText = await files.text("config.json");
    if (configText === null) {
      throw new FormatError(
        `${files.name}/config.json`,
        "the file does not exist",
        "is this a Hugging Face model directory?",
      );
    }
    let configJson: unknown;
    try {
      configJson = JSON.parse(configText);
    } catch (e) {
      throw new FormatError(
        `${files.name}/config.json`,
        `malformed JSON (${(e as Error).message})`,
        "fix or regenerate the file",
      );
    }
    const config = parseLlamaConfig(configJson, `${files.name}/config.json`);
    const checkpoint = await openCheckpointTensors((file) => files.source(file));
    // Every tensor is checked before anything is allocated; then they stream in as raw bytes.
    const plans = planWeights(
      gpu,
      config,
      checkpoint,
      options.dtype ?? "stored",
      files.name,
      options.maxBindingBytes,
    );
    if (options.memoryBytes !== undefined) {
      const positions = options.maxLength ?? defaultMaxLength(config);
      checkMemory(
        config,
        plans,
        positions,
        options.memoryBytes,
        files.name,
        (dtype) => planWeights(gpu, config, checkpoint, dtype, files.name, options.maxBindingBytes),
      );
    }
    const weights = await uploadWeights(gpu, checkpoint, plans, options.onProgress);
    return new Llama(gpu, config, weights, options);
  }

  /**
   * A KV cache for this model (capacity defaults to {@linkcode Llama.maxLength}).
   * @internal
   */
  createCache(maxLength: number = this.maxLength): KvCache {
    const c = this.config;
    return new KvCache(this.gpu, {
      layers: c.numLayers,
      kvHeads: c.numKvHeads,
      headDim: c.headDim,
      maxLength,
    });
  }

  /** A (T, ...) view of a scratch tensor, cached so bind groups are reused. */
  #rows(t: Tensor, rows: number): Tensor {
    const key = `${t.label}:${rows}`;
    let v = this.#views.get(key);
    if (!v) {
      v = t.view([rows, t.shape[1]], `${t.label}[${rows}]`);
      this.#views.set(key, v);
    }
    return v;
  }

  // --------------------------------------------------------------------------------------------
  // Forward

  /**
   * Records one forward pass of T rows at the position `args.position` reads on the GPU: writes
   * their K/V into the cache and their logits into `args.logits`. Nothing is read back.
   * @internal
   */
  forward(step: Step, args: ForwardArgs): void {
    const c = this.config;
    const T = args.rows;
    if (!Number.isInteger(T) || T < 1 || T > this.maxRows) {
      throw new RangeError(`A forward takes 1..${this.maxRows} rows, not ${T}`);
    }
    const s = this.#scratch;
    const x = this.#rows(s.x, T), xn = this.#rows(s.xn, T);
    const q = this.#rows(s.q, T), qr = this.#rows(s.qr, T), k = this.#rows(s.k, T), v = this.#rows(s.v, T);
    const att = this.#rows(s.att, T), proj = this.#rows(s.proj, T);
    const gate = this.#rows(s.gate, T), up = this.#rows(s.up, T), hidden = this.#rows(s.hidden, T);
    const { state, slot } = args.position;
    const heads = c.numHeads, kvHeads = c.numKvHeads, headDim = c.headDim;
    const rope = { baseSlot: slot, theta: c.ropeTheta, scale: c.ropeScaling?.factor ?? 1, rows: T, headDim };

    // 1. Token embeddings: x = embed[tokens] (T, C).
    embeddingForward(step, this.embed, args.tokens, x, { tokenOffset: args.tokenOffset, rows: T });

    for (let l = 0; l < c.numLayers; l++) {
      const w = this.layers[l];
      if (this.forwardPath === "fused") {
        // The same layer in 6 dispatches: each RMSNorm folded into the product after it, q/k/v
        // as one product, RoPE and the KV store as one kernel, gate/up as one product with
        // silu·mul in its epilogue, the residual adds in the o and down products.
        const eps = c.rmsNormEps;
        const qkv = this.#rows(s.qkv, T);
        matmulGroupsForward(step, x, [w.q, w.k, w.v], qkv, { norm: { weight: w.inputNorm, eps } });
        ropeQkvForward(step, qkv, qr, args.cache.k[l], args.cache.v[l], state, {
          rows: T,
          heads,
          kvHeads,
          headDim,
          baseSlot: slot,
          theta: c.ropeTheta,
          scale: rope.scale,
          relPositions: args.relPositions,
        });
        attentionForward(step, qr, args.cache.k[l], args.cache.v[l], att, state, {
          baseSlot: slot,
          rows: T,
          heads,
          kvHeads,
          headDim,
          mask: args.mask,
        });
        matmulForward(step, att, w.o, x, { accumulate: true }); // x += o(att)
        matmulGroupsForward(step, x, [w.gate, w.up], hidden, {
          norm: { weight: w.postNorm, eps },
          glu: true,
        });
        matmulForward(step, hidden, w.down, x, { accumulate: true }); // x += down(hidden)
        continue;
      }
      // 2. Attention block: xn = RMSNorm(x); q, k, v = xn·Wqᵀ, xn·Wkᵀ, xn·Wvᵀ.
      rmsNormForward(step, x, w.inputNorm, xn, c.rmsNormEps);
      matmulForward(step, xn, w.q, q);
      matmulForward(step, xn, w.k, k);
      matmulForward(step, xn, w.v, v);
      // 3. RoPE at positions base+t; rotated keys and the values go straight into the cache rows.
      ropeForward(step, q, qr, state, { ...rope, heads, relPositions: args.relPositions });
      ropeForward(step, k, args.cache.k[l], state, {
        ...rope,
        heads: kvHeads,
        relPositions: args.relPositions,
        toCache: true,
      });
      storeRowsForward(step, v, args.cache.v[l], state, { baseSlot: slot, rows: T });
      // 4. Causal attention over cache rows 0..base+t (GQA), then the output projection.
      attentionForward(step, qr, args.cache.k[l], args.cache.v[l], att, state, {
        baseSlot: slot,
        rows: T,
        heads,
        kvHeads,
        headDim,
        mask: args.mask,
      });
      matmulForward(step, att, w.o, proj);
      // 5. Residual: x += attention output.
      addInPlace(step, x, proj);
      // 6. MLP block: x += down(silu(gate(xn)) * up(xn)), xn = RMSNorm(x).
      rmsNormForward(step, x, w.postNorm, xn, c.rmsNormEps);
      matmulForward(step, xn, w.gate, gate);
      matmulForward(step, xn, w.up, up);
      siluMulForward(step, gate, up, hidden);
      matmulForward(step, hidden, w.down, proj);
      addInPlace(step, x, proj);
    }

    // 7. Final norm and the classifier; only the last row when the caller needs just the next token.
    if (this.forwardPath === "fused") {
      // The final norm folded into the classifier.
      const norm = { weight: this.norm, eps: c.rmsNormEps };
      if (args.lastOnly) {
        const rowBytes = c.hiddenSize * 4;
        step.copy(s.x, (T - 1) * rowBytes, s.last, 0, rowBytes);
        matmulForward(step, s.last, this.lmHead, args.logits, { norm });
      } else {
        matmulForward(step, x, this.lmHead, args.logits, { norm });
      }
      return;
    }
    rmsNormForward(step, x, this.norm, xn, c.rmsNormEps);
    if (args.lastOnly) {
      const rowBytes = c.hiddenSize * 4;
      step.copy(s.xn, (T - 1) * rowBytes, s.last, 0, rowBytes);
      matmulForward(step, s.last, this.lmHead, args.logits);
    } else {
      matmulForward(step, xn, this.lmHead, args.logits);
    }
  }

  /**
   * Records a greedy pick: `out[outOffset + t] = argmax(logits[t])` for each row of `logits`.
   *
   * @param step the step to record into
   * @param logits (T, V) logits
   * @param out u32 token buffer
   * @param outOffset first index to write
   * @internal
   */
  argmax(step: Step, logits: Tensor, out: Tensor, outOffset: number): void {
    argmaxForward(step, logits, out, { outOffset });
  }

  /** Frees weights, scratch and views. */
  destroy(): void {
    for (const t of this.weights.values()) t.destroy();
    for (const parts of this.splitWeights.values()) for (const t of parts) t.destroy();
    for (const t of Object.values(this.#scratch)) t.destroy();
  }
}
