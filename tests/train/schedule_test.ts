import assert from "node:assert/strict";
import { cosineSchedule } from "../../train/schedule.ts";
import { assertClose } from "../_assert.ts";

// Pure f64 arithmetic on both sides: only the last bits of cos differ.
const TOL = { atol: 1e-15, rtol: 1e-12 };

/** Hugging Face's lr_lambda for get_cosine_with_min_lr_schedule_with_warmup, transcribed. */
function hfLambda(step: number, warmup: number, total: number, minLrRate: number): number {
  if (step < warmup) return step / Math.max(1, warmup);
  const progress = (step - warmup) / Math.max(1, total - warmup);
  const factor = 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress));
  return factor * (1 - minLrRate) + minLrRate;
}

Deno.test("cosineSchedule matches Hugging Face's cosine with warmup (and min lr) up to totalSteps", () => {
  for (
    const [baseLr, warmup, total, minLr] of [[1e-3, 10, 100, 0], [2e-5, 3, 50, 2e-6], [0.5, 0, 7, 0.1], [
      1,
      4,
      4,
      0,
    ]]
  ) {
    const lr = cosineSchedule({ baseLr, warmupSteps: warmup, totalSteps: total, minLr });
    const steps = Array.from({ length: total + 1 }, (_, s) => s);
    assertClose(
      steps.map(lr),
      steps.map((s) => baseLr * hfLambda(s, warmup, total, minLr / baseLr)),
      TOL,
      `baseLr ${baseLr} warmup ${warmup} total ${total} minLr ${minLr}`,
    );
  }
});

Deno.test("cosineSchedule: hand values, the flat tail, and bad options", () => {
  const lr = cosineSchedule({ baseLr: 1e-3, warmupSteps: 10, totalSteps: 110 });
  assert.equal(lr(0), 0); // warmup starts at 0 (HF: the first update uses lr 0)
  assertClose([lr(1), lr(5), lr(10)], [1e-4, 5e-4, 1e-3], TOL, "linear warmup");
  assertClose([lr(60), lr(35), lr(110)], [5e-4, 1e-3 * (0.5 + 0.5 * Math.SQRT1_2), 0], TOL, "cosine");
  assertClose([lr(111), lr(1000)], [0, 0], TOL, "flat after totalSteps");
  const withMin = cosineSchedule({ baseLr: 1, warmupSteps: 0, totalSteps: 2, minLr: 0.2 });
  assertClose([withMin(0), withMin(1), withMin(2), withMin(5)], [1, 0.6, 0.2, 0.2], TOL, "min lr");
  // Monotone: up during warmup, down after.
  const values = Array.from({ length: 111 }, (_, s) => lr(s));
  for (let s = 1; s <= 10; s++) assert.ok(values[s] > values[s - 1], `warmup rises at ${s}`);
  for (let s = 11; s <= 110; s++) assert.ok(values[s] < values[s - 1], `cosine falls at ${s}`);
  assert.throws(() => cosineSchedule({ baseLr: -1, warmupSteps: 0, totalSteps: 1 }), /baseLr must be/);
  assert.throws(
    () => cosineSchedule({ baseLr: 1, warmupSteps: 5, totalSteps: 4 }),
    /0 ≤ warmupSteps ≤ totalSteps/,
  );
  assert.throws(
    () => cosineSchedule({ baseLr: 1, warmupSteps: 0, totalSteps: 4, minLr: 2 }),
    /minLr must be/,
  );
  assert.throws(() => lr(-1), /step must be/);
});
