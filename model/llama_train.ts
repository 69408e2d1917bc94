/**
 * Training mode for {@linkcode Llama}: a forward over a whole sequence (positions 0..T−1) that saves
 * what the backward needs, records the backward on a {@linkcode Tape}, and accumulates parameter
 * gradients (+=) into one buffer per weight, named like the weight.
 *
 * Forward per layer, with the saved tensors (why each is kept):
 *   xn1 = RMSNorm(x)            x: rmsNorm backward; xn1: dW of q/k/v
 *   q, k, v = xn1·Wᵀ            -
 *   qr, kr = RoPE(q), RoPE(k)   qr, kr: attention backward
 *   att = attention(qr, kr, v)  att: o_proj dW and attention backward (D_i trick); v: attention bwd
 *   xm = x + att·Woᵀ            xm: post-norm backward
 *   xn2 = RMSNorm(xm)           xn2: dW of gate/up
 *   h = silu(xn2·Wgᵀ)·(xn2·Wuᵀ) gate, up: silu-mul backward; h: down dW
 *   x' = xm + h·Wdᵀ             -
 * Dimension letters as in llama.ts.
 *
 * @module
 */

import { type Step, type Tape, Tensor } from "../core/mod.ts";
import { addForward } from "../kernels/add.ts";
import { attentionForward } from "../kernels/attention.ts";
import { attentionBackward } from "../kernels/attention_backward.ts";
import { embeddingForward } from "../kernels/embedding.ts";
import { embeddingBackward } from "../kernels/embedding_backward.ts";
import { fillForward } from "../kernels/fill.ts";
import { matmulForward, matmulNN, matmulTN } from "../kernels/matmul.ts";
import { rmsNormForward } from "../kernels/rms_norm.ts";
import { rmsNormBackward } from "../kernels/rms_norm_backward.ts";
import { ropeForward } from "../kernels/rope.ts";
import { ropeBackward } from "../kernels/rope_backward.ts";
import { siluMulForward } from "../kernels/silu_mul.ts";
import { siluMulBackward } from "../kernels/silu_mul_backward.ts";
import type { Llama } from "./llama.ts";

/** Saved activations of one layer, each sized for the longest sequence. */
interface LayerActs {
  x: Tensor; // (T, C) layer input (residual stream)
  xn1: Tensor; // (T, C)
  q: Tensor; // (T, H*D)
  k: Tensor; // (T, KVH*D)
  v: Tensor; // (T, KVH*D)
  qr: Tensor; // (T, H*D)
  kr: Tensor; // (T, KVH*D)
  att: Tensor; // (T, H*D)
  xm: Tensor; // (T, C) after the attention residual
  xn2: Tensor; // (T, C)
  gate: Tensor; // (T, I)
  up: Tensor; // (T, I)
  h: Tensor; // (T, I)
}

/** Gradient scratch shared by all layers (the backward runs one layer at a time). */
interface GradScratch {
  dx: Tensor; // (T, C) gradient of the residual stream
  dxn: Tensor; // (T, C)
  dProj: Tensor; // (T, C) unused spare for MLP/attention outputs
  dh: Tensor; // (T, I)
  dGate: Tensor; // (T, I)
  dUp: Tensor; // (T, I)
  dAtt: Tensor; // (T, H*D)
  dqr: Tensor; // (T, H*D)
  dkr: Tensor; // (T, KVH*D)
  dq: Tensor; // (T, H*D)
  dk: Tensor; // (T, KVH*D)
  dv: Tensor; // (T, KVH*D)
}

/**
 * A Llama with gradient buffers and saved activations for sequences up to `maxSeq` tokens.
 *
 * @example One AR training step (the loss kernel fills dLogits)
 * ```ts ignore
 * const trainable = new TrainableLlama(model, 256);
 * const tape = new Tape();
 * const step = new Step(gpu, "train");
 * trainable.zeroGrads(step);
 * trainable.forward(step, { tokens, tokenOffset: 0, rows: T, logits }, tape);
 * crossEntropyLoss(step, logits, labels, trainable.dLogits(T), loss, { scale: 1 / (T - 1) });
 * trainable.backwardFromLogits(step, tape, T);
 * step.submit();
 * ```
 */
export class TrainableLlama {
  /** The model whose weights are trained in place. */
  readonly model: Llama;
  /** Longest sequence a forward takes. */
  readonly maxSeq: number;
  /** Gradient per weight name (lm_head's goes to the embedding's when tied). */
  readonly grads: Map<string, Tensor> = new Map();
  readonly #acts: LayerActs[] = [];
  readonly #xFinal: Tensor; // (T, C) input of the final norm
  readonly #xnF: Tensor; // (T, C) input of the classifier
  readonly #dLogits: Tensor; // (T, V)
  readonly #g: GradScratch;
  readonly #zero: Tensor; // u32 [0]: base position 0 for rope/attention
  readonly #views = new Map<Tensor, Map<number, Tensor>>();

  /**
   * Allocates gradients (zeroed by WebGPU) and activation buffers.
   *
   * @param model the model
   * @param maxSeq longest training sequence
   */
  constructor(model: Llama, maxSeq: number) {
    if (model.splitWeights.size > 0) {
      throw new TypeError(
        `Training needs every weight in one buffer, but ${[...model.splitWeights.keys()].join(", ")} ` +
          "is split over storage bindings; train on an adapter with larger bindings, or a smaller vocabulary",
      );
    }
    for (const [name, w] of model.weights) {
      if (w.dtype !== "f32") {
        throw new TypeError(
          `Training needs f32 weights, but "${name}" is ${w.dtype}; load the model with dtype "f32"`,
        );
      }
    }
    this.model = model;
    this.maxSeq = maxSeq;
    const gpu = model.gpu;
    const c = model.config;
    for (const [name, w] of model.weights) this.grads.set(name, new Tensor(gpu, w.shape, "f32", `d ${name}`));
    const { hiddenSize: C, numHeads: H, numKvHeads: KVH, headDim: D, intermediateSize: I, vocabSize: V } = c;
    const T = maxSeq;
    const f = (shape: number[], label: string) => new Tensor(gpu, shape, "f32", label);
    for (let l = 0; l < c.numLayers; l++) {
      this.#acts.push({
        x: f([T, C], `x.${l}`),
        xn1: f([T, C], `xn1.${l}`),
        q: f([T, H * D], `q.${l}`),
        k: f([T, KVH * D], `k.${l}`),
        v: f([T, KVH * D], `v.${l}`),
        qr: f([T, H * D], `qr.${l}`),
        kr: f([T, KVH * D], `kr.${l}`),
        att: f([T, H * D], `att.${l}`),
        xm: f([T, C], `xm.${l}`),
        xn2: f([T, C], `xn2.${l}`),
        gate: f([T, I], `gate.${l}`),
        up: f([T, I], `up.${l}`),
        h: f([T, I], `h.${l}`),
      });
    }
    this.#xFinal = f([T, C], "x_final");
    this.#xnF = f([T, C], "xn_final");
    this.#dLogits = f([T, V], "d logits");
    this.#g = {
      dx: f([T, C], "dx"),
      dxn: f([T, C], "dxn"),
      dProj: f([T, C], "dproj"),
      dh: f([T, I], "dh"),
      dGate: f([T, I], "dgate"),
      dUp: f([T, I], "dup"),
      dAtt: f([T, H * D], "datt"),
      dqr: f([T, H * D], "dqr"),
      dkr: f([T, KVH * D], "dkr"),
      dq: f([T, H * D], "dq"),
      dk: f([T, KVH * D], "dk"),
      dv: f([T, KVH * D], "dv"),
    };
    this.#zero = Tensor.from(gpu, new Uint32Array([0]), [1], "position 0");
  }

  /** A (rows, cols) view of the first rows of a 2-D buffer, cached so bind groups are reused. */
  #r(t: Tensor, rows: number): Tensor {
    let byRows = this.#views.get(t);
    if (!byRows) this.#views.set(t, byRows = new Map());
    let v = byRows.get(rows);
    if (!v) byRows.set(rows, v = t.view([rows, t.shape[1]], `${t.label}[${rows}]`));
    return v;
  }

  /** The (T, V) gradient buffer of the logits, which the loss kernels fill. */
  dLogits(rows: number): Tensor {
    return this.#r(this.#dLogits, rows);
  }

  /** Records zeroing of every gradient buffer. */
  zeroGrads(step: Step): void {
    for (const g of this.grads.values()) fillForward(step, g, 0);
  }

  /** The gradient of the classifier weight (the embedding's when tied). */
  #lmHeadGrad(): Tensor {
    return this.grads.get(
      this.model.config.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight",
    )!;
  }

  /**
   * Records a forward over `rows` tokens at positions 0..rows−1 into `logits` (rows, V). With a
   * tape, records the backward of every op; without, it is an inference-only forward (the
   * consistency loss's detached target). A packed sequence (train/jacobi_forcing.ts) brings its
   * own `positions` (u32 per row) and attention `mask` (u32 (rows, ceil(rows/32)) bits, narrowing
   * the causal rule), used by the forward and the backward alike.
   */
  forward(
    step: Step,
    args: {
      tokens: Tensor;
      tokenOffset: number;
      rows: number;
      logits: Tensor;
      positions?: Tensor;
      mask?: Tensor;
    },
    tape?: Tape,
  ): void {
    const T = args.rows;
    if (!Number.isInteger(T) || T < 1 || T > this.maxSeq) {
      throw new RangeError(`A training sequence has 1..${this.maxSeq} tokens, not ${T}`);
    }
    const m = this.model, c = m.config, g = this.#g;
    const r = (t: Tensor) => this.#r(t, T);
    const state = this.#zero;
    const rope = {
      baseSlot: 0,
      theta: c.ropeTheta,
      scale: c.ropeScaling?.factor ?? 1,
      rows: T,
      headDim: c.headDim,
      ...(args.positions ? { relPositions: args.positions } : {}),
    };
    const attn = {
      rows: T,
      heads: c.numHeads,
      kvHeads: c.numKvHeads,
      headDim: c.headDim,
      ...(args.mask ? { mask: args.mask } : {}),
    };
    const eps = c.rmsNormEps;
    const grad = (name: string) => this.grads.get(name)!;

    // Embedding → x of layer 0.
    embeddingForward(step, m.embed, args.tokens, r(this.#acts[0].x), {
      tokenOffset: args.tokenOffset,
      rows: T,
    });
    tape?.record("embedding", (s) => {
      embeddingBackward(s, args.tokens, r(g.dx), grad("model.embed_tokens.weight"), {
        tokenOffset: args.tokenOffset,
        rows: T,
      });
    });

    for (let l = 0; l < c.numLayers; l++) {
      const a = this.#acts[l], w = m.layers[l], p = `model.layers.${l}.`;
      const xNext = l + 1 < c.numLayers ? r(this.#acts[l + 1].x) : r(this.#xFinal);
      // Attention block.
      rmsNormForward(step, r(a.x), w.inputNorm, r(a.xn1), eps);
      matmulForward(step, r(a.xn1), w.q, r(a.q));
      matmulForward(step, r(a.xn1), w.k, r(a.k));
      matmulForward(step, r(a.xn1), w.v, r(a.v));
      ropeForward(step, r(a.q), r(a.qr), state, { ...rope, heads: c.numHeads });
      ropeForward(step, r(a.k), r(a.kr), state, { ...rope, heads: c.numKvHeads });
      attentionForward(step, r(a.qr), r(a.kr), r(a.v), r(a.att), state, { ...attn, baseSlot: 0 });
      matmulForward(step, r(a.att), w.o, r(g.dProj)); // dProj doubles as forward scratch here
      addForward(step, r(a.x), r(g.dProj), r(a.xm));
      // MLP block.
      rmsNormForward(step, r(a.xm), w.postNorm, r(a.xn2), eps);
      matmulForward(step, r(a.xn2), w.gate, r(a.gate));
      matmulForward(step, r(a.xn2), w.up, r(a.up));
      siluMulForward(step, r(a.gate), r(a.up), r(a.h));
      matmulForward(step, r(a.h), w.down, r(g.dProj));
      addForward(step, r(a.xm), r(g.dProj), xNext);

      // Backward of the layer, given dx = dL/dx' in g.dx; leaves dL/dx (layer input) in g.dx.
      tape?.record(`layer ${l}`, (s) => {
        const dx = r(g.dx), dxn = r(g.dxn);
        // x' = xm + h·Wdᵀ: dh = dx·Wd; dWd += dxᵀ·h.
        matmulNN(s, dx, w.down, r(g.dh));
        matmulTN(s, dx, r(a.h), grad(`${p}mlp.down_proj.weight`), { accumulate: true });
        siluMulBackward(s, r(a.gate), r(a.up), r(g.dh), r(g.dGate), r(g.dUp));
        // gate/up = xn2·Wᵀ: dxn2 = dGate·Wg + dUp·Wu; dWg += dGateᵀ·xn2; dWu += dUpᵀ·xn2.
        matmulNN(s, r(g.dGate), w.gate, dxn);
        matmulNN(s, r(g.dUp), w.up, dxn, { accumulate: true });
        matmulTN(s, r(g.dGate), r(a.xn2), grad(`${p}mlp.gate_proj.weight`), { accumulate: true });
        matmulTN(s, r(g.dUp), r(a.xn2), grad(`${p}mlp.up_proj.weight`), { accumulate: true });
        // xn2 = RMSNorm(xm); the residual path adds dx itself: dxm = dx + norm backward.
        rmsNormBackward(s, r(a.xm), w.postNorm, dxn, dx, grad(`${p}post_attention_layernorm.weight`), eps, {
          accumulate: true,
        });
        // xm = x + att·Woᵀ: datt = dxm·Wo; dWo += dxmᵀ·att.
        matmulNN(s, dx, w.o, r(g.dAtt));
        matmulTN(s, dx, r(a.att), grad(`${p}self_attn.o_proj.weight`), { accumulate: true });
        attentionBackward(
          s,
          r(a.qr),
          r(a.kr),
          r(a.v),
          r(a.att),
          r(g.dAtt),
          r(g.dqr),
          r(g.dkr),
          r(g.dv),
          attn,
        );
        ropeBackward(s, r(g.dqr), r(g.dq), state, { ...rope, heads: c.numHeads });
        ropeBackward(s, r(g.dkr), r(g.dk), state, { ...rope, heads: c.numKvHeads });
        // q/k/v = xn1·Wᵀ.
        matmulNN(s, r(g.dq), w.q, dxn);
        matmulNN(s, r(g.dk), w.k, dxn, { accumulate: true });
        matmulNN(s, r(g.dv), w.v, dxn, { accumulate: true });
        matmulTN(s, r(g.dq), r(a.xn1), grad(`${p}self_attn.q_proj.weight`), { accumulate: true });
        matmulTN(s, r(g.dk), r(a.xn1), grad(`${p}self_attn.k_proj.weight`), { accumulate: true });
        matmulTN(s, r(g.dv), r(a.xn1), grad(`${p}self_attn.v_proj.weight`), { accumulate: true });
        rmsNormBackward(s, r(a.x), w.inputNorm, dxn, dx, grad(`${p}input_layernorm.weight`), eps, {
          accumulate: true,
        });
      });
    }

    // Final norm and classifier.
    rmsNormForward(step, r(this.#xFinal), m.norm, r(this.#xnF), eps);
    matmulForward(step, r(this.#xnF), m.lmHead, args.logits);
    tape?.record("head", (s) => {
      const dLogits = this.dLogits(T);
      matmulNN(s, dLogits, m.lmHead as Tensor, r(g.dxn)); // whole: split models are refused above
      matmulTN(s, dLogits, r(this.#xnF), this.#lmHeadGrad(), { accumulate: true });
      rmsNormBackward(s, r(this.#xFinal), m.norm, r(g.dxn), r(g.dx), grad("model.norm.weight"), eps);
    });
  }

  /** Frees gradients and activations (not the model). */
  destroy(): void {
    for (const t of this.grads.values()) t.destroy();
    for (const a of this.#acts) for (const t of Object.values(a)) t.destroy();
    for (const t of Object.values(this.#g)) t.destroy();
    this.#xFinal.destroy();
    this.#xnF.destroy();
    this.#dLogits.destroy();
    this.#zero.destroy();
  }
}
