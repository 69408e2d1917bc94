/**
 * The two CLLM losses as named step functions (docs/method.md §4.2-4.3), each recording its
 * forward(s), its loss kernel and its backward into one step. Loss values accumulate on the GPU.
 *
 * - AR loss: label-smoothed cross-entropy over the shifted positions of a sequence, weighted
 *   (×10 in the reference); tokens after the first EOS are masked (a reference quirk fixed).
 * - Global consistency loss: soft cross-entropy from the model on a Jacobi state to the detached
 *   distribution on the fixed point, over the rows from the first wrong token on.
 *
 * @module
 */

import { type Step, Tape, type Tensor } from "../core/mod.ts";
import { crossEntropyLoss, softCrossEntropyLoss } from "../kernels/cross_entropy.ts";
import type { TrainableLlama } from "../model/llama_train.ts";

/** Marks a label row ignored by the loss kernels. */
export const IGNORE = 0xffffffff;

/** Loss accumulator slots. */
export const LOSS_SLOTS = { ar: 0, consistency: 1 } as const;

/**
 * Shifted labels for the AR loss: label[t] = seq[t+1] for t < L−1, and IGNORE for the last row and
 * for every row whose target comes after the first EOS (the EOS itself is still learned).
 *
 * @example Labels with an EOS
 * ```ts
 * import { arLabels, IGNORE } from "./losses.ts";
 * arLabels([1, 5, 2, 7], [2]); // Uint32Array [5, 2, 0xffffffff, 0xffffffff] (IGNORE after the EOS)
 * ```
 */
export function arLabels(seq: readonly number[], eosIds: readonly number[]): Uint32Array {
  const labels = new Uint32Array(seq.length).fill(IGNORE);
  for (let t = 0; t + 1 < seq.length; t++) {
    labels[t] = seq[t + 1];
    if (eosIds.includes(seq[t + 1])) break;
  }
  return labels;
}

/**
 * The consistency loss's rows [first, last): first = the logit row predicting the first token
 * where the state differs from the target sequence (rows before it see identical contexts and
 * are already right), last = L−1, cut at the target's first EOS (nothing after it is trained).
 * Returns null when the state equals the target (no rows).
 *
 * @example
 * ```ts
 * import { consistencyRows } from "./losses.ts";
 * consistencyRows([1, 5, 9, 9], [1, 5, 6, 7], []); // { first: 1, last: 3 }
 * ```
 */
export function consistencyRows(
  state: readonly number[],
  target: readonly number[],
  eosIds: readonly number[],
): { first: number; last: number } | null {
  let d = 1;
  while (d < state.length && state[d] === target[d]) d++;
  if (d >= state.length) return null;
  let last = target.length - 1;
  for (let p = 1; p < target.length; p++) {
    if (eosIds.includes(target[p])) {
      last = Math.min(last, p);
      break;
    }
  }
  const first = d - 1;
  return first < last ? { first, last } : null;
}

/** Buffers a loss step uses. */
export interface LossBuffers {
  /** u32 token buffer holding the sequences at their offsets. */
  tokens: Tensor;
  /** u32 labels (maxSeq) for the AR loss. */
  labels: Tensor;
  /** (maxSeq, V) logits of the trained forward. */
  logits: Tensor;
  /** (maxSeq, V) logits of the detached target forward. */
  targetLogits: Tensor;
  /** f32 loss accumulators ({@linkcode LOSS_SLOTS}). */
  loss: Tensor;
}

/**
 * Records the AR loss of one sequence (at `offset` in the token buffer, labels already uploaded)
 * and its backward: gradients accumulate into the trainable's buffers.
 */
export function arLossStep(
  step: Step,
  model: TrainableLlama,
  b: LossBuffers,
  args: { offset: number; length: number; labeledRows: number; weight: number; smoothing: number },
): void {
  const tape = new Tape();
  const T = args.length;
  const logits = b.logits.view([T, b.logits.shape[1]]);
  model.forward(step, { tokens: b.tokens, tokenOffset: args.offset, rows: T, logits }, tape);
  crossEntropyLoss(step, logits, b.labels, model.dLogits(T), b.loss, {
    smoothing: args.smoothing,
    scale: args.weight / Math.max(1, args.labeledRows),
    lossSlot: LOSS_SLOTS.ar,
  });
  tape.backward(step);
}

/**
 * Records the global (or, with a next state as target, local) consistency loss: a detached forward
 * on the target sequence, a forward with the tape on the state sequence, the soft cross-entropy
 * over rows [first, last), and the backward.
 */
export function consistencyLossStep(
  step: Step,
  model: TrainableLlama,
  b: LossBuffers,
  args: {
    stateOffset: number;
    targetOffset: number;
    length: number;
    first: number;
    last: number;
    /** Factor on the loss and gradient (default 1 / (last − first): the mean over the rows). */
    scale?: number;
  },
): void {
  const T = args.length;
  const V = b.logits.shape[1];
  const target = b.targetLogits.view([T, V]);
  const logits = b.logits.view([T, V]);
  model.forward(step, { tokens: b.tokens, tokenOffset: args.targetOffset, rows: T, logits: target });
  const tape = new Tape();
  model.forward(step, { tokens: b.tokens, tokenOffset: args.stateOffset, rows: T, logits }, tape);
  softCrossEntropyLoss(step, logits, target, model.dLogits(T), b.loss, {
    firstRow: args.first,
    lastRow: args.last,
    scale: args.scale ?? 1 / (args.last - args.first),
    lossSlot: LOSS_SLOTS.consistency,
  });
  tape.backward(step);
}

/** Buffers of {@linkcode jacobiForcingLossStep} beyond {@linkcode LossBuffers}. */
export interface PackedBuffers {
  /** u32 row positions of the packed sequence. */
  positions: Tensor;
  /** u32 attention mask of the packed sequence. */
  mask: Tensor;
  /** (maxSeq, V) scratch: the consistency rows' logits gathered, then their gradients. */
  studentLogits: Tensor;
}

/**
 * Records Jacobi Forcing's losses on one packed sequence (train/jacobi_forcing.ts) and their
 * backward: one forward with the tape over the whole sequence (positions and mask uploaded), the AR
 * loss on the clean chain's rows, and the progressive consistency loss — the soft cross-entropy
 * from each span's noisy rows to the clean rows at the same offsets. The clean rows' logits are
 * copied out before any gradient is computed, so the teacher is detached; the noisy rows are
 * gathered into a compact tensor, their gradient computed there and copied back into dLogits (the
 * AR loss leaves zeros on those rows).
 */
export function jacobiForcingLossStep(
  step: Step,
  model: TrainableLlama,
  b: LossBuffers & PackedBuffers,
  args: {
    length: number;
    labeledRows: number;
    arWeight: number;
    consistencyWeight: number;
    smoothing: number;
    spans: readonly { student: number; teacher: number; count: number }[];
  },
): void {
  const L = args.length;
  const V = b.logits.shape[1];
  const rowBytes = V * 4;
  const logits = b.logits.view([L, V]);
  const tape = new Tape();
  model.forward(step, {
    tokens: b.tokens,
    tokenOffset: 0,
    rows: L,
    logits,
    positions: b.positions,
    mask: b.mask,
  }, tape);
  const K = args.spans.reduce((a, s) => a + s.count, 0);
  let k = 0;
  for (const s of args.spans) {
    step.copy(b.logits, s.student * rowBytes, b.studentLogits, k * rowBytes, s.count * rowBytes);
    step.copy(b.logits, s.teacher * rowBytes, b.targetLogits, k * rowBytes, s.count * rowBytes);
    k += s.count;
  }
  const dLogits = model.dLogits(L);
  crossEntropyLoss(step, logits, b.labels, dLogits, b.loss, {
    smoothing: args.smoothing,
    scale: args.arWeight / Math.max(1, args.labeledRows),
    lossSlot: LOSS_SLOTS.ar,
  });
  if (K > 0) {
    const student = b.studentLogits.view([K, V]);
    softCrossEntropyLoss(step, student, b.targetLogits.view([K, V]), student, b.loss, {
      firstRow: 0,
      lastRow: K,
      scale: args.consistencyWeight / K,
      lossSlot: LOSS_SLOTS.consistency,
    });
    k = 0;
    for (const s of args.spans) {
      step.copy(b.studentLogits, k * rowBytes, dLogits, s.student * rowBytes, s.count * rowBytes);
      k += s.count;
    }
  }
  tape.backward(step);
}
