/**
 * Learning-rate schedules (pure functions of the step number).
 *
 * @module
 */

/** Options of {@linkcode cosineSchedule}. */
export interface CosineScheduleOptions {
  /** Peak learning rate, reached at the end of the warmup. */
  baseLr: number;
  /** Steps of linear warmup from 0 (0: start at baseLr). */
  warmupSteps: number;
  /** Total training steps; the cosine reaches minLr here. */
  totalSteps: number;
  /** Final learning rate (default 0). */
  minLr?: number;
}

/**
 * Linear warmup, then cosine decay: Hugging Face's `get_cosine_schedule_with_warmup`
 * (`num_cycles = 0.5`), or with `minLr` its `get_cosine_with_min_lr_schedule_with_warmup`
 * (`min_lr = minLr`). For a 0-based step s (the number of optimiser steps already taken, as
 * `LambdaLR` counts):
 *
 *   s < W:  lr = baseLr · s / W
 *   else:   p = (s − W) / max(1, N − W),  lr = minLr + (baseLr − minLr) · ½ (1 + cos(π p))
 *
 * One deliberate difference: past totalSteps, p is clamped to 1 so the rate stays at minLr (Hugging
 * Face's cosine climbs back up there).
 *
 * @param options peak lr, warmup and total steps, final lr
 * @returns the learning rate for a 0-based step
 *
 * @example 10 warmup steps to 1e-3, then down to 1e-4 at step 100
 * ```ts
 * import { cosineSchedule } from "./schedule.ts";
 * const lr = cosineSchedule({ baseLr: 1e-3, warmupSteps: 10, totalSteps: 100, minLr: 1e-4 });
 * lr(0); // 0
 * lr(5); // 5e-4
 * lr(10); // 1e-3
 * lr(55); // 5.5e-4 (half way down the cosine)
 * lr(100); // 1e-4
 * ```
 */
export function cosineSchedule(options: CosineScheduleOptions): (step: number) => number {
  const { baseLr, warmupSteps: W, totalSteps: N } = options;
  const minLr = options.minLr ?? 0;
  if (!Number.isFinite(baseLr) || baseLr < 0) {
    throw new RangeError(`cosineSchedule: baseLr must be finite and ≥ 0, not ${baseLr}`);
  }
  if (!Number.isInteger(W) || W < 0 || !Number.isInteger(N) || N < W) {
    throw new RangeError(
      `cosineSchedule: warmupSteps (${W}) and totalSteps (${N}) must be integers with 0 ≤ warmupSteps ≤ totalSteps`,
    );
  }
  if (!Number.isFinite(minLr) || minLr < 0 || minLr > baseLr) {
    throw new RangeError(`cosineSchedule: minLr must be in [0, baseLr = ${baseLr}], not ${minLr}`);
  }
  return (step: number) => {
    if (!Number.isFinite(step) || step < 0) {
      throw new RangeError(`cosineSchedule: step must be a finite number ≥ 0, not ${step}`);
    }
    // 1. Linear warmup from 0.
    if (step < W) return (baseLr * step) / Math.max(1, W);
    // 2. Cosine from baseLr to minLr over the remaining steps, then flat.
    const progress = Math.min(1, (step - W) / Math.max(1, N - W));
    return minLr + (baseLr - minLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
  };
}
