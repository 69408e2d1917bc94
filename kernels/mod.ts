/**
 * The forward kernels of a Llama layer: each file holds one kernel's spec (bindings, parameters,
 * WGSL), its recorder `xxxForward(step, ...)` and an independent CPU reference `xxxReference`.
 *
 * Dimension letters: T rows (tokens), C channels, H heads, KVH key/value heads, D head size,
 * V vocabulary, I MLP width, S KV-cache rows.
 *
 * | kernel | computes |
 * | --- | --- |
 * | `embeddingForward` | `out[t] = table[tokens[tokenOffset + t]]` (ids ≥ V give zero rows) |
 * | `rmsNormForward` | `out = x / sqrt(mean(x²) + eps) * weight` per row |
 * | `matmulForward` | `y = x · wᵀ` |
 * | `ropeForward` | rotary embedding at GPU-resident positions, optionally straight into a KV cache |
 * | `storeRowsForward` | `dst[base + t] = src[t]` at a GPU-resident base (values into the cache) |
 * | `attentionForward` | causal or masked grouped-query attention over the KV cache |
 * | `addForward`, `addInPlace` | residual adds |
 * | `siluMulForward` | `silu(gate) * up`, the gated MLP product |
 * | `softmaxForward` | row softmax |
 * | `argmaxForward` | per-row argmax (lowest index on ties), kept on the GPU |
 * | `sampleForward` | per-row filtered distribution (top-k, T, top-p) and a keyed draw, on the GPU |
 * | `matmulGroupsForward` | 2-3 products sharing an input in one dispatch (norm prologue, silu·mul epilogue) |
 * | `ropeQkvForward` | RoPE of q and k plus the KV-cache store in one dispatch |
 *
 * Kernels that need the number of cached tokens read it on the GPU from `state[baseSlot]`, so
 * decoding loops can run many steps without a readback.
 *
 * @example One decoder layer's attention half, recorded into one step
 * ```ts ignore
 * import { Step } from "../core/mod.ts";
 * import { attentionForward, matmulForward, rmsNormForward, ropeForward, storeRowsForward } from "./mod.ts";
 * const step = new Step(gpu, "layer 0");
 * rmsNormForward(step, x, inputNorm, xn, 1e-5);
 * matmulForward(step, xn, wq, q);
 * matmulForward(step, xn, wk, k);
 * matmulForward(step, xn, wv, v);
 * const rope = { baseSlot: 0, theta: 10000, rows: T, headDim: D };
 * ropeForward(step, q, qRot, state, { ...rope, heads: H });
 * ropeForward(step, k, kCache, state, { ...rope, heads: KVH, toCache: true });
 * storeRowsForward(step, v, vCache, state, { baseSlot: 0, rows: T });
 * attentionForward(step, qRot, kCache, vCache, att, state, { baseSlot: 0, rows: T, heads: H, kvHeads: KVH, headDim: D });
 * step.submit();
 * ```
 *
 * @module
 */
export * from "./add.ts";
export * from "./matmul.ts";
export * from "./embedding.ts";
export * from "./rms_norm.ts";
export * from "./rope.ts";
export * from "./store_rows.ts";
export * from "./attention.ts";
export * from "./silu_mul.ts";
export * from "./softmax.ts";
export * from "./argmax.ts";
export * from "./fill.ts";
export * from "./embedding_backward.ts";
export * from "./rms_norm_backward.ts";
export * from "./rope_backward.ts";
export * from "./attention_backward.ts";
export * from "./silu_mul_backward.ts";
export * from "./cross_entropy.ts";
export * from "./adamw.ts";
export * from "./grad_norm.ts";
export * from "./jacobi_accept.ts";
export * from "./lookahead.ts";
export * from "./decode_state.ts";
export * from "./convert.ts";
export * from "./quantize.ts";
export * from "./rope_qkv.ts";
export * from "./sample.ts";
export * from "./jacobi_sampled.ts";
export * from "./jacobi_recycle.ts";
