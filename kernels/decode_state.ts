/**
 * The authoring kit of the GPU-resident decoders' kernels (Jacobi: jacobi_accept.ts; lookahead:
 * lookahead.ts): the state layout they share, the WGSL constants generated from it, the PRNG, the
 * EOS test and the commit step that writes verified tokens and stops the loop.
 *
 * Every decoder keeps its loop state in one u32 tensor `st`. Its first slots are common to all
 * decoders ({@linkcode DECODE_SLOTS}: the committed length, done flag, forward count, end and PRNG
 * counter), so the host reads every decoder the same way; each decoder appends its own slots after
 * them ({@linkcode decoderSlots}).
 *
 * @module
 */

/** The state slots every GPU-resident decoder has, at these indices. */
export const DECODE_SLOTS = {
  /** Committed length: the KV cache length, and where the next block or `lst` sits. */
  base: 0,
  /** 1 once generation has stopped (EOS or budget). */
  done: 1,
  /** Forward passes counted while not done (prefill excluded). */
  forwards: 2,
  /** Exclusive end of the committed tokens once done. */
  end: 3,
  /** PRNG draws so far. */
  rng: 4,
} as const;

/** Number of u32 slots in every decoder's state tensor. */
export const DECODE_STATE_SIZE = 16;

/** A decoder's slot table: the common slots and the decoder's own, by name. */
export type DecoderSlots<K extends string> = typeof DECODE_SLOTS & { readonly [k in K]: number };

/**
 * A decoder's slot table: the common slots, then `own` slots numbered from the first free index.
 *
 * @example
 * ```ts
 * import { decoderSlots } from "./decode_state.ts";
 * decoderSlots(["active", "blocks"]); // { base: 0, done: 1, forwards: 2, end: 3, rng: 4, active: 5, blocks: 6 }
 * ```
 */
export function decoderSlots<const K extends string>(own: readonly K[]): DecoderSlots<K> {
  const first = Object.keys(DECODE_SLOTS).length;
  if (first + own.length > DECODE_STATE_SIZE) {
    throw new RangeError(
      `At most ${DECODE_STATE_SIZE - first} decoder slots fit in the state, not ${own.length}`,
    );
  }
  return Object.freeze({
    ...DECODE_SLOTS,
    ...Object.fromEntries(own.map((k, i) => [k, first + i])),
  }) as DecoderSlots<K>;
}

/**
 * WGSL constants for a slot table: `camelCase` names become `UPPER_SNAKE` (`blockStart` →
 * `BLOCK_START`), so a kernel writes `st[BLOCK_START]` and the host reads `st[SLOTS.blockStart]`.
 *
 * @example
 * ```ts
 * import { slotConstantsWgsl } from "./decode_state.ts";
 * slotConstantsWgsl({ base: 0, blockStart: 6 }).split("\n"); // ["const BASE = 0u;", "const BLOCK_START = 6u;"]
 * ```
 */
export function slotConstantsWgsl(slots: Readonly<Record<string, number>>): string {
  return Object.entries(slots)
    .map(([name, i]) => `const ${name.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()} = ${i}u;`)
    .join("\n");
}

/**
 * WGSL of `pcg(v)`: the PCG hash (Jarzynski & Olano 2020), a stateless 32-bit generator keyed by
 * seed and counter, for the kernels that draw guesses. {@linkcode pcgHash} is its CPU twin.
 */
export const PCG_WGSL = `fn pcg(v: u32) -> u32 {
  let state = v * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}`;

/**
 * The PCG hash on the CPU, bit-exact with {@linkcode PCG_WGSL}.
 *
 * @example
 * ```ts
 * import { pcgHash } from "./decode_state.ts";
 * pcgHash(0) === pcgHash(0); // true
 * ```
 */
export function pcgHash(v: number): number {
  const state = (Math.imul(v >>> 0, 747796405) + 2891336453) >>> 0;
  const word = Math.imul(((state >>> ((state >>> 28) + 4)) ^ state) >>> 0, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/**
 * WGSL of the commit step, for a kernel with bindings `st`, `tokens` and `eos`, a `limit`
 * parameter and the compile-time constant `EOS_COUNT` (constant loop bounds run far faster on
 * llvmpipe than a uniform's):
 * - `isEos(t)`: whether t is a stop token;
 * - `stopAt(end)`: marks the loop done with the committed tokens ending at `end`;
 * - `commit(pos, t)`: writes token t at pos unless pos is at the budget's limit; stops the loop at
 *   the limit or after the first EOS (kept). Returns false once the loop stopped.
 */
export const COMMIT_WGSL = `fn isEos(t: u32) -> bool {
  for (var i = 0u; i < EOS_COUNT; i++) { if (eos[i] == t) { return true; } }
  return false;
}

fn stopAt(end: u32) {
  st[DONE] = 1u;
  st[END] = end;
}

fn commit(pos: u32, t: u32) -> bool {
  if (pos >= P.limit) { stopAt(P.limit); return false; }
  tokens[pos] = t;
  if (isEos(t)) { stopAt(pos + 1u); return false; }
  return true;
}`;
