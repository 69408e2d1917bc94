/**
 * One training step on the GPU, as named calls (train/trainer.ts drives them):
 *
 * 1. `recordSample` per sample of the batch (gradient accumulation): zero the gradients on the
 *    first; upload the sample's sequences; AR loss forward + backward; for a CLLM sample, a
 *    detached forward on the fixed point and a forward + backward on one random non-final Jacobi
 *    state with the soft cross-entropy from the first wrong token on (train/losses.ts).
 * 2. `recordUpdate`: global gradient norm → clip scale, then AdamW (PyTorch's formula) at the
 *    schedule's learning rate.
 *
 * Nothing is read back: the losses accumulate on the GPU until the trainer reads them.
 *
 * @module
 */

import { type SeededRandom, type Step, Tensor } from "../core/mod.ts";
import { adamwUpdate } from "../kernels/adamw.ts";
import { fillForward } from "../kernels/fill.ts";
import { clipScale, sumSquares } from "../kernels/grad_norm.ts";
import type { Llama } from "../model/llama.ts";
import { TrainableLlama } from "../model/llama_train.ts";
import {
  DEFAULT_NOISE,
  type JacobiForcingSample,
  type NoiseSchedule,
  packJacobiForcing,
} from "./jacobi_forcing.ts";
import {
  arLabels,
  arLossStep,
  consistencyLossStep,
  consistencyRows,
  IGNORE,
  jacobiForcingLossStep,
} from "./losses.ts";

/**
 * One training item: a CLLM trajectory sample (one block), a Jacobi Forcing sample (a prompt and
 * all its blocks, packed at record time: train/jacobi_forcing.ts), or a plain token sequence for AR
 * training.
 */
export type TrainItem =
  | { kind: "cllm"; context: number[]; states: number[][]; fixedPoint: number[]; labels?: number[] }
  | ({ kind: "jacobi-forcing" } & JacobiForcingSample)
  | { kind: "ar"; tokens: number[]; weight?: number };

/** The loss settings of a sample. */
export interface SampleLosses {
  /** AR loss weight of CLLM samples (AR items carry their own; default 10, as the reference). */
  arWeight: number;
  /** Label smoothing of the AR loss. */
  labelSmoothing: number;
  /** Consistency loss: "global" (state → fixed point) or "local" (state → next state). */
  consistency: "global" | "local";
  /** AR targets of CLLM samples: the teacher (context ⊕ fixed point) or gold labels. */
  arTargets: "teacher" | "gold";
  /** EOS ids (AR labels after the first EOS are masked). */
  eosIds: readonly number[];
  /** Noise schedule of Jacobi Forcing samples (default {@linkcode DEFAULT_NOISE}). */
  noise?: NoiseSchedule;
  /** Weight of the progressive consistency loss of Jacobi Forcing samples (default 1). */
  consistencyWeight?: number;
}

/** The optimizer settings of an update. */
export interface UpdateSettings {
  /** Learning rate of this step. */
  lr: number;
  /** AdamW step number t (1-based). */
  t: number;
  /** Global gradient-norm clip. */
  maxGradNorm: number;
  /** AdamW weight decay. */
  weightDecay: number;
}

/** Rows a recorded sample ran with gradient, and its estimated FLOPs. */
export interface SampleWork {
  /** Forward rows with gradient or detached. */
  rows: number;
  /** 6 × params per gradient row, 2 × params per detached row. */
  flops: number;
}

/**
 * The GPU state of training one model: gradients, AdamW moments, loss accumulators and the
 * sample buffers, sized for sequences of up to `maxSeq` tokens.
 *
 * @example One step of batch 4
 * ```ts ignore
 * const ts = new TrainingStep(model, maxSeq);
 * for (let b = 0; b < 4; b++) {
 *   const step = new Step(gpu, "sample");
 *   ts.recordSample(step, items[b], b === 0, losses, rng);
 *   step.submit();
 * }
 * const opt = new Step(gpu, "optimizer");
 * ts.recordUpdate(opt, { lr: 1e-4, t: 1, maxGradNorm: 1, weightDecay: 0 });
 * opt.submit();
 * ```
 */
export class TrainingStep {
  /** The model being trained (its weights are updated in place). */
  readonly model: Llama;
  /** Longest sequence a sample may have. */
  readonly maxSeq: number;
  /** Weight names, in checkpoint order. */
  readonly names: string[];
  /** AdamW first moments by weight name. */
  readonly m: Map<string, Tensor>;
  /** AdamW second moments by weight name. */
  readonly v: Map<string, Tensor>;
  /** Loss accumulators (train/losses.ts LOSS_SLOTS). */
  readonly loss: Tensor;
  /** Parameter count (for FLOP estimates). */
  readonly params: number;
  readonly #trainable: TrainableLlama;
  readonly #norm: Tensor; // [0] sum of squares, [1] clip scale, [2] norm
  readonly #tokens: Tensor; // three sequences: AR/goal at 0 and maxSeq, state at 2·maxSeq
  readonly #labels: Tensor;
  readonly #buffers: { tokens: Tensor; labels: Tensor; logits: Tensor; targetLogits: Tensor; loss: Tensor };
  #packed: { positions: Tensor; mask: Tensor; studentLogits: Tensor } | null = null;

  /** Allocates the training state of `model` for sequences of up to `maxSeq` tokens. */
  constructor(model: Llama, maxSeq: number) {
    const gpu = model.gpu;
    this.model = model;
    this.maxSeq = maxSeq;
    this.names = [...model.weights.keys()];
    const moments = (which: string) =>
      new Map(
        this.names.map((n) => [n, new Tensor(gpu, model.weights.get(n)!.shape, "f32", `adam ${which} ${n}`)]),
      );
    this.m = moments("m");
    this.v = moments("v");
    this.params = this.names.reduce((a, n) => a + model.weights.get(n)!.size, 0);
    this.#trainable = new TrainableLlama(model, maxSeq);
    this.loss = new Tensor(gpu, [4], "f32", "loss accumulators");
    this.#norm = new Tensor(gpu, [4], "f32", "grad norm");
    this.#tokens = new Tensor(gpu, [3 * maxSeq], "u32", "train tokens");
    this.#labels = new Tensor(gpu, [maxSeq], "u32", "train labels");
    const V = model.config.vocabSize;
    this.#buffers = {
      tokens: this.#tokens,
      labels: this.#labels,
      logits: new Tensor(gpu, [maxSeq, V], "f32", "train logits"),
      targetLogits: new Tensor(gpu, [maxSeq, V], "f32", "target logits"),
      loss: this.loss,
    };
  }

  /** Records zeroing the loss accumulators. */
  recordZeroLoss(step: Step): void {
    fillForward(step, this.loss, 0);
  }

  /**
   * Uploads one sample and records its losses and backward into `step` (gradients accumulate;
   * `first` zeroes them first). The uploads are queue writes, so each sample needs its own submit.
   * `rng` picks the CLLM sample's Jacobi state.
   */
  recordSample(
    step: Step,
    item: TrainItem,
    first: boolean,
    losses: SampleLosses,
    rng: SeededRandom,
  ): SampleWork {
    const maxSeq = this.maxSeq;
    const work: SampleWork = { rows: 0, flops: 0 };
    if (first) this.#trainable.zeroGrads(step);
    const ar = (seq: readonly number[], weight: number) => {
      const labels = arLabels(seq, losses.eosIds);
      this.#tokens.write(Uint32Array.from(seq), 0);
      this.#labels.write(labels);
      arLossStep(step, this.#trainable, this.#buffers, {
        offset: 0,
        length: seq.length,
        labeledRows: labels.filter((x) => x !== IGNORE).length,
        weight,
        smoothing: losses.labelSmoothing,
      });
      work.rows += seq.length;
      work.flops += 6 * this.params * seq.length;
    };
    if (item.kind === "ar") {
      ar(item.tokens, item.weight ?? 1);
      return work;
    }
    if (item.kind === "jacobi-forcing") {
      const packed = packJacobiForcing(item, losses.noise ?? DEFAULT_NOISE, losses.eosIds, () => rng.next());
      const L = packed.tokens.length;
      if (L > maxSeq) {
        throw new RangeError(`a packed Jacobi Forcing sequence of ${L} tokens exceeds ${maxSeq}`);
      }
      const pb = this.#packedBuffers();
      this.#tokens.write(Uint32Array.from(packed.tokens), 0);
      this.#labels.write(packed.labels);
      pb.positions.write(packed.positions);
      pb.mask.write(packed.mask);
      jacobiForcingLossStep(step, this.#trainable, { ...this.#buffers, ...pb }, {
        length: L,
        labeledRows: packed.labels.filter((x) => x !== IGNORE).length,
        arWeight: losses.arWeight,
        consistencyWeight: losses.consistencyWeight ?? 1,
        smoothing: losses.labelSmoothing,
        spans: packed.spans,
      });
      work.rows += L;
      work.flops += 6 * this.params * L;
      return work;
    }
    const target = [...item.context, ...item.fixedPoint];
    ar(losses.arTargets === "gold" && item.labels ? item.labels : target, losses.arWeight);
    // A random non-final state (a trajectory with only its fixed point has none: skip).
    if (item.states.length < 2) return work;
    const i = Math.floor(rng.next() * (item.states.length - 1));
    const goal = losses.consistency === "local" ? item.states[i + 1] : item.fixedPoint;
    const goalSeq = [...item.context, ...goal];
    const stateSeq = [...item.context, ...item.states[i]];
    const rows = consistencyRows(stateSeq, goalSeq, losses.eosIds);
    if (!rows) return work;
    this.#tokens.write(Uint32Array.from(goalSeq), maxSeq);
    this.#tokens.write(Uint32Array.from(stateSeq), 2 * maxSeq);
    consistencyLossStep(step, this.#trainable, this.#buffers, {
      stateOffset: 2 * maxSeq,
      targetOffset: maxSeq,
      length: stateSeq.length,
      first: rows.first,
      last: rows.last,
    });
    work.rows += stateSeq.length;
    work.flops += 8 * this.params * stateSeq.length;
    return work;
  }

  /** The packed-sequence buffers, made on the first Jacobi Forcing sample. */
  #packedBuffers(): { positions: Tensor; mask: Tensor; studentLogits: Tensor } {
    if (!this.#packed) {
      const gpu = this.model.gpu, S = this.maxSeq;
      this.#packed = {
        positions: new Tensor(gpu, [S], "u32", "packed positions"),
        mask: new Tensor(gpu, [S * Math.ceil(S / 32)], "u32", "packed mask"),
        studentLogits: new Tensor(gpu, [S, this.model.config.vocabSize], "f32", "consistency rows' logits"),
      };
    }
    return this.#packed;
  }

  /** Records the update: global gradient norm → clip scale, then AdamW on every weight. */
  recordUpdate(step: Step, settings: UpdateSettings): void {
    const grads = this.#trainable.grads;
    fillForward(step, this.#norm, 0);
    sumSquares(step, [...grads.values()], this.#norm, { slot: 0 });
    clipScale(step, this.#norm, this.#norm, {
      maxNorm: settings.maxGradNorm,
      sumSlot: 0,
      scaleSlot: 1,
      normSlot: 2,
    });
    for (const name of this.names) {
      adamwUpdate(
        step,
        this.model.weights.get(name)!,
        grads.get(name)!,
        this.m.get(name)!,
        this.v.get(name)!,
        this.#norm,
        {
          lr: settings.lr,
          weightDecay: settings.weightDecay,
          t: settings.t,
          scaleSlot: 1,
        },
      );
    }
  }

  /** Frees the GPU state (not the model). */
  destroy(): void {
    this.#trainable.destroy();
    for (
      const t of [...this.m.values(), ...this.v.values(), this.loss, this.#norm, this.#tokens, this.#labels]
    ) t.destroy();
    this.#buffers.logits.destroy();
    this.#buffers.targetLogits.destroy();
    if (this.#packed) { for (const t of Object.values(this.#packed)) t.destroy(); }
  }
}
