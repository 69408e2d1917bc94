/**
 * Jacobi Forcing's training sequences (Hu et al. 2025, arXiv 2512.14681, "progressive consistency
 * distillation"; our own formulation of it): one packed sequence per prompt holds the prompt and,
 * for every block j of its answer, a noisy copy (a state of the block's Jacobi trajectory) followed
 * by the clean copy (the fixed point). One forward with the noise-conditioned mask gives the logits
 * of both copies:
 *
 *   tokens     prompt | noisy₀ clean₀ | noisy₁ clean₁ | …
 *   positions  0..P−1 | P..P+n−1 twice | P+n..P+2n−1 twice | …
 *   mask       prompt rows: causal. A row of clean_j sees the prompt, every clean block before j and
 *              clean_j up to itself; a row of noisy_j sees the prompt, every noisy block before j
 *              and noisy_j up to itself (the noisy context, the reference's mask), or with
 *              `context: "clean"` the clean blocks before j instead (CLLM's setting).
 *
 * So clean_j's rows are exactly the AR forward of prompt ⊕ fixed points (the AR loss, and the
 * detached teacher), and noisy_j's rows are the model on a Jacobi state of block j after the noisy
 * states of the blocks before it: what a pseudo-active block of multiblock decoding sees, iterating
 * on unverified blocks (decode/jacobi.ts `blocks`). The progressive consistency loss pulls each
 * noisy row's distribution to the clean row at the same offset, from the first offset where the
 * copies differ.
 *
 * The noise schedule picks block j's state by its noise ratio r = (n − first wrong offset) / n
 * (0 = the fixed point, 1 = nothing right yet): targets r_j = linspace(0, 1, W)[j mod W] with the
 * linear progressive schedule (noise grows along the sequence within each window of W blocks), or
 * a random one of those W targets; the state whose ratio is nearest is used.
 *
 * @module
 */

import { arLabels, IGNORE } from "./losses.ts";

/** One block of a prompt's answer: its Jacobi states, the fixed point last. */
export interface JacobiForcingBlock {
  /** The block's states in iteration order; the last is the fixed point. */
  states: number[][];
}

/** A Jacobi Forcing training item: a prompt and the trajectories of its answer's blocks, in order. */
export interface JacobiForcingSample {
  /** The prompt's token ids. */
  prompt: number[];
  /** The answer's blocks, block j's context being prompt ⊕ the fixed points of blocks < j. */
  blocks: JacobiForcingBlock[];
}

/** How each block's noisy state is chosen, and what its rows see before it. */
export interface NoiseSchedule {
  /** "progressive": target ratio linspace(0, 1, window)[j mod window]; "random": one of those at random. */
  kind: "progressive" | "random";
  /** Blocks per window W (≥ 2; W = 1 would always pick the fixed point: no consistency loss). */
  window: number;
  /**
   * What a noisy block's rows see before it (default "noisy"): the noisy copies of the earlier
   * blocks (Jacobi Forcing's noise-conditioned mask), or their clean copies (CLLM's clean context).
   */
  context?: "noisy" | "clean";
}

/** The default schedule: linear progressive over windows of 4 blocks, noisy context. */
export const DEFAULT_NOISE: NoiseSchedule = { kind: "progressive", window: 4, context: "noisy" };

/** A span of consistency rows: `count` student rows from `student`, their teachers from `teacher`. */
export interface ConsistencySpan {
  /** First noisy row. */
  student: number;
  /** The clean row at the same offset. */
  teacher: number;
  /** Rows in the span. */
  count: number;
}

/** One packed training sequence. */
export interface PackedSequence {
  /** prompt | noisy₀ clean₀ | noisy₁ clean₁ | … */
  tokens: number[];
  /** Position of each row. */
  positions: Uint32Array;
  /** (L, ceil(L/32)) u32 bits: bit k of row q set when row q sees row k. */
  mask: Uint32Array;
  /** AR labels (IGNORE on noisy rows, the last row, and after the first EOS of the clean chain). */
  labels: Uint32Array;
  /** The consistency rows, one span per block whose noisy copy differs from its clean one. */
  spans: ConsistencySpan[];
  /** Noise ratio of each block's chosen state. */
  noise: number[];
}

/**
 * The noise ratio of a state against its fixed point: (n − first differing offset) / n.
 *
 * @example
 * ```ts
 * import { noiseRatio } from "./jacobi_forcing.ts";
 * noiseRatio([5, 6, 0, 0], [5, 6, 7, 8]); // 0.5
 * ```
 */
export function noiseRatio(state: readonly number[], fixedPoint: readonly number[]): number {
  let d = 0;
  while (d < fixedPoint.length && state[d] === fixedPoint[d]) d++;
  return (fixedPoint.length - d) / fixedPoint.length;
}

/**
 * The target noise ratio of block j: linspace(0, 1, W)[j mod W] (progressive) or
 * linspace(0, 1, W)[⌊random·W⌋] (random).
 */
export function targetNoise(j: number, schedule: NoiseSchedule, random: () => number): number {
  const W = schedule.window;
  if (!Number.isInteger(W) || W < 1) {
    throw new RangeError(`noise window must be a whole number ≥ 1, not ${W}`);
  }
  if (W === 1) return 0;
  const i = schedule.kind === "progressive" ? j % W : Math.min(W - 1, Math.floor(random() * W));
  return i / (W - 1);
}

/** Index of the state whose noise ratio is nearest `target` (the earliest on ties). */
export function nearestState(block: JacobiForcingBlock, target: number): number {
  const fixed = block.states[block.states.length - 1];
  let best = 0, bestGap = Infinity;
  block.states.forEach((s, i) => {
    const gap = Math.abs(noiseRatio(s, fixed) - target);
    if (gap < bestGap) [best, bestGap] = [i, gap];
  });
  return best;
}

/**
 * Packs one prompt and its blocks into a training sequence (see the module doc).
 *
 * @param sample the prompt and its blocks' trajectories
 * @param schedule how each block's noisy state is chosen
 * @param eosIds end-of-sequence ids (nothing after the clean chain's first EOS is trained)
 * @param random uniform draws in [0, 1) for the random schedule
 *
 * @example Two blocks of 3 after a prompt of 2
 * ```ts
 * import { packJacobiForcing } from "./jacobi_forcing.ts";
 * const p = packJacobiForcing(
 *   { prompt: [1, 9], blocks: [{ states: [[0, 0, 0], [5, 6, 4]] }, { states: [[7, 0, 0], [7, 8, 9]] }] },
 *   { kind: "progressive", window: 2 },
 *   [],
 *   Math.random,
 * );
 * p.tokens; // [1, 9, 5, 6, 4, 5, 6, 4, 7, 0, 0, 7, 8, 9]: block 0 at noise 0, block 1 at 2/3
 * [...p.positions]; // [0, 1, 2, 3, 4, 2, 3, 4, 5, 6, 7, 5, 6, 7]
 * p.spans; // [{ student: 9, teacher: 12, count: 1 }]: the row after the first wrong token
 * ```
 */
export function packJacobiForcing(
  sample: JacobiForcingSample,
  schedule: NoiseSchedule,
  eosIds: readonly number[],
  random: () => number,
): PackedSequence {
  const { prompt, blocks } = sample;
  const P = prompt.length;
  if (P < 1) throw new RangeError("a Jacobi Forcing sample needs a prompt of at least one token");
  const tokens = [...prompt];
  const positions: number[] = prompt.map((_, i) => i);
  const noise: number[] = [];
  const starts: { noisy: number; clean: number; n: number; pos: number }[] = [];
  const chain = [...prompt]; // the clean sequence: prompt ⊕ fixed points
  const chainRows = prompt.map((_, i) => i); // the packed row of each chain token
  for (let j = 0; j < blocks.length; j++) {
    const states = blocks[j].states;
    if (states.length < 1) throw new RangeError(`block ${j} has no states`);
    const fixed = states[states.length - 1];
    const n = fixed.length;
    const noisy = states[nearestState(blocks[j], targetNoise(j, schedule, random))];
    if (noisy.length !== n) throw new RangeError(`block ${j}: its states are not all ${n} tokens long`);
    noise.push(noiseRatio(noisy, fixed));
    const pos = chain.length;
    const start = tokens.length;
    starts.push({ noisy: start, clean: start + n, n, pos });
    tokens.push(...noisy, ...fixed);
    for (let copy = 0; copy < 2; copy++) for (let o = 0; o < n; o++) positions.push(pos + o);
    for (let o = 0; o < n; o++) chainRows.push(start + n + o);
    chain.push(...fixed);
  }
  const L = tokens.length;
  const words = Math.ceil(L / 32);
  const mask = new Uint32Array(L * words);
  const see = (q: number, k: number) => (mask[q * words + (k >> 5)] |= 1 << (k & 31));
  for (let q = 0; q < P; q++) for (let k = 0; k <= q; k++) see(q, k);
  const noisyContext = (schedule.context ?? "noisy") === "noisy";
  starts.forEach((b, j) => {
    for (const copy of [b.noisy, b.clean]) {
      const fromNoisy = noisyContext && copy === b.noisy;
      for (let o = 0; o < b.n; o++) {
        const q = copy + o;
        for (let k = 0; k < P; k++) see(q, k);
        for (let i = 0; i < j; i++) {
          const before = fromNoisy ? starts[i].noisy : starts[i].clean;
          for (let u = 0; u < starts[i].n; u++) see(q, before + u);
        }
        for (let u = 0; u <= o; u++) see(q, copy + u);
      }
    }
  });
  // AR labels along the clean chain, placed at each chain token's row.
  const chainLabels = arLabels(chain, eosIds);
  const labels = new Uint32Array(L).fill(IGNORE);
  chainRows.forEach((row, c) => (labels[row] = chainLabels[c]));
  // Consistency rows: offsets [first wrong, n − 1) — offset o predicts token o + 1 of the block, the
  // last offset predicts the next block's first token (taught by the AR loss) — cut after the
  // clean chain's first EOS (a row predicting past it learns nothing).
  const firstEos = chain.findIndex((t, c) => c >= P && eosIds.includes(t));
  const spans: ConsistencySpan[] = [];
  for (const b of starts) {
    let f = 0;
    while (f < b.n && tokens[b.noisy + f] === tokens[b.clean + f]) f++;
    let end = b.n - 1;
    if (firstEos >= 0) end = Math.min(end, firstEos - b.pos);
    if (f < end) spans.push({ student: b.noisy + f, teacher: b.clean + f, count: end - f });
  }
  return { tokens, positions: Uint32Array.from(positions), mask, labels, spans, noise };
}

/** A trajectory record as {@linkcode jacobiForcingSamples} needs it (train/trajectory_file.ts). */
export interface TrajectoryBlockRecord {
  /** Prompt id. */
  dataId: string;
  /** Block index. */
  itr: number;
  /** Prompt length P. */
  promptLength: number;
  /** Context before the block: prompt ⊕ earlier fixed points. */
  context: number[];
  /** The block's states, the fixed point last. */
  states: number[][];
}

/**
 * Groups trajectory records (one per block) into one sample per prompt, blocks in order. A prompt's
 * blocks stop at the first gap (a missing block, or a context that is not prompt ⊕ the fixed
 * points before it), so every packed sequence is a true clean chain.
 *
 * @example
 * ```ts
 * import { jacobiForcingSamples } from "./jacobi_forcing.ts";
 * const s = jacobiForcingSamples([
 *   { dataId: "data_0", itr: 1, promptLength: 1, context: [1, 5, 6], states: [[7, 8]] },
 *   { dataId: "data_0", itr: 0, promptLength: 1, context: [1], states: [[0, 0], [5, 6]] },
 * ]);
 * s[0].blocks.length; // 2
 * ```
 */
export function jacobiForcingSamples(records: readonly TrajectoryBlockRecord[]): JacobiForcingSample[] {
  const byPrompt = new Map<string, TrajectoryBlockRecord[]>();
  for (const r of records) {
    const list = byPrompt.get(r.dataId) ?? [];
    list.push(r);
    byPrompt.set(r.dataId, list);
  }
  const out: JacobiForcingSample[] = [];
  for (const list of byPrompt.values()) {
    list.sort((a, b) => a.itr - b.itr);
    const prompt = list[0].context.slice(0, list[0].promptLength);
    const chain = [...prompt];
    const blocks: JacobiForcingBlock[] = [];
    for (const [j, r] of list.entries()) {
      const fits = r.itr === j && r.context.length === chain.length &&
        r.context.every((t, i) => t === chain[i]);
      if (!fits) break;
      blocks.push({ states: r.states });
      chain.push(...r.states[r.states.length - 1]);
    }
    if (blocks.length > 0) out.push({ prompt, blocks });
  }
  return out;
}

/** Tokens of a sample's packed sequence: P + 2 × the answer's length. */
export function packedLength(sample: JacobiForcingSample): number {
  return sample.prompt.length +
    2 * sample.blocks.reduce((a, b) => a + b.states[b.states.length - 1].length, 0);
}
