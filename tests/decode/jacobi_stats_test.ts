import assert from "node:assert/strict";
import { blockStats, trajectoryStats } from "../../decode/jacobi_stats.ts";

Deno.test("blockStats: hand-computed fast-forward and stationary counts", () => {
  // Converged on the first forward: all n tokens in one iteration.
  assert.deepEqual(blockStats([[4, 5, 6]]), { fastForward: 3, stationary: 0, iterations: 1 });
  // One token per iteration, nothing right early: L = [1, 2, 3, 4] -> FF (2 + 1 + 1) / 3.
  const slow = [[7, 0, 0, 0], [7, 8, 0, 0], [7, 8, 9, 0], [7, 8, 9, 10]];
  assert.deepEqual(blockStats(slow), { fastForward: 4 / 3, stationary: 0, iterations: 3 });
  // Position 3 holds its final token one state before it joins the prefix: stationary.
  const early = [[7, 1, 1, 1], [7, 8, 2, 10], [7, 8, 9, 10]];
  assert.deepEqual(blockStats(early), { fastForward: 2, stationary: 1, iterations: 2 });
  // Right in S_0 already but lost and regained does not count (S_{j-1} decides).
  const flicker = [[7, 1, 9, 1], [7, 8, 3, 1], [7, 8, 9, 10]];
  assert.deepEqual(blockStats(flicker), { fastForward: 2, stationary: 0, iterations: 2 });
  assert.deepEqual(trajectoryStats([{ block: 0, states: early }, { block: 1, states: [[1, 2, 3, 4]] }]), {
    fastForward: 3,
    stationary: 1,
  });
});
