/**
 * Trajectory statistics of Jacobi decoding (docs/method.md §5.1): fast-forwarded and stationary
 * token counts, computed from the states of each block.
 *
 * @module
 */

/** The states S_0..S_k of one block (each n tokens); S_k is the fixed point when the block converged. */
export interface BlockTrajectory {
  /** Block index in the generation. */
  block: number;
  /** Input state of every forward over this block, in order. */
  states: number[][];
}

/** Length of the longest prefix of `a` equal to `b`. */
function matchingPrefix(a: readonly number[], b: readonly number[]): number {
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  return i;
}

/**
 * Per-block counts:
 * - fast-forward: with L_t the correct-prefix length of S_t against S_k, iteration t (1..k) adds
 *   L_t − L_{t−1}, with L_0 taken as 0 so the block's first (known) token counts in t = 1; a block
 *   that converged on its first forward (k = 0) fast-forwards all n tokens in one iteration; the
 *   block's value is the mean over its iterations.
 * - stationary: position p joins the correct prefix at state j_p (the first t with L_t > p); it is
 *   stationary when it already held its final token in the state before (S_{j_p−1}[p] = S_k[p]),
 *   i.e. its trailing run of correct states is longer than its time inside the prefix.
 *
 * @example A block that converges in two iterations
 * ```ts
 * import { blockStats } from "./jacobi_stats.ts";
 * // S_0 = [5, 9, 7], S_1 = [5, 6, 7] = fixed point: position 2 was right before position 1 was.
 * blockStats([[5, 9, 7], [5, 6, 7]]); // { fastForward: 3, stationary: 1, iterations: 1 }
 * ```
 */
export function blockStats(states: readonly (readonly number[])[]): {
  fastForward: number;
  stationary: number;
  iterations: number;
} {
  const k = states.length - 1;
  const fixed = states[k];
  const n = fixed.length;
  if (k === 0) return { fastForward: n, stationary: 0, iterations: 1 };
  const L = states.map((s) => matchingPrefix(s, fixed));
  let sum = 0;
  for (let t = 1; t <= k; t++) sum += L[t] - (t === 1 ? 0 : L[t - 1]);
  let stationary = 0;
  for (let p = 0; p < n; p++) {
    const joined = L.findIndex((len) => len > p);
    if (joined > 0 && states[joined - 1][p] === fixed[p]) stationary++;
  }
  return { fastForward: sum / k, stationary, iterations: k };
}

/**
 * Request-level statistics: fast-forward = mean over blocks; stationary = sum over blocks.
 *
 * @example
 * ```ts
 * import { trajectoryStats } from "./jacobi_stats.ts";
 * trajectoryStats([{ block: 0, states: [[1, 2], [1, 2]] }]).fastForward; // 2
 * ```
 */
export function trajectoryStats(
  blocks: readonly BlockTrajectory[],
): { fastForward: number; stationary: number } {
  if (blocks.length === 0) return { fastForward: 0, stationary: 0 };
  let ff = 0;
  let stationary = 0;
  for (const b of blocks) {
    const s = blockStats(b.states);
    ff += s.fastForward;
    stationary += s.stationary;
  }
  return { fastForward: ff / blocks.length, stationary };
}
