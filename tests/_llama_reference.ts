/**
 * A plain-TypeScript Llama forward pass with a KV cache, written as loops in f64 and independent of
 * the WGSL kernels: the reference the GPU model is tested against, and (being f64) the function
 * whose finite differences check the GPU gradients.
 *
 * @module
 */

import type { LlamaConfig } from "../model/config.ts";

/** Weights by checkpoint name, f32. */
export type RefWeights = Map<string, Float32Array | Float64Array>;

/** A CPU KV cache: per layer, rows of KVH*D floats. */
export interface RefCache {
  k: Float64Array[][];
  v: Float64Array[][];
}

/** An empty cache for `cfg`. */
export function refCache(cfg: LlamaConfig): RefCache {
  return {
    k: Array.from({ length: cfg.numLayers }, () => []),
    v: Array.from({ length: cfg.numLayers }, () => []),
  };
}

function matvec(w: ArrayLike<number>, x: ArrayLike<number>, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    for (let c = 0; c < cols; c++) acc += w[r * cols + c] * x[c];
    out[r] = acc;
  }
  return out;
}

function rmsnorm(x: Float64Array, w: ArrayLike<number>, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const scale = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * scale * w[i]);
}

/** Hugging Face "rotate half" RoPE applied to every head of `x` (nHeads * D) at position `pos`. */
function rope(
  x: Float64Array,
  nHeads: number,
  D: number,
  pos: number,
  theta: number,
  scale: number,
): Float64Array {
  const out = new Float64Array(x.length);
  const half = D / 2;
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      const freq = Math.pow(theta, (-2 * i) / D);
      const angle = (pos / scale) * freq;
      const c = Math.cos(angle), s = Math.sin(angle);
      const a = x[h * D + i], b = x[h * D + i + half];
      out[h * D + i] = a * c - b * s;
      out[h * D + i + half] = b * c + a * s;
    }
  }
  return out;
}

/**
 * Runs `tokens` at positions cache-length.. through the model, appending to the cache, and returns
 * the logits of every row.
 */
export function refForward(
  cfg: LlamaConfig,
  w: RefWeights,
  cache: RefCache,
  tokens: number[],
): Float64Array[] {
  const { hiddenSize: C, numHeads: H, numKvHeads: KVH, headDim: D, intermediateSize: I, vocabSize: V } = cfg;
  const g = (n: string) => {
    const t = w.get(n);
    if (!t) throw new Error(`reference: missing ${n}`);
    return t;
  };
  const scale = cfg.ropeScaling?.factor ?? 1;
  const out: Float64Array[] = [];
  for (const token of tokens) {
    const pos = cache.k[0].length;
    let x = Float64Array.from(g("model.embed_tokens.weight").subarray(token * C, (token + 1) * C));
    for (let l = 0; l < cfg.numLayers; l++) {
      const p = `model.layers.${l}.`;
      const xn = rmsnorm(x, g(`${p}input_layernorm.weight`), cfg.rmsNormEps);
      const q = rope(matvec(g(`${p}self_attn.q_proj.weight`), xn, H * D, C), H, D, pos, cfg.ropeTheta, scale);
      const k = rope(
        matvec(g(`${p}self_attn.k_proj.weight`), xn, KVH * D, C),
        KVH,
        D,
        pos,
        cfg.ropeTheta,
        scale,
      );
      const v = matvec(g(`${p}self_attn.v_proj.weight`), xn, KVH * D, C);
      cache.k[l].push(k);
      cache.v[l].push(v);
      const att = new Float64Array(H * D);
      for (let h = 0; h < H; h++) {
        const kvh = Math.floor(h / (H / KVH));
        const scores = cache.k[l].map((krow) => {
          let s = 0;
          for (let d = 0; d < D; d++) s += q[h * D + d] * krow[kvh * D + d];
          return s / Math.sqrt(D);
        });
        const max = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - max));
        const sum = e.reduce((a, b) => a + b, 0);
        for (let j = 0; j < e.length; j++) {
          for (let d = 0; d < D; d++) att[h * D + d] += (e[j] / sum) * cache.v[l][j][kvh * D + d];
        }
      }
      const o = matvec(g(`${p}self_attn.o_proj.weight`), att, C, H * D);
      x = x.map((v, i) => v + o[i]);
      const xn2 = rmsnorm(x, g(`${p}post_attention_layernorm.weight`), cfg.rmsNormEps);
      const gate = matvec(g(`${p}mlp.gate_proj.weight`), xn2, I, C);
      const up = matvec(g(`${p}mlp.up_proj.weight`), xn2, I, C);
      const hidden = gate.map((a, i) => (a / (1 + Math.exp(-a))) * up[i]);
      const down = matvec(g(`${p}mlp.down_proj.weight`), hidden, C, I);
      x = x.map((v, i) => v + down[i]);
    }
    const xf = rmsnorm(x, g("model.norm.weight"), cfg.rmsNormEps);
    const head = cfg.tieWordEmbeddings ? g("model.embed_tokens.weight") : g("lm_head.weight");
    out.push(matvec(head, xf, V, C));
  }
  return out;
}
