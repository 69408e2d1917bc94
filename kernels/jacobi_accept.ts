/**
 * The Jacobi acceptance step, on the GPU (docs/method.md §2.1, with the reference's quirks fixed).
 *
 * After a forward over the active block `block[0..m)` at position `base`, with `pred[j]` the greedy
 * prediction for position base+j+1:
 * 1. log the block's current full state (tokens committed earlier in this block + the active part);
 * 2. `nxt = [block[0]] + pred[0..m-1)`; `a` = the first j ≥ 1 where block[j] ≠ nxt[j], or m;
 * 3. commit block[0..a) to `tokens[base..]` (stopping at the first EOS, kept, or at `limit`);
 *    their KV rows are valid, so the cache length just advances: base += a;
 * 4. converged (a = m): the bonus token pred[m-1] starts the next block, followed by n−1 guesses
 *    drawn with a seeded PRNG from the tokens already in the context; otherwise the next input is
 *    the unconverged suffix `nxt[a..m) = pred[a-1..m-1)`.
 * Everything the loop needs lives in `st`, so the host can record many iterations per readback.
 *
 * @module
 */

import type { KernelSpec, Step, Tensor } from "../core/mod.ts";
import {
  COMMIT_WGSL,
  DECODE_STATE_SIZE,
  type DecoderSlots,
  decoderSlots,
  PCG_WGSL,
  pcgHash,
  slotConstantsWgsl,
} from "./decode_state.ts";

/**
 * Slots of the Jacobi state tensor `st` (u32): the common ones of every decoder
 * (kernels/decode_state.ts: base = committed length = KV cache length = position of block[0],
 * done, forwards, end, rng), then Jacobi's own:
 * - `active`: active block length m;
 * - `blockStart`: position where the current block started;
 * - `logCount`: trajectory states logged;
 * - `blockIters`: forwards in the current block so far;
 * - `blocks`: blocks started so far (the first block is 0).
 */
export const JACOBI_SLOTS: DecoderSlots<"active" | "blockStart" | "logCount" | "blockIters" | "blocks"> =
  decoderSlots(["active", "blockStart", "logCount", "blockIters", "blocks"]);

/**
 * WGSL of `fillGuesses(known, end, base, r)`, shared by both Jacobi kernels: fills `block[known..end)`
 * with guesses and returns the PRNG counter after its draws. A random guess is the context token
 * `tokens[pcg(seed ^ pcg(r)) % base]` (the reference's); with `COPY`, a guess continues the span
 * copied from the context, or starts one after the latest earlier occurrence of the two preceding
 * tokens (else of one), and is random only where the preceding token never occurred. The scan has a
 * constant bound: llvmpipe runs loops bounded by a buffer value far slower.
 * {@linkcode fillGuessesReference} is its CPU twin.
 */
export const GUESSES_WGSL = `fn copySource(prev2: u32, prev: u32, base: u32) -> u32 {
  var unigram = 0u;
  for (var i = 0u; i < 4096u; i++) {
    if (i + 2u > base) { break; }
    let k = base - 1u - i;
    if (tokens[k - 1u] == prev) {
      if (k >= 2u && tokens[k - 2u] == prev2) { return k; }
      if (unigram == 0u) { unigram = k; }
    }
  }
  return unigram;
}

fn fillGuesses(known: u32, end: u32, base: u32, r0: u32) -> u32 {
  var r = r0;
  var src = 0u;
  for (var j = known; j < N; j++) {
    if (j >= end) { break; } // a constant loop bound: llvmpipe runs those much faster
    if (COPY) {
      if (src == 0u || src >= base) {
        var prev2 = tokens[base - 1u];
        if (j >= 2u) { prev2 = block[j - 2u]; }
        src = copySource(prev2, block[j - 1u], base);
      }
      if (src != 0u) {
        block[j] = tokens[src];
        src = src + 1u;
        continue;
      }
    }
    block[j] = tokens[pcg(P.seed ^ pcg(r)) % base];
    r = r + 1u;
  }
  return r;
}`;

/** Number of u32 slots in the state tensor. */
export const JACOBI_STATE_SIZE = DECODE_STATE_SIZE;

/** Words per trajectory log entry: block index, iteration in block, then the n tokens. */
export function jacobiLogStride(n: number): number {
  return n + 2;
}

/** The acceptance kernel; one invocation (the block is at most a few dozen tokens). */
export const jacobiAcceptSpec: KernelSpec = {
  name: "jacobi_accept",
  bindings: [
    { name: "st", access: "read_write", type: "u32" },
    { name: "tokens", access: "read_write", type: "u32" },
    { name: "block", access: "read_write", type: "u32" },
    { name: "pred", access: "read", type: "u32" },
    { name: "eos", access: "read", type: "u32" },
    { name: "traj", access: "read_write", type: "u32" },
  ],
  // n and the EOS count are compile-time constants (variant N, EOS_COUNT): llvmpipe runs loops
  // bounded by a uniform ~100x slower than constant-bounded ones (15-20 ms vs 0.2 ms per call).
  params: [
    { name: "limit", type: "u32" },
    { name: "seed", type: "u32" },
    { name: "logCapacity", type: "u32" },
  ],
  wgsl: () => `
${slotConstantsWgsl(JACOBI_SLOTS)}

${PCG_WGSL}

${COMMIT_WGSL}

${GUESSES_WGSL}

@compute @workgroup_size(1)
fn main() {
  if (st[DONE] != 0u) { return; }
  let n = N;
  let m = st[ACTIVE];
  var base = st[BASE];
  let blockStart = st[BLOCK_START];
  st[FORWARDS] = st[FORWARDS] + 1u;

  // 1. Log the state this forward saw: committed part of the block, then the active part.
  let li = st[LOG_COUNT];
  if (li < P.logCapacity) {
    let o = li * (n + 2u);
    traj[o] = st[BLOCKS];
    traj[o + 1u] = st[BLOCK_ITERS];
    let done = base - blockStart;
    for (var j = 0u; j < n; j++) {
      if (j < done) { traj[o + 2u + j] = tokens[blockStart + j]; } else { traj[o + 2u + j] = block[j - done]; }
    }
    st[LOG_COUNT] = li + 1u;
  }
  st[BLOCK_ITERS] = st[BLOCK_ITERS] + 1u;

  // 2. Longest prefix where the input equals the shifted prediction (block[0] is always correct).
  var a = m;
  for (var j = 1u; j < m; j++) {
    if (block[j] != pred[j - 1u]) { a = j; break; }
  }

  // 3. Commit block[0..a), stopping at the first EOS (kept) or at the budget.
  for (var j = 0u; j < a; j++) {
    if (!commit(base + j, block[j])) { st[BASE] = st[END]; return; }
  }
  base = base + a;
  st[BASE] = base;
  if (base >= P.limit) { stopAt(P.limit); return; }

  // 4. Next input: the tokens already known, then seeded guesses drawn from the context
  //    tokens[0..base): a new window (converged: the bonus token pred[m-1] starts it), or the
  //    unverified suffix followed by as many new blocks of UNIT tokens as fit in the window (the
  //    first starting with pred[m-1]): UNIT 1 is the sliding window, UNIT n one block (never
  //    refilled before it converges), n/K multiblock decoding with K blocks in flight.
  var known = 1u;
  var end = 0u; // 0: no new block
  if (a == m) {
    block[0] = pred[m - 1u];
    end = N;
  } else {
    // nxt[a..m) = pred[a-1..m-1); its first token is now known correct.
    for (var j = 0u; j < m - a; j++) { block[j] = pred[a - 1u + j]; }
    known = m - a;
    let room = (N - known) / UNIT * UNIT;
    // The last row's prediction, for the position just past the window, is a better first guess
    // for the new block than a random draw (a < m, so known < n here).
    if (room > 0u) {
      block[known] = pred[m - 1u];
      end = known + room;
      known = known + 1u;
    }
  }
  if (end > 0u) {
    st[RNG] = fillGuesses(known, end, base, st[RNG]);
    st[ACTIVE] = end;
    st[BLOCK_START] = base;
    st[BLOCK_ITERS] = 0u;
    st[BLOCKS] = st[BLOCKS] + 1u;
  } else {
    st[ACTIVE] = m - a;
  }
}`,
};

/**
 * Starts the first block after prefill: block[0] = tokens[base] (the prefill's greedy token), then
 * n−1 guesses drawn from the prompt tokens[0..base); the state is reset for a new generation.
 */
export const jacobiStartSpec: KernelSpec = {
  name: "jacobi_start",
  bindings: (variant) => [
    { name: "st", access: "read_write", type: "u32" },
    { name: "tokens", access: "read", type: "u32" },
    { name: "block", access: "read_write", type: "u32" },
    // Sampled decoding: every first guess is a point mass (kernels/jacobi_sampled.ts).
    ...(variant.SAMPLED ? [{ name: "work", access: "read_write" as const, type: "f32" }] : []),
  ],
  params: [{ name: "base", type: "u32" }, { name: "seed", type: "u32" }],
  wgsl: (variant) => `
${slotConstantsWgsl(JACOBI_SLOTS)}
${PCG_WGSL}
${GUESSES_WGSL}
@compute @workgroup_size(1)
fn main() {
  for (var i = 0u; i < ${JACOBI_STATE_SIZE}u; i++) { st[i] = 0u; }
  st[BASE] = P.base;
  st[BLOCK_START] = P.base;
  st[ACTIVE] = N;
  block[0] = tokens[P.base];
  st[RNG] = fillGuesses(1u, N, P.base, 0u);
${
    variant.SAMPLED
      ? "  for (var j = 0u; j < N; j++) { work[4u * N + 4u * j + 3u] = bitcast<f32>(0xffffffffu); }"
      : ""
  }
}`,
};

/**
 * Records the start of a Jacobi generation (see {@linkcode jacobiStartSpec}).
 *
 * @example After prefill of P tokens
 * ```ts ignore
 * jacobiStart(step, { st, tokens, block, n: 16, base: P, seed: 0 });
 * ```
 */
export function jacobiStart(
  step: Step,
  a: {
    st: Tensor;
    tokens: Tensor;
    block: Tensor;
    n: number;
    base: number;
    seed: number;
    guesses?: JacobiGuesses;
    /** Sampled decoding's workspace (kernels/jacobi_sampled.ts): its guesses start as point masses. */
    work?: Tensor;
  },
): void {
  step.dispatch(jacobiStartSpec, {
    variant: { N: a.n, COPY: a.guesses === "context", SAMPLED: a.work !== undefined },
    bindings: { st: a.st, tokens: a.tokens, block: a.block, ...(a.work ? { work: a.work } : {}) },
    params: { base: a.base, seed: a.seed },
    workgroups: [1],
  });
}

/** Host-side inputs of {@linkcode jacobiAccept}. */
export interface JacobiAcceptArgs {
  /** State (u32, {@linkcode JACOBI_STATE_SIZE}). */
  st: Tensor;
  /** Committed tokens by position (u32). */
  tokens: Tensor;
  /** The block (u32, n). */
  block: Tensor;
  /** Greedy predictions of the block's rows (u32, n). */
  pred: Tensor;
  /** EOS ids (u32, ≥ 1 element; `eosCount` of them used). */
  eos: Tensor;
  /** Number of EOS ids in `eos`. */
  eosCount: number;
  /** Trajectory log (u32, logCapacity × (n + 2)). */
  traj: Tensor;
  /** Entries the log holds. */
  logCapacity: number;
  /** Block size n. */
  n: number;
  /** Absolute position limit: prompt length + max new tokens. */
  limit: number;
  /** PRNG seed for guesses. */
  seed: number;
  /** Refill the block to n tokens after each partial acceptance (sliding window). */
  sliding?: boolean;
  /**
   * Blocks in flight K (multiblock decoding; default 1): the window of n = K·b tokens gains a new
   * block of b guesses whenever b places are free. Not with `sliding` (a refill unit of 1).
   */
  blocks?: number;
  /** Where new guesses come from: random context tokens (the reference; default) or copied spans. */
  guesses?: JacobiGuesses;
}

/**
 * The refill unit of a window of n tokens: 1 when sliding, n / blocks otherwise (n for one block).
 * Throws when the blocks do not divide n or are combined with the sliding window.
 */
export function refillUnit(n: number, sliding: boolean | undefined, blocks: number | undefined): number {
  const K = blocks ?? 1;
  if (!Number.isInteger(K) || K < 1 || n % K !== 0) {
    throw new RangeError(`Multiblock Jacobi: ${K} blocks must divide the window of ${n} tokens`);
  }
  if (sliding && K > 1) throw new RangeError("Multiblock Jacobi and the sliding window do not combine");
  return sliding ? 1 : n / K;
}

/**
 * How a Jacobi block's new guesses are drawn: `"random"`, tokens drawn uniformly from the context
 * (the reference's initialisation), or `"context"`, the tokens that followed the latest earlier
 * occurrence of the preceding two tokens (else one) in the context, as prompt-lookup decoding does;
 * random where the token never occurred. The output is the same either way (every guess is verified).
 */
export type JacobiGuesses = "random" | "context";

/**
 * Records one acceptance step.
 *
 * @example One Jacobi iteration
 * ```ts ignore
 * model.forward(step, { tokens: block, tokenOffset: 0, rows: n, position: { state: st, slot: 0 }, cache, logits });
 * argmaxForward(step, logits, pred);
 * jacobiAccept(step, { st, tokens, block, pred, eos, eosCount: 1, traj, logCapacity, n, limit, seed: 0 });
 * ```
 */
export function jacobiAccept(step: Step, a: JacobiAcceptArgs): void {
  step.dispatch(jacobiAcceptSpec, {
    variant: {
      N: a.n,
      EOS_COUNT: a.eosCount,
      UNIT: refillUnit(a.n, a.sliding, a.blocks),
      COPY: a.guesses === "context",
    },
    bindings: { st: a.st, tokens: a.tokens, block: a.block, pred: a.pred, eos: a.eos, traj: a.traj },
    params: { limit: a.limit, seed: a.seed, logCapacity: a.logCapacity },
    workgroups: [1],
  });
}

/**
 * CPU twin of the kernels' `fillGuesses`: fills `block[known..n)` with guesses from the context
 * `tokens[0..base)` and returns the PRNG counter after its draws.
 *
 * @example Copied guesses continue the span after the latest "5 6"
 * ```ts
 * import { fillGuessesReference } from "./jacobi_accept.ts";
 * const block = new Uint32Array([6, 0, 0]);
 * fillGuessesReference(new Uint32Array([1, 5, 6, 7, 8, 5]), block, { known: 1, base: 6, n: 3, r: 0, seed: 0, guesses: "context" });
 * // block = [6, 7, 8]
 * ```
 */
export function fillGuessesReference(
  tokens: Uint32Array,
  block: Uint32Array,
  a: {
    known: number;
    base: number;
    n: number;
    r: number;
    seed: number;
    guesses?: JacobiGuesses;
    end?: number;
  },
): number {
  let { r } = a;
  const base = a.base;
  let src = 0;
  for (let j = a.known; j < (a.end ?? a.n); j++) {
    if (a.guesses === "context") {
      if (src === 0 || src >= base) {
        const prev2 = j >= 2 ? block[j - 2] : tokens[base - 1];
        let unigram = 0;
        src = 0;
        for (let k = base - 1; k >= 1 && src === 0; k--) {
          if (tokens[k - 1] !== block[j - 1]) continue;
          if (k >= 2 && tokens[k - 2] === prev2) src = k;
          else if (unigram === 0) unigram = k;
        }
        if (src === 0) src = unigram;
      }
      if (src !== 0) {
        block[j] = tokens[src++];
        continue;
      }
    }
    block[j] = tokens[pcgHash((a.seed ^ pcgHash(r)) >>> 0) % base];
    r = (r + 1) >>> 0;
  }
  return r;
}

/**
 * CPU reference of one acceptance step, on plain arrays (mutated in place like the kernel).
 *
 * @example
 * ```ts
 * import { JACOBI_SLOTS, JACOBI_STATE_SIZE, jacobiAcceptReference } from "./jacobi_accept.ts";
 * const st = new Uint32Array(JACOBI_STATE_SIZE);
 * st[JACOBI_SLOTS.base] = 1;
 * st[JACOBI_SLOTS.active] = 2;
 * st[JACOBI_SLOTS.blockStart] = 1;
 * const tokens = new Uint32Array(8); tokens[0] = 1;
 * const block = new Uint32Array([5, 6]);
 * jacobiAcceptReference({ st, tokens, block, pred: new Uint32Array([6, 7]), eos: [2], traj: [], n: 2, limit: 8, seed: 0 });
 * // Converged: tokens[1..3) = [5, 6], and the next block starts with the bonus token 7.
 * Array.from(tokens.subarray(1, 3)); // [5, 6]
 * block[0]; // 7
 * ```
 */
export function jacobiAcceptReference(a: {
  st: Uint32Array;
  tokens: Uint32Array;
  block: Uint32Array;
  pred: Uint32Array;
  eos: readonly number[];
  traj: number[][];
  n: number;
  limit: number;
  seed: number;
  sliding?: boolean;
  blocks?: number;
  guesses?: JacobiGuesses;
}): void {
  const { st, tokens, block, pred, n } = a;
  const unit = refillUnit(n, a.sliding, a.blocks);
  const S = JACOBI_SLOTS;
  if (st[S.done]) return;
  const m = st[S.active];
  let base = st[S.base];
  const blockStart = st[S.blockStart];
  st[S.forwards]++;
  const committed = base - blockStart;
  const state = [st[S.blocks], st[S.blockIters]];
  for (let j = 0; j < n; j++) state.push(j < committed ? tokens[blockStart + j] : block[j - committed]);
  a.traj.push(state);
  st[S.logCount]++;
  st[S.blockIters]++;
  let acc = m;
  for (let j = 1; j < m; j++) {
    if (block[j] !== pred[j - 1]) {
      acc = j;
      break;
    }
  }
  for (let j = 0; j < acc; j++) {
    const pos = base + j;
    if (pos >= a.limit) {
      st[S.done] = 1;
      st[S.end] = st[S.base] = a.limit;
      return;
    }
    tokens[pos] = block[j];
    if (a.eos.includes(block[j])) {
      st[S.done] = 1;
      st[S.end] = st[S.base] = pos + 1;
      return;
    }
  }
  base += acc;
  st[S.base] = base;
  if (base >= a.limit) {
    st[S.done] = 1;
    st[S.end] = a.limit;
    return;
  }
  let known = 1;
  let end = 0;
  if (acc === m) {
    block[0] = pred[m - 1];
    end = n;
  } else {
    const next = Array.from(pred.subarray(acc - 1, m - 1));
    next.forEach((t, j) => (block[j] = t));
    known = m - acc;
    const room = Math.floor((n - known) / unit) * unit;
    if (room > 0) {
      block[known] = pred[m - 1];
      end = known + room;
      known++;
    }
  }
  if (end > 0) {
    st[S.rng] = fillGuessesReference(tokens, block, {
      known,
      base,
      n,
      end,
      r: st[S.rng],
      seed: a.seed,
      guesses: a.guesses,
    });
    st[S.active] = end;
    st[S.blockStart] = base;
    st[S.blockIters] = 0;
    st[S.blocks]++;
  } else {
    st[S.active] = m - acc;
  }
}
