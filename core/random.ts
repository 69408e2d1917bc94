/**
 * The project's one seeded PRNG (mulberry32, Tommy Ettinger): small, fast, 32 bits of state that a
 * checkpoint can save, so sampling, data order and generated data reproduce from a seed.
 *
 * @module
 */

/**
 * mulberry32 with its state exposed.
 *
 * @example Reproducible draws
 * ```ts
 * import { SeededRandom } from "./random.ts";
 * const a = new SeededRandom(7), b = new SeededRandom(7);
 * console.log(a.next() === b.next()); // true
 * ```
 */
export class SeededRandom {
  /** The 32-bit state; saving it and constructing from it continues the sequence. */
  state: number;

  /** Starts from `seed` (any number; taken as an unsigned 32-bit integer). */
  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

/**
 * A seeded function returning floats in [0, 1).
 *
 * @example
 * ```ts
 * import { seededRandom } from "./random.ts";
 * const r = seededRandom(1);
 * console.log(r() < 1); // true
 * ```
 */
export function seededRandom(seed: number): () => number {
  const g = new SeededRandom(seed);
  return () => g.next();
}
