/**
 * The autograd tape: the forward pass records, per op, the backward dispatches to run and the
 * tensors they need; `backward` records them into a step in reverse order. Nothing is executed
 * until the step is submitted, so a whole training step (forwards, backwards, optimizer) is one
 * submit.
 *
 * @module
 */

import type { Step } from "./step.ts";

/** One recorded op: its name (for errors and profiles) and its backward recorder. */
interface TapeEntry {
  name: string;
  backward: (step: Step) => void;
}

/**
 * A list of backward recorders, replayed in reverse.
 *
 * @example Recording two ops and running their backward
 * ```ts
 * import { Tape } from "./tape.ts";
 * const tape = new Tape();
 * const order: string[] = [];
 * tape.record("a", () => order.push("a"));
 * tape.record("b", () => order.push("b"));
 * tape.backward({} as never);
 * console.log(order); // ["b", "a"]
 * ```
 */
export class Tape {
  #entries: TapeEntry[] = [];

  /** Number of recorded ops. */
  get length(): number {
    return this.#entries.length;
  }

  /**
   * Records an op's backward. The closure captures the tensors it needs (saved activations and
   * gradient buffers); they must stay untouched until `backward` has been recorded.
   */
  record(name: string, backward: (step: Step) => void): void {
    this.#entries.push({ name, backward });
  }

  /** Records every backward into `step`, newest op first, and clears the tape. */
  backward(step: Step): void {
    const entries = this.#entries;
    this.#entries = [];
    for (let i = entries.length - 1; i >= 0; i--) entries[i].backward(step);
  }

  /** Drops the recorded ops without running them. */
  clear(): void {
    this.#entries = [];
  }
}
