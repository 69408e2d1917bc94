/**
 * When the GPU-resident decoding loops (greedy AR, Jacobi, lookahead) read their state back, and
 * how much work they submit around each read.
 *
 * In Deno a read (`mapAsync`) blocks the calling thread until the GPU has finished the work
 * submitted before it, then resolves only after a fixed wait of ~10 ms (docs/webgpu.md §2). Work
 * submitted right after the read is issued runs during that wait, so a loop submits some iterations
 * "before" each read (the host sees their result) and some "behind" it (they fill the wait; the
 * host sees them at the next read).
 *
 * - {@linkcode fixedCadence}: a set number before and behind every read (tests, benchmarks, and the
 *   one-readback-per-iteration loop).
 * - {@linkcode adaptiveCadence} (the default): nothing before a read, and behind it as many
 *   iterations as fill the wait, learned from the loop's own timings: an iteration's time from
 *   how long each read blocked, the wait from how long each read took to resolve. What it learns
 *   is kept per model and loop, so the next generation starts tuned. On the embedded model it
 *   settled at 2-4 iterations on llvmpipe; faster forwards get more, a bigger model fewer.
 *
 * Iterations behind the read that sees the end are wasted, but they run during a wait the loop
 * pays anyway.
 *
 * In a browser a read is cheap: `mapAsync` returns at once and resolves within ~0.1 ms of the GPU
 * finishing the work before it, so there is no wait to fill, and the blocking-based learning above
 * would read every read as "GPU idle" and pile up to {@linkcode MAX_BEHIND} iterations per read
 * (measured: Jacobi doing 1.6-2.1x the work, slower than AR). Where the device's idle read
 * (`Gpu.readbackMs`) is under {@linkcode CHEAP_READ_MS}, the adaptive cadence keeps one iteration
 * behind each read instead: the GPU stays busy while the host looks at the result, and at most one
 * iteration is wasted at the end.
 *
 * @module
 */

/** The cadence of one generation; the loop calls the hooks as it goes. */
export interface Cadence {
  /** Iterations of the first submit (behind the prefill's read). */
  first(): number;
  /** Iterations to submit before the next read. */
  before(): number;
  /** Iterations to submit behind the read just issued. */
  behind(): number;
  /** A read was issued at `issued` and its call returned at `returned` (`performance.now()`). */
  issued(issued: number, returned: number): void;
  /** `count` iterations were submitted (fewer than asked near the end of the budget). */
  submitted(count: number): void;
  /** The read resolved at `resolved`. */
  resolved(resolved: number): void;
}

/**
 * `before` iterations before every read and `behind` behind it, and `first` (default `before`) in
 * the first submit. Every readback has at least one iteration to show: with nothing behind a read,
 * at least one goes before it, and the first submit has at least one.
 *
 * @example One readback per iteration, nothing behind
 * ```ts
 * import { fixedCadence } from "./cadence.ts";
 * const c = fixedCadence(1, 0);
 * console.log(c.first(), c.before(), c.behind()); // 1 1 0
 * ```
 */
export function fixedCadence(before: number, behind: number, first = before): Cadence {
  const a = Math.max(0, Math.floor(behind));
  const b = Math.max(a > 0 ? 0 : 1, Math.floor(before));
  const f = Math.max(1, Math.floor(first));
  return {
    first: () => f,
    before: () => b,
    behind: () => a,
    issued() {},
    submitted() {},
    resolved() {},
  };
}

/** What an adaptive cadence has learned about one loop on one model. */
interface Learned {
  /** Iterations behind each read. */
  behind: number;
  /** Milliseconds from a read's call returning to its resolving (the fixed wait), smoothed. */
  waitMs: number;
}

const learnedByLoop = new WeakMap<object, Map<string, Learned>>();

/** A read that blocked for less than this found the GPU idle (milliseconds). */
const IDLE_MS = 0.3;

/**
 * The adaptive cadence of one generation of `loop` (e.g. `"jacobi n=16"`) on `model`: nothing
 * before each read, and behind it enough iterations to keep the GPU busy through the read's wait.
 *
 * After each read: if its call returned at once, the GPU had gone idle during the last wait, so one
 * more iteration goes behind the next read; otherwise the GPU was busy all along, the call's return
 * times give an iteration's time t, and `ceil(wait / t)` go behind: the fewest that outlast the
 * wait.
 *
 * @param model any object standing for the model (what is learned is kept per object)
 * @param loop the loop and its shape (a Jacobi block of 16 rows costs more than an AR step)
 * @param start iterations behind the first reads, before anything is learned (≥ 1)
 * @param max the most iterations behind one read (≥ 1; default {@linkcode MAX_BEHIND})
 * @param readbackMs the device's idle read time (`Gpu.readbackMs`); under {@linkcode CHEAP_READ_MS},
 *   one iteration behind each read, always
 *
 * @example The cadence a greedy loop asks for
 * ```ts
 * import { adaptiveCadence } from "./cadence.ts";
 * const model = {};
 * const c = adaptiveCadence(model, "ar", 3, 32);
 * console.log(c.first(), c.before(), c.behind()); // 3 0 3
 * ```
 */
export function adaptiveCadence(
  model: object,
  loop: string,
  start: number,
  max = MAX_BEHIND,
  readbackMs = 10,
): Cadence {
  if (readbackMs < CHEAP_READ_MS) return fixedCadence(0, 1, 1);
  const top = Math.max(1, Math.floor(max));
  let byLoop = learnedByLoop.get(model);
  if (!byLoop) learnedByLoop.set(model, byLoop = new Map());
  let learned = byLoop.get(loop);
  if (!learned) {
    byLoop.set(loop, learned = { behind: Math.min(top, Math.max(1, Math.floor(start))), waitMs: 10 });
  }
  const l = learned;
  let lastReturned = -1; // when the previous read's call returned: the GPU was idle then
  let lastSubmitted = 0; // iterations submitted since then
  return {
    first: () => l.behind,
    before: () => 0,
    behind: () => l.behind,
    issued(issuedAt, returnedAt) {
      if (lastReturned >= 0 && lastSubmitted > 0) {
        if (returnedAt - issuedAt < IDLE_MS) {
          // Idle before the read: the work behind the last one ended inside its wait.
          if (lastSubmitted >= l.behind) l.behind = Math.min(top, l.behind + 1);
        } else {
          // Busy from the last return to this one, on `lastSubmitted` iterations.
          const t = (returnedAt - lastReturned) / lastSubmitted;
          l.behind = Math.min(top, Math.max(1, Math.ceil(l.waitMs / t)));
        }
      }
      lastReturned = returnedAt;
      lastSubmitted = 0;
    },
    submitted(count) {
      lastSubmitted += count;
    },
    resolved(resolvedAt) {
      if (lastReturned >= 0) l.waitMs = 0.75 * l.waitMs + 0.25 * (resolvedAt - lastReturned);
    },
  };
}

/**
 * How often a GPU-resident decoder reads back, in one vocabulary for every decoder: an
 * *iteration* is one forward of the decoder's loop (a greedy AR step, a Jacobi iteration, a
 * lookahead step).
 */
export interface ReadbackOptions {
  /**
   * Iterations submitted before each readback; setting it fixes the cadence (1 with
   * `iterationsBehindReadback: 0` reads back after every iteration). Default: adaptive (nothing
   * before each read, as many behind it as fill its wait).
   */
  iterationsPerReadback?: number;
  /**
   * Iterations submitted right after each readback is issued, to run during its fixed wait: with a
   * fixed cadence always this many (0 leaves the GPU idle while the host waits); with the adaptive
   * one, where it starts. Default: the decoder's (about 10 ms of its forwards on llvmpipe).
   */
  iterationsBehindReadback?: number;
}

/**
 * The cadence `options` ask for: fixed when `iterationsPerReadback` is given (with
 * `iterationsBehindReadback` behind each read, default `start`), else adaptive, starting from
 * `iterationsBehindReadback` or `start` (one behind each read where reads are cheap: `readbackMs`).
 *
 * @example
 * ```ts
 * import { chooseCadence } from "./cadence.ts";
 * const c = chooseCadence({}, "ar", { iterationsPerReadback: 16, iterationsBehindReadback: 3 }, 3);
 * console.log(c.before(), c.behind()); // 16 3
 * ```
 */
export function chooseCadence(
  model: object,
  loop: string,
  options: ReadbackOptions,
  start: number,
  readbackMs = 10,
): Cadence {
  const behind = options.iterationsBehindReadback;
  return options.iterationsPerReadback !== undefined
    ? fixedCadence(options.iterationsPerReadback, behind ?? start)
    : adaptiveCadence(model, loop, behind ?? start, MAX_BEHIND, readbackMs);
}

/** An idle read faster than this (milliseconds) is a browser's cheap read (see the module notes). */
export const CHEAP_READ_MS = 2;

/** The most iterations an adaptive cadence puts behind one read. */
export const MAX_BEHIND = 32;

/**
 * What an adaptive cadence has learned for `loop` on `model` so far: iterations behind each read
 * and the read's wait in milliseconds (undefined before its first generation).
 *
 * @example
 * ```ts
 * import { learnedCadence } from "./cadence.ts";
 * console.log(learnedCadence({}, "ar")); // undefined
 * ```
 */
export function learnedCadence(model: object, loop: string): { behind: number; waitMs: number } | undefined {
  const l = learnedByLoop.get(model)?.get(loop);
  return l ? { ...l } : undefined;
}

/**
 * Issues a read through `read` and reports to `cadence` when it was issued, when the call returned
 * (in Deno, once the GPU had done the work before it) and when it resolved.
 *
 * @example
 * ```ts ignore
 * const state = await timedRead(cadence, () => readTensors(gpu, [st]));
 * ```
 */
export function timedRead<T>(cadence: Cadence, read: () => Promise<T>): Promise<T> {
  const issued = performance.now();
  const promise = read();
  cadence.issued(issued, performance.now());
  return promise.then((value) => {
    cadence.resolved(performance.now());
    return value;
  });
}
