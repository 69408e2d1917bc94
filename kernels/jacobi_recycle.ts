/**
 * Rejection recycling for Jacobi decoding (after Jacobi Forcing, Hu et al. 2025, arXiv 2512.14681):
 * the model's predictions at every iteration go into a small pool, and at the next iterations the
 * continuations they hold after the next token are verified beside the Jacobi window, in the same
 * forward; the longest verified path wins.
 *
 * One forward runs NW + G·C rows: the Jacobi window (NW rows, causal among themselves), then G
 * candidate branches of C tokens. Branch g is [next token, C − 1 recycled tokens] at the window's
 * positions (row NW + g·C + j at position base + j), seeing the committed cache and its own rows
 * only (a static mask, {@linkcode recycleLayout}). The rows' K/V land in cache slots base + row.
 *
 * Per iteration, around the unchanged Jacobi acceptance (kernels/jacobi_accept.ts):
 * 1. `jacobi_recycle_verify`: pushes the window's predictions into the pool (a ring of R entries),
 *    counts each branch's verified prefix a_g (its first token is the known next token) against
 *    the window's a_0, and if a branch verifies more, copies its tokens and predictions over the
 *    window's first C rows and makes C the active length — so the Jacobi acceptance commits the
 *    branch's verified prefix and continues from its predictions — and records the K/V move of
 *    the branch's accepted rows to their committed slots;
 * 2. `jacobi_accept` commits, shifts and refills as always;
 * 3. `lookaheadMoveKv` per layer moves the winning branch's K/V (kernels/lookahead.ts);
 * 4. `jacobi_recycle_prepare`: builds the next branches: for pool entries from the newest but one
 *    back, the tokens after the first occurrence of the next token (padded with the window's
 *    guesses), skipping one equal to the window or an earlier branch.
 * Every committed token is verified as in Jacobi decoding, so the output is greedy AR's.
 *
 * @module
 */

import type { KernelSpec, Step, Tensor } from "../core/mod.ts";
import { type DecoderSlots, decoderSlots, slotConstantsWgsl } from "./decode_state.ts";

/** The state slots: Jacobi's (same indices), then the move, statistics and the pool's count. */
export const RECYCLE_SLOTS: DecoderSlots<
  | "active"
  | "blockStart"
  | "logCount"
  | "blockIters"
  | "blocks"
  | "moveSrc"
  | "moveDst"
  | "moveCount"
  | "recycled"
  | "hits"
  | "poolCount"
> = decoderSlots([
  "active",
  "blockStart",
  "logCount",
  "blockIters",
  "blocks",
  "moveSrc",
  "moveDst",
  "moveCount",
  "recycled",
  "hits",
  "poolCount",
]);

/** Pool entries kept (a ring; Jacobi Forcing's grid search settled on 4, more costs nothing here). */
export const RECYCLE_POOL = 8;

/** Shape of a recycling forward: the Jacobi window, the branches and their length. */
export interface RecycleShape {
  /** Window rows NW (K·n). */
  window: number;
  /** Branches G ≥ 1. */
  branches: number;
  /** Tokens per branch C, 2..NW. */
  length: number;
}

/** Rows, per-row relative positions and the (rows, words) attention mask of a recycling forward. */
export interface RecycleLayout {
  /** NW + G·C. */
  rows: number;
  /** Position of each row relative to base. */
  relPositions: Uint32Array;
  /** u32 words per mask row. */
  maskWords: number;
  /** Bit k of row t set when row t sees row k. */
  mask: Uint32Array;
}

/**
 * The static layout of a recycling forward (see the module doc).
 *
 * @example A window of 2 and one branch of 2
 * ```ts
 * import { recycleLayout } from "./jacobi_recycle.ts";
 * const l = recycleLayout({ window: 2, branches: 1, length: 2 });
 * [...l.relPositions]; // [0, 1, 0, 1]
 * [...l.mask]; // [0b1, 0b11, 0b100, 0b1100]
 * ```
 */
export function recycleLayout(shape: RecycleShape): RecycleLayout {
  const { window: NW, branches: G, length: C } = shape;
  if (!Number.isInteger(NW) || NW < 1) {
    throw new RangeError(`recycling: the window must be ≥ 1 rows, not ${NW}`);
  }
  if (!Number.isInteger(G) || G < 1) throw new RangeError(`recycling: branches must be ≥ 1, not ${G}`);
  if (!Number.isInteger(C) || C < 2 || C > NW) {
    throw new RangeError(`recycling: a branch holds 2..${NW} tokens (the window), not ${C}`);
  }
  const rows = NW + G * C;
  const words = Math.ceil(rows / 32);
  const mask = new Uint32Array(rows * words);
  const relPositions = new Uint32Array(rows);
  const see = (t: number, k: number) => (mask[t * words + (k >> 5)] |= 1 << (k & 31));
  for (let t = 0; t < NW; t++) {
    relPositions[t] = t;
    for (let k = 0; k <= t; k++) see(t, k);
  }
  for (let g = 0; g < G; g++) {
    for (let j = 0; j < C; j++) {
      const t = NW + g * C + j;
      relPositions[t] = j;
      for (let k = 0; k <= j; k++) see(t, NW + g * C + k);
    }
  }
  return { rows, relPositions, maskWords: words, mask };
}

/** WGSL constants of a shape. */
function _constants(shape: RecycleShape): string {
  return `${slotConstantsWgsl(RECYCLE_SLOTS)}
const NW: u32 = ${shape.window}u;
const G: u32 = ${shape.branches}u;
const C: u32 = ${shape.length}u;
const R: u32 = ${RECYCLE_POOL}u;
const ENTRY: u32 = ${shape.window + 1}u; // a pool entry: its length, then up to NW tokens`;
}

/** Step 1 (see the module doc). One invocation; every loop has a constant bound. */
export const jacobiRecycleVerifySpec: KernelSpec = {
  name: "jacobi_recycle_verify",
  bindings: [
    { name: "st", access: "read_write", type: "u32" },
    { name: "block", access: "read_write", type: "u32" }, // (NW + G·C)
    { name: "pred", access: "read_write", type: "u32" }, // (NW + G·C)
    { name: "pool", access: "read_write", type: "u32" }, // (R, 1 + NW)
  ],
  params: [],
  wgsl: (variant) => `
${_constants(variant as unknown as RecycleShape)}

@compute @workgroup_size(1)
fn main() {
  if (st[DONE] != 0u) { return; }
  let m = st[ACTIVE];
  // The window's predictions become the pool's newest entry.
  let slot = (st[POOL_COUNT] % R) * ENTRY;
  pool[slot] = m;
  for (var j = 0u; j < NW; j++) { if (j < m) { pool[slot + 1u + j] = pred[j]; } }
  st[POOL_COUNT] = st[POOL_COUNT] + 1u;
  // Verified prefixes: the window's, then each branch's (row 0 of each is the known next token).
  var a0 = m;
  for (var j = 1u; j < NW; j++) {
    if (j < m && block[j] != pred[j - 1u]) { a0 = j; break; }
  }
  var best = a0;
  var winner = 0u; // 0: the window; g + 1: branch g
  for (var g = 0u; g < G; g++) {
    let r0 = NW + g * C;
    var a = C;
    for (var j = 1u; j < C; j++) {
      if (block[r0 + j] != pred[r0 + j - 1u]) { a = j; break; }
    }
    if (a > best) { best = a; winner = g + 1u; }
  }
  st[MOVE_COUNT] = 0u;
  if (winner > 0u) {
    let r0 = NW + (winner - 1u) * C;
    for (var j = 0u; j < C; j++) {
      block[j] = block[r0 + j];
      pred[j] = pred[r0 + j];
    }
    st[ACTIVE] = C;
    st[MOVE_SRC] = st[BASE] + r0;
    st[MOVE_DST] = st[BASE];
    st[MOVE_COUNT] = best;
    st[RECYCLED] = st[RECYCLED] + best - a0;
    st[HITS] = st[HITS] + 1u;
  }
}`,
};

/** Step 4 (see the module doc). One invocation; every loop has a constant bound. */
export const jacobiRecyclePrepareSpec: KernelSpec = {
  name: "jacobi_recycle_prepare",
  bindings: [
    { name: "st", access: "read", type: "u32" },
    { name: "block", access: "read_write", type: "u32" },
    { name: "pool", access: "read", type: "u32" },
  ],
  params: [],
  wgsl: (variant) => `
${_constants(variant as unknown as RecycleShape)}

// Whether branch rows [r0, r0 + C) equal the rows [o, o + C).
fn same(r0: u32, o: u32) -> bool {
  for (var j = 0u; j < C; j++) { if (block[r0 + j] != block[o + j]) { return false; } }
  return true;
}

@compute @workgroup_size(1)
fn main() {
  if (st[DONE] != 0u) { return; }
  let nxt = block[0];
  let count = st[POOL_COUNT];
  var made = 0u;
  // Entries from the newest but one (the newest holds the window's own next guesses) back.
  for (var back = 1u; back < R; back++) {
    if (made >= G || back >= count) { break; }
    let e = ((count - 1u - back) % R) * ENTRY;
    let len = pool[e];
    var p = NW;
    for (var j = 0u; j + 1u < NW; j++) {
      if (j + 1u < len && pool[e + 1u + j] == nxt) { p = j; break; }
    }
    if (p == NW) { continue; }
    let r0 = NW + made * C;
    for (var j = 0u; j < C; j++) {
      if (p + j < len) { block[r0 + j] = pool[e + 1u + p + j]; } else { block[r0 + j] = block[j]; }
    }
    var dup = same(r0, 0u);
    for (var g = 0u; g < G; g++) { if (g < made && same(r0, NW + g * C)) { dup = true; } }
    if (!dup) { made = made + 1u; }
  }
  // Unused branches copy the window: they verify no further than it, so they never win.
  for (var g = 0u; g < G; g++) {
    if (g >= made) {
      for (var j = 0u; j < C; j++) { block[NW + g * C + j] = block[j]; }
    }
  }
}`,
};

/** Records step 1 (before `jacobiAccept`). */
export function jacobiRecycleVerify(
  step: Step,
  a: { st: Tensor; block: Tensor; pred: Tensor; pool: Tensor; shape: RecycleShape },
): void {
  step.dispatch(jacobiRecycleVerifySpec, {
    variant: { ...a.shape },
    bindings: { st: a.st, block: a.block, pred: a.pred, pool: a.pool },
    params: {},
    workgroups: [1],
  });
}

/** Records step 4 (after `jacobiAccept` and the K/V move; after `jacobiStart` too). */
export function jacobiRecyclePrepare(
  step: Step,
  a: { st: Tensor; block: Tensor; pool: Tensor; shape: RecycleShape },
): void {
  step.dispatch(jacobiRecyclePrepareSpec, {
    variant: { ...a.shape },
    bindings: { st: a.st, block: a.block, pool: a.pool },
    params: {},
    workgroups: [1],
  });
}

/** Words of the pool buffer. */
export function recyclePoolWords(shape: RecycleShape): number {
  return RECYCLE_POOL * (shape.window + 1);
}

/**
 * CPU reference of step 1, on plain arrays (mutated like the kernel's buffers).
 *
 * @example Branch 0 verifies 2 tokens where the window verified 1
 * ```ts
 * import { jacobiRecycleVerifyReference, RECYCLE_SLOTS, recyclePoolWords } from "./jacobi_recycle.ts";
 * const shape = { window: 2, branches: 1, length: 2 };
 * const st = new Uint32Array(16);
 * st[RECYCLE_SLOTS.active] = 2;
 * st[RECYCLE_SLOTS.base] = 10;
 * const block = new Uint32Array([5, 9, 5, 6]), pred = new Uint32Array([6, 1, 6, 7]);
 * jacobiRecycleVerifyReference(st, block, pred, new Uint32Array(recyclePoolWords(shape)), shape);
 * [...block.slice(0, 2)]; // [5, 6]: the branch's tokens, now the window's
 * st[RECYCLE_SLOTS.moveCount]; // 2
 * st[RECYCLE_SLOTS.moveSrc]; // 12: base + the branch's first row
 * ```
 */
export function jacobiRecycleVerifyReference(
  st: Uint32Array,
  block: Uint32Array,
  pred: Uint32Array,
  pool: Uint32Array,
  shape: RecycleShape,
): void {
  const S = RECYCLE_SLOTS, { window: NW, branches: G, length: C } = shape, E = NW + 1;
  if (st[S.done]) return;
  const m = st[S.active];
  const slot = (st[S.poolCount] % RECYCLE_POOL) * E;
  pool[slot] = m;
  for (let j = 0; j < m; j++) pool[slot + 1 + j] = pred[j];
  st[S.poolCount]++;
  let a0 = m;
  for (let j = 1; j < m; j++) {
    if (block[j] !== pred[j - 1]) {
      a0 = j;
      break;
    }
  }
  let best = a0, winner = 0;
  for (let g = 0; g < G; g++) {
    const r0 = NW + g * C;
    let a = C;
    for (let j = 1; j < C; j++) {
      if (block[r0 + j] !== pred[r0 + j - 1]) {
        a = j;
        break;
      }
    }
    if (a > best) [best, winner] = [a, g + 1];
  }
  st[S.moveCount] = 0;
  if (winner > 0) {
    const r0 = NW + (winner - 1) * C;
    for (let j = 0; j < C; j++) [block[j], pred[j]] = [block[r0 + j], pred[r0 + j]];
    st[S.active] = C;
    st[S.moveSrc] = st[S.base] + r0;
    st[S.moveDst] = st[S.base];
    st[S.moveCount] = best;
    st[S.recycled] += best - a0;
    st[S.hits]++;
  }
}

/** CPU reference of step 4 (mutates `block`). */
export function jacobiRecyclePrepareReference(
  st: Uint32Array,
  block: Uint32Array,
  pool: Uint32Array,
  shape: RecycleShape,
): void {
  const S = RECYCLE_SLOTS, { window: NW, branches: G, length: C } = shape, E = NW + 1;
  if (st[S.done]) return;
  const nxt = block[0], count = st[S.poolCount];
  const rows = (o: number) => Array.from(block.subarray(o, o + C));
  let made = 0;
  for (let back = 1; back < RECYCLE_POOL && made < G && back < count; back++) {
    const e = ((count - 1 - back) % RECYCLE_POOL) * E;
    const len = pool[e];
    let p = -1;
    for (let j = 0; j + 1 < Math.min(len, NW); j++) {
      if (pool[e + 1 + j] === nxt) {
        p = j;
        break;
      }
    }
    if (p < 0) continue;
    const r0 = NW + made * C;
    for (let j = 0; j < C; j++) block[r0 + j] = p + j < len ? pool[e + 1 + p + j] : block[j];
    const cand = rows(r0).join();
    const dup = cand === rows(0).join() || Array.from({ length: made }, (_, g) => rows(NW + g * C).join())
      .includes(cand);
    if (!dup) made++;
  }
  for (let g = made; g < G; g++) for (let j = 0; j < C; j++) block[NW + g * C + j] = block[j];
}
