/**
 * Lookahead decoding (LADE, docs/method.md §10) on the GPU: the static block layout, the n-gram
 * pool, and the kernels of one decoding step.
 *
 * Dimension letters: N n-gram size, W window width, G guesses (candidates per step), V vocabulary,
 * T rows of one forward = (N−1)·(W+G), KVH·D values per cache row.
 *
 * Block layout (row indices of the one forward per step; relative positions after the arrow):
 * - window: level l (0..N−2), column i (0..W−1) at row l·W + i → position l + i. Row 0 (level 0,
 *   column 0) is `lst`, the last committed token, not yet in the KV cache; the other rows are the
 *   Jacobi iterates, level l being the iterate from l steps ago;
 * - candidates: guess g (0..G−1), token k (0..N−2) at row (N−1)·W + g·(N−1) + k → position 1 + k.
 * The mask: window row (l, i) sees level-0 columns 0..i and column i of levels 1..l (so it reads a
 * contiguous text at positions 0..l+i); candidate (g, k) sees `lst` and its own tokens 0..k.
 * Window rows never see candidates. Everything is static for (N, W, G): built once on the host.
 *
 * The pool (`token_map` of LADE) is a flat u32 table: `pool[key]` (key < V) is the number of
 * n-grams stored under the key, and n-gram j (0 = oldest) of the key is the N−1 tokens at
 * `V + (key·G + j)·(N−1)`. Insertion is LRU as in LADE: an n-gram already present moves to the
 * most-recent end, and a full list drops its oldest.
 *
 * The state `st` ({@linkcode LOOKAHEAD_SLOTS}) holds everything the loop needs, so many steps are
 * recorded per submit: forward → argmax → {@linkcode lookaheadAccept} → {@linkcode lookaheadMoveKv}
 * per layer → next forward.
 *
 * @module
 */

import type { KernelSpec, Step, Tensor, Variant } from "../core/mod.ts";
import { grid1d } from "./add.ts";
import {
  COMMIT_WGSL,
  DECODE_STATE_SIZE,
  type DecoderSlots,
  decoderSlots,
  PCG_WGSL,
  pcgHash,
  slotConstantsWgsl,
} from "./decode_state.ts";
import { DRAW, RANDOM_WGSL, SAMPLING_PROB_WGSL } from "./sample.ts";

/**
 * Slots of the lookahead state tensor `st` (u32): the common ones of every decoder
 * (kernels/decode_state.ts: base = KV cache length = position of `lst`, block row 0, so tokens at
 * positions ≤ base are committed; done; forwards; end; rng, the draws of the initial window), then
 * lookahead's own:
 * - `accepted`: tokens committed beyond the one guaranteed token per step (verified candidates);
 * - `valid`: valid candidates in the current block (the rest are padding that can never win);
 * - `moveSrc`, `moveDst`, `moveCount`: the last step's KV move (first source and destination slot,
 *   rows);
 * - `hitSteps`: steps that committed at least one verified candidate token.
 */
export const LOOKAHEAD_SLOTS: DecoderSlots<
  "accepted" | "valid" | "moveSrc" | "moveDst" | "moveCount" | "hitSteps"
> = decoderSlots([
  "accepted",
  "valid",
  "moveSrc",
  "moveDst",
  "moveCount",
  "hitSteps",
]);

/** Number of u32 slots in the state tensor. */
export const LOOKAHEAD_STATE_SIZE = DECODE_STATE_SIZE;

// ----------------------------------------------------------------------------------------------
// Static layout (host)

/** The shape of a lookahead step: n-gram size N, window width W, guesses G. */
export interface LookaheadShape {
  /** N ≥ 3: levels 0..N−2 in the window, candidates of N−1 tokens. */
  ngram: number;
  /** W ≥ 1: window columns. */
  window: number;
  /** G ≥ 1: candidates verified per step (and n-grams kept per pool key). */
  guesses: number;
}

/** The constant tensors of a lookahead forward. */
export interface LookaheadLayout {
  /** T = (N−1)·(W+G). */
  rows: number;
  /** Position of each row relative to `lst` (u32, T). */
  relPositions: Uint32Array;
  /** u32 words per mask row: ceil(T/32). */
  maskWords: number;
  /** (T, maskWords) bit matrix: bit u of row t set = row t sees block row u. */
  mask: Uint32Array;
}

/**
 * Throws a RangeError unless N, W, G are valid for the kernels.
 *
 * @param shape the configuration to check
 */
export function checkLookaheadShape(shape: LookaheadShape): void {
  const { ngram: N, window: W, guesses: G } = shape;
  if (!Number.isInteger(N) || N < 3) {
    throw new RangeError(
      `Lookahead n-gram size must be an integer ≥ 3, not ${N} ` +
        `(N = 2 would have no lookahead level; use Jacobi decoding instead)`,
    );
  }
  if (!Number.isInteger(W) || W < 1) {
    throw new RangeError(`Lookahead window must be an integer ≥ 1, not ${W}`);
  }
  if (!Number.isInteger(G) || G < 1) {
    throw new RangeError(`Lookahead guesses must be an integer ≥ 1, not ${G}`);
  }
}

/** Rows of one lookahead forward: T = (N−1)·(W+G). */
export function lookaheadRows(shape: LookaheadShape): number {
  return (shape.ngram - 1) * (shape.window + shape.guesses);
}

/** Block row of window level l, column i (level 0 column 0 is `lst`, row 0). */
export function windowRow(shape: LookaheadShape, level: number, column: number): number {
  return level * shape.window + column;
}

/** Block row of candidate g, token k. */
export function candidateRow(shape: LookaheadShape, g: number, k: number): number {
  return (shape.ngram - 1) * shape.window + g * (shape.ngram - 1) + k;
}

/**
 * Builds the relative positions and the attention mask of a lookahead forward.
 *
 * @param shape N, W, G
 * @returns rows, positions and mask
 *
 * @example N = 3, W = 2, G = 1: 6 rows
 * ```ts
 * import { lookaheadLayout } from "./lookahead.ts";
 * const { rows, relPositions } = lookaheadLayout({ ngram: 3, window: 2, guesses: 1 });
 * // rows = 6; relPositions = [0, 1, 1, 2, 1, 2]: lst, level 0 column 1, level 1, candidate
 * ```
 */
export function lookaheadLayout(shape: LookaheadShape): LookaheadLayout {
  checkLookaheadShape(shape);
  const { ngram: N, window: W, guesses: G } = shape;
  const T = lookaheadRows(shape);
  const maskWords = Math.ceil(T / 32);
  const relPositions = new Uint32Array(T);
  const mask = new Uint32Array(T * maskWords);
  const see = (t: number, u: number) => (mask[t * maskWords + (u >> 5)] |= 1 << (u & 31));
  // Window: row (l, i) at position l + i reads level-0 columns 0..i, then column i of levels 1..l.
  for (let l = 0; l <= N - 2; l++) {
    for (let i = 0; i < W; i++) {
      const t = windowRow(shape, l, i);
      relPositions[t] = l + i;
      for (let j = 0; j <= i; j++) see(t, windowRow(shape, 0, j));
      for (let m = 1; m <= l; m++) see(t, windowRow(shape, m, i));
    }
  }
  // Candidates: token k at position 1 + k reads lst and tokens 0..k of its own candidate.
  for (let g = 0; g < G; g++) {
    for (let k = 0; k < N - 1; k++) {
      const t = candidateRow(shape, g, k);
      relPositions[t] = 1 + k;
      see(t, 0);
      for (let j = 0; j <= k; j++) see(t, candidateRow(shape, g, j));
    }
  }
  return { rows: T, relPositions, maskWords, mask };
}

// ----------------------------------------------------------------------------------------------
// Pool (host side: LRU lists, and their flat GPU encoding)

/** The n-gram pool as LADE keeps it: key → (N−1)-token tuples, oldest first. */
export type NgramPool = Map<number, number[][]>;

/**
 * LRU insert of one n-gram, as LADE's `update_token_map` (mutates `pool`).
 *
 * @param pool the pool
 * @param key first token
 * @param value the other N−1 tokens
 * @param guesses G, the most tuples kept per key
 */
export function poolInsert(pool: NgramPool, key: number, value: readonly number[], guesses: number): void {
  let list = pool.get(key);
  if (!list) pool.set(key, list = []);
  const at = list.findIndex((v) => v.length === value.length && v.every((x, k) => x === value[k]));
  if (at >= 0) list.splice(at, 1);
  else if (list.length >= guesses) list.shift();
  list.push([...value]);
}

/**
 * The pool seeded with every n-gram of the prompt, in order (LADE's `fill_pool_with_prompt`).
 *
 * @param prompt token ids
 * @param shape N and G
 * @returns the pool
 *
 * @example
 * ```ts
 * import { promptPool } from "./lookahead.ts";
 * [...promptPool([5, 6, 7, 5, 6, 8], { ngram: 3, guesses: 2 })]; // [[5, [[6, 7], [6, 8]]], [6, [[7, 5]]], [7, [[5, 6]]]]
 * ```
 */
export function promptPool(
  prompt: readonly number[],
  shape: Pick<LookaheadShape, "ngram" | "guesses">,
): NgramPool {
  const pool: NgramPool = new Map();
  const N = shape.ngram;
  for (let i = 0; i + N <= prompt.length; i++) {
    poolInsert(pool, prompt[i], prompt.slice(i + 1, i + N), shape.guesses);
  }
  return pool;
}

/** u32 words of the flat pool: V counts, then V·G·(N−1) tokens. */
export function poolWords(vocabSize: number, shape: Pick<LookaheadShape, "ngram" | "guesses">): number {
  return vocabSize * (1 + shape.guesses * (shape.ngram - 1));
}

/**
 * Encodes a pool as the GPU table (keys ≥ V are dropped: no token can ever be them).
 *
 * @param pool the pool
 * @param vocabSize V
 * @param shape N and G
 * @returns the flat table
 */
export function encodePool(
  pool: NgramPool,
  vocabSize: number,
  shape: Pick<LookaheadShape, "ngram" | "guesses">,
): Uint32Array {
  const n1 = shape.ngram - 1;
  const out = new Uint32Array(poolWords(vocabSize, shape));
  for (const [key, list] of pool) {
    if (key < 0 || key >= vocabSize) continue;
    const kept = list.slice(-shape.guesses);
    out[key] = kept.length;
    kept.forEach((v, j) => v.forEach((x, k) => (out[vocabSize + (key * shape.guesses + j) * n1 + k] = x)));
  }
  return out;
}

/**
 * Decodes the GPU table into a pool (keys with no n-gram are left out).
 *
 * @param flat the table
 * @param vocabSize V
 * @param shape N and G
 * @returns the pool
 */
export function decodePool(
  flat: Uint32Array,
  vocabSize: number,
  shape: Pick<LookaheadShape, "ngram" | "guesses">,
): NgramPool {
  const n1 = shape.ngram - 1;
  const pool: NgramPool = new Map();
  for (let key = 0; key < vocabSize; key++) {
    const count = flat[key];
    if (count === 0) continue;
    const list: number[][] = [];
    for (let j = 0; j < count; j++) {
      const o = vocabSize + (key * shape.guesses + j) * n1;
      list.push(Array.from(flat.subarray(o, o + n1)));
    }
    pool.set(key, list);
  }
  return pool;
}

// ----------------------------------------------------------------------------------------------
// Kernels

/** WGSL shared by the start and acceptance kernels: slots, layout, pool and the PRNG. */
function _common(): string {
  return `
${slotConstantsWgsl(LOOKAHEAD_SLOTS)}

${PCG_WGSL}

fn windowRow(l: u32, i: u32) -> u32 { return l * WINDOW + i; }
fn candRow(g: u32, k: u32) -> u32 { return (NGRAM - 1u) * WINDOW + g * (NGRAM - 1u) + k; }
// First word of n-gram j of a key in the pool table.
fn entry(key: u32, j: u32) -> u32 { return VOCAB + (key * GUESSES + j) * (NGRAM - 1u); }

// Next step's candidates: the n-grams stored under lst, padded with lst (padding never counts).
fn fillCandidates(lst: u32) {
  var count = 0u;
  if (lst < VOCAB) { count = pool[lst]; }
  for (var g = 0u; g < GUESSES; g++) {
    for (var k = 0u; k < NGRAM - 1u; k++) {
      var t = lst;
      if (g < count) { t = pool[entry(lst, g) + k]; }
      block[candRow(g, k)] = t;
    }
  }
  st[VALID] = count;
}`;
}

/**
 * Starts a lookahead generation after prefill: resets `st` (base = P), puts `lst` = tokens[P] (the
 * prefill's greedy token) in row 0, fills the other window rows with tokens drawn from the prompt
 * tokens[0..P) with a seeded PCG, and the candidates from the (already uploaded) pool. There is no
 * warm-up phase as in LADE: every level starts as prompt tokens, so the first N−1 steps insert
 * n-grams of partly random tokens into the pool (harmless: candidates are always verified).
 * Variant: `NGRAM`, `WINDOW`, `GUESSES`, `VOCAB` (N, W, G, V).
 */
export const lookaheadStartSpec: KernelSpec = {
  name: "lookahead_start",
  bindings: [
    { name: "st", access: "read_write", type: "u32" },
    { name: "tokens", access: "read", type: "u32" },
    { name: "block", access: "read_write", type: "u32" }, // (T)
    { name: "pool", access: "read", type: "u32" },
  ],
  params: [{ name: "base", type: "u32" }, { name: "seed", type: "u32" }],
  wgsl: () =>
    `${_common()}

@compute @workgroup_size(1)
fn main() {
  for (var i = 0u; i < ${LOOKAHEAD_STATE_SIZE}u; i++) { st[i] = 0u; }
  st[BASE] = P.base;
  let lst = tokens[P.base];
  block[0] = lst;
  var r = 0u;
  for (var row = 1u; row < (NGRAM - 1u) * WINDOW; row++) {
    block[row] = tokens[pcg(P.seed ^ pcg(r)) % P.base];
    r = r + 1u;
  }
  st[RNG] = r;
  fillCandidates(lst);
}`,
};

/**
 * WGSL of sampled verification (variant SAMPLED), after LADE's sampled verification (Fu et al.
 * 2024, arXiv 2402.02057, §3.3), which follows SpecInfer's (Miao et al. 2023) for drafts that are
 * point masses: pool n-grams have no proposal distribution. Depth by depth, the distinct tokens
 * the live candidates propose are tried in order; x is accepted with probability
 * p(x) / (1 − mass of the tokens rejected so far at this depth), i.e. under p with the rejected
 * tokens removed and renormalised. Then P(token = t) = p(t) for a tried t (accepted at its turn:
 * (1 − R)·p(t)/(1 − R)) and for an untried one (drawn from the residual p without the rejected
 * tokens, renormalised, after all failed: (1 − R)·p(t)/(1 − R)), so each committed token follows
 * p given the text before it, as in kernels/jacobi_sampled.ts. Candidates that disagree with an
 * accepted token drop out; after the last depth the final token is the winner's last row's draw.
 */
const SAMPLED_VERIFY_WGSL = `var<workgroup> wRow: u32;
var<workgroup> wRejected: array<u32, GUESSES>;
var<workgroup> wRejectedCount: u32;
var<workgroup> bestScore: array<f32, WG>;
var<workgroup> bestIndex: array<u32, WG>;

fn rowStats(r: u32) -> vec4<f32> {
  return vec4<f32>(stats[4u * r], stats[4u * r + 1u], stats[4u * r + 2u], stats[4u * r + 3u]);
}

fn pRow(r: u32, t: u32) -> f32 { return probOf(logits[r * VOCAB + t], rowStats(r)); }

fn isRejected(t: u32) -> bool {
  for (var i = 0u; i < GUESSES; i++) {
    if (i < wRejectedCount && wRejected[i] == t) { return true; }
  }
  return false;
}

fn verifySampled() {
  var live: array<bool, GUESSES>;
  let valid = st[VALID];
  for (var g = 0u; g < GUESSES; g++) { live[g] = g < valid; }
  var row = 0u;
  var h = 0u;
  var best = 0u;
  for (var k = 0u; k < NGRAM - 1u; k++) {
    wRejectedCount = 0u;
    var rejectedMass = 0.0;
    var accepted = false;
    for (var g = 0u; g < GUESSES; g++) {
      if (!live[g]) { continue; }
      let x = block[candRow(g, k)];
      if (isRejected(x)) { continue; } // tried at this depth already: probability 0 now
      let p = pRow(row, x);
      let u = uniform01(drawKey(P.seed, ${DRAW.accept}u, wCounter, k * GUESSES + g), 0u);
      if (u * (1.0 - rejectedMass) < p) {
        accepted = true;
        best = g;
        break;
      }
      wRejected[wRejectedCount] = x;
      wRejectedCount = wRejectedCount + 1u;
      rejectedMass = rejectedMass + p;
    }
    if (!accepted) {
      wH = h;
      wBest = best;
      wRow = row;
      wFinal = pred[row];
      if (wRejectedCount > 0u) { wResidual = 1u; }
      return;
    }
    h = h + 1u;
    let x = block[candRow(best, k)];
    for (var g = 0u; g < GUESSES; g++) { live[g] = live[g] && block[candRow(g, k)] == x; }
    row = candRow(best, k);
  }
  wH = h;
  wBest = best;
  wFinal = pred[row];
}

// The residual draw: Gumbel-max over p at wRow without the rejected tokens (whole workgroup).
fn residualDraw(lid: u32, need: bool) {
  if (need) {
    let key = drawKey(P.seed, ${DRAW.residual}u, wCounter, 0u);
    var best = -3.4028234e38;
    var index = 0xffffffffu;
    for (var t = lid; t < VOCAB; t += WG) {
      let w = pRow(wRow, t);
      if (w > 0.0 && !isRejected(t)) {
        let score = log(w) + gumbel(key, t);
        if (index == 0xffffffffu || score > best) {
          best = score;
          index = t;
        }
      }
    }
    bestScore[lid] = best;
    bestIndex[lid] = index;
  }
  workgroupBarrier();
}

// Invocation 0: the residual draw's winner (the row's own draw if rounding left no mass).
fn mergeResidual() {
  var b = -3.4028234e38;
  var i = 0xffffffffu;
  for (var k = 0u; k < WG; k++) {
    let ki = bestIndex[k];
    if (ki == 0xffffffffu) { continue; }
    if (i == 0xffffffffu || bestScore[k] > b || (bestScore[k] == b && ki < i)) {
      b = bestScore[k];
      i = ki;
    }
  }
  if (i != 0xffffffffu) { wFinal = i; }
}`;

/**
 * The acceptance step of lookahead decoding; one invocation (T is a few dozen rows). After the
 * forward over `block` at position base and the per-row argmax `pred`:
 * 1. t0 = pred[0]; for each valid candidate, corr = [t0] + pred at its rows, h = the number of
 *    leading candidate tokens equal to corr; the first candidate with the largest h wins;
 * 2. commit corr[0..h] (h+1 tokens: the bonus token too when all N−1 match) at positions
 *    base+1.., stopping at the first EOS (kept) and at `limit` exactly;
 * 3. record the KV move: the winner's first h rows (slots base + candRow(g, k)) belong at slots
 *    base+1+k ({@linkcode lookaheadMoveKvSpec} copies them); base += 1 + h;
 * 4. pool update: for each column i, key = level-0 token (lst for i = 0), value = (level 1..N−2
 *    tokens of the column, new_results[i] = pred at level N−2, column i), LRU insert;
 * 5. window shift: level 0 ← level 1 (columns 1..), level l ← level l+1, level N−2 ← new_results;
 * 6. next input: row 0 = lst = corr[h], candidates = pool[lst] (padded; `valid` of them count).
 * Sampled (`SAMPLED`, with the forward's logits and their rows' statistics bound): `pred` holds each
 * row's draw, step 1 is the point-mass verification of {@linkcode SAMPLED_VERIFY_WGSL} (its final
 * token a residual draw by the whole workgroup of `WG` invocations, or a row's draw), steps 2-6 as
 * above with the accepted tokens and that final token in place of corr.
 * Variant: `NGRAM`, `WINDOW`, `GUESSES`, `VOCAB` (N, W, G, V), `EOS_COUNT`, `SAMPLED`, `WG`.
 */
export const lookaheadAcceptSpec: KernelSpec = {
  name: "lookahead_accept",
  bindings: (variant) => [
    { name: "st", access: "read_write", type: "u32" },
    { name: "tokens", access: "read_write", type: "u32" },
    { name: "block", access: "read_write", type: "u32" }, // (T)
    { name: "pred", access: "read", type: "u32" }, // (T) argmax, or sampled: each row's draw
    { name: "eos", access: "read", type: "u32" },
    { name: "pool", access: "read_write", type: "u32" }, // (V + V·G·(N−1))
    ...(variant.SAMPLED
      ? [
        { name: "logits", access: "read" as const, type: "f32" }, // (T, V)
        { name: "stats", access: "read" as const, type: "f32" }, // (T, 4) (kernels/sample.ts)
      ]
      : []),
  ],
  // The EOS count is a compile-time constant (variant EOS_COUNT), as in every decoder's commit step.
  params: [{ name: "limit", type: "u32" }, { name: "seed", type: "u32" }],
  wgsl: (variant) =>
    `${_common()}

${COMMIT_WGSL}

${
      variant.SAMPLED
        ? `${RANDOM_WGSL}
${SAMPLING_PROB_WGSL}
${SAMPLED_VERIFY_WGSL}`
        : ""
    }

// The token corr[k] of candidate g: t0, then the predictions at the candidate's rows.
fn corr(g: u32, k: u32) -> u32 {
  if (k == 0u) { return pred[0]; }
  return pred[candRow(g, k - 1u)];
}

// Shifts n-grams j+1..last of a key down by one (dropping n-gram j).
fn shiftDown(key: u32, j: u32, last: u32) {
  for (var m = j; m < last; m++) {
    for (var k = 0u; k < NGRAM - 1u; k++) { pool[entry(key, m) + k] = pool[entry(key, m + 1u) + k]; }
  }
}

// Token k of the n-gram value of window column i: levels 1..N−2 of the column, then the column's
// new result (the prediction at level N−2).
fn ngramToken(i: u32, k: u32) -> u32 {
  if (k + 1u < NGRAM - 1u) { return block[windowRow(k + 1u, i)]; }
  return pred[windowRow(NGRAM - 2u, i)];
}

// LRU insert of column i's n-gram under key (LADE's update_token_map): a present n-gram moves to
// the most-recent end; a full list drops its oldest.
fn poolInsert(key: u32, i: u32) {
  if (key >= VOCAB) { return; }
  let n1 = NGRAM - 1u;
  let count = pool[key];
  var found = count;
  for (var j = 0u; j < count; j++) {
    var same = true;
    for (var k = 0u; k < n1; k++) { same = same && pool[entry(key, j) + k] == ngramToken(i, k); }
    if (same && found == count) { found = j; }
  }
  var last = count;
  if (found < count) {
    last = count - 1u;
    shiftDown(key, found, last);
  } else if (count < GUESSES) {
    pool[key] = count + 1u;
  } else {
    last = GUESSES - 1u;
    shiftDown(key, 0u, last);
  }
  for (var k = 0u; k < n1; k++) { pool[entry(key, last) + k] = ngramToken(i, k); }
}

var<workgroup> wStop: u32;
var<workgroup> wResidual: u32; // sampled: 1 when the final token is a residual draw
var<workgroup> wH: u32;
var<workgroup> wBest: u32;
var<workgroup> wFinal: u32;
var<workgroup> wCounter: u32;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  if (lid == 0u) {
    wStop = st[DONE];
    wResidual = 0u;
    if (wStop == 0u) {
      wCounter = st[FORWARDS];
      st[FORWARDS] = st[FORWARDS] + 1u;
      st[MOVE_COUNT] = 0u;
      // 1. Greedy: the best candidate, with the largest number h of leading tokens equal to corr
      //    (the first one wins ties); sampled: verifySampled (SAMPLED_VERIFY_WGSL).
${
      variant.SAMPLED ? "      verifySampled();" : `      var h = 0u;
      var best = 0u;
      for (var g = 0u; g < st[VALID]; g++) {
        var m = 0u;
        while (m < NGRAM - 1u && block[candRow(g, m)] == corr(g, m)) { m++; }
        if (m > h) { h = m; best = g; }
      }
      wH = h;
      wBest = best;
      wFinal = corr(best, h);`
    }
    }
  }
  if (workgroupUniformLoad(&wStop) != 0u) { return; }
${variant.SAMPLED ? "  residualDraw(lid, workgroupUniformLoad(&wResidual) != 0u);" : ""}
  if (lid != 0u) { return; }
${variant.SAMPLED ? "  if (wResidual != 0u) { mergeResidual(); }" : ""}
  let n1 = NGRAM - 1u;
  let W = WINDOW;
  let base = st[BASE];
  let h = wH;
  let best = wBest;

  // 2. Commit the h accepted candidate tokens and the final one at base+1.., stopping at the first
  // EOS (kept) or at the budget. (MOVE_COUNT is still 0 here, so a stop moves no K/V.)
  for (var j = 0u; j <= h; j++) {
    if (base + 1u + j < P.limit && j > 0u) {
      st[ACCEPTED] = st[ACCEPTED] + 1u;
      if (j == 1u) { st[HIT_STEPS] = st[HIT_STEPS] + 1u; }
    }
    var t = wFinal;
    if (j < h) { t = block[candRow(best, j)]; }
    if (!commit(base + 1u + j, t)) { return; }
  }

  // 3. The winner's first h rows hold the K/V of positions base+1..base+h; lst moves past them.
  let newBase = base + 1u + h;
  st[MOVE_SRC] = base + candRow(best, 0u);
  st[MOVE_DST] = base + 1u;
  st[MOVE_COUNT] = h;
  st[BASE] = newBase;
  if (newBase + 1u >= P.limit) {
    st[MOVE_COUNT] = 0u; // nothing left to decode, so no K/V to move
    stopAt(P.limit);
    return;
  }
  let lst = wFinal;

  // 4. Pool update from the window's columns (before the shift: keys and values are this step's).
  for (var i = 0u; i < W; i++) { poolInsert(block[windowRow(0u, i)], i); }

  // 5. Window shift by one column (ascending rows read only rows above them).
  for (var i = 1u; i < W; i++) { block[windowRow(0u, i)] = block[windowRow(1u, i)]; }
  for (var l = 1u; l + 1u < n1; l++) {
    for (var i = 0u; i < W; i++) { block[windowRow(l, i)] = block[windowRow(l + 1u, i)]; }
  }
  for (var i = 0u; i < W; i++) { block[windowRow(n1 - 1u, i)] = pred[windowRow(n1 - 1u, i)]; }

  // 6. Next input: lst and its candidates.
  block[0] = lst;
  fillCandidates(lst);
}`,
};

/**
 * Copies the K/V rows of the accepted candidate tokens to their committed slots, for one layer:
 * `k[dst + j] = k[src + j]` and the same for v, for j < count, with (src, dst, count) read from
 * `st`. One invocation per value of a row; each copies its column for j = 0.. in order, which is
 * safe for overlapping ranges because src > dst. Does nothing once generation has stopped.
 * Variant: `WG` (invocations per workgroup).
 */
export const lookaheadMoveKvSpec: KernelSpec = {
  name: "lookahead_move_kv",
  bindings: [
    { name: "st", access: "read", type: "u32" },
    // Copied as u32 bits: exact for f32 too.
    { name: "k", access: "read_write", type: "u32" }, // (S, KVH·D)
    { name: "v", access: "read_write", type: "u32" }, // (S, KVH·D)
  ],
  params: [
    { name: "rowSize", type: "u32" },
    { name: "cacheRows", type: "u32" },
    { name: "rowStride", type: "u32" },
    // Where the decoder's state holds the move (lookahead's slots, or the recycling decoder's).
    { name: "srcSlot", type: "u32" },
    { name: "dstSlot", type: "u32" },
    { name: "countSlot", type: "u32" },
  ],
  wgsl: () => `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let e = gid.x + gid.y * P.rowStride;
  if (e >= P.rowSize || st[${LOOKAHEAD_SLOTS.done}u] != 0u) { return; }
  let src = st[P.srcSlot];
  let dst = st[P.dstSlot];
  let count = st[P.countSlot];
  for (var j = 0u; j < count; j++) {
    if (src + j >= P.cacheRows) { break; }
    let a = (src + j) * P.rowSize + e;
    let b = (dst + j) * P.rowSize + e;
    k[b] = k[a];
    v[b] = v[a];
  }
}`,
};

// ----------------------------------------------------------------------------------------------
// Recording helpers

/**
 * The compile-time constants of the start and acceptance kernels. N, W, G and V are constants, not
 * parameters: with uniform loop bounds the single-invocation kernel took ~8 ms per call on
 * llvmpipe, with constant bounds ~0.2 ms (loops can be unrolled and need no masked execution).
 */
function _variant(shape: LookaheadShape, vocabSize: number): Variant {
  return { NGRAM: shape.ngram, WINDOW: shape.window, GUESSES: shape.guesses, VOCAB: vocabSize };
}

/** Inputs of {@linkcode lookaheadStart}. */
export interface LookaheadStartArgs {
  /** State (u32, {@linkcode LOOKAHEAD_STATE_SIZE}). */
  st: Tensor;
  /** Committed tokens by position (u32): the prompt, then tokens[P] = the prefill's token. */
  tokens: Tensor;
  /** The block (u32, T). */
  block: Tensor;
  /** The pool table (u32, {@linkcode poolWords}). */
  pool: Tensor;
  /** N, W, G. */
  shape: LookaheadShape;
  /** V. */
  vocabSize: number;
  /** Prompt length P (= the cache length after prefill). */
  base: number;
  /** PRNG seed of the initial window. */
  seed: number;
}

/**
 * Records the start of a lookahead generation (see {@linkcode lookaheadStartSpec}).
 *
 * @example After prefill of P tokens
 * ```ts ignore
 * lookaheadStart(step, { st, tokens, block, pool, shape: { ngram: 4, window: 5, guesses: 5 }, vocabSize: V, base: P, seed: 0 });
 * ```
 */
export function lookaheadStart(step: Step, a: LookaheadStartArgs): void {
  checkLookaheadShape(a.shape);
  if (!Number.isInteger(a.base) || a.base < 1) {
    throw new RangeError(`lookaheadStart: base must be the prompt length (≥ 1), not ${a.base}`);
  }
  step.dispatch(lookaheadStartSpec, {
    variant: _variant(a.shape, a.vocabSize),
    bindings: { st: a.st, tokens: a.tokens, block: a.block, pool: a.pool },
    params: { base: a.base, seed: a.seed >>> 0 },
    workgroups: [1],
  });
}

/** Inputs of {@linkcode lookaheadAccept}. */
export interface LookaheadAcceptArgs {
  /** State (u32, {@linkcode LOOKAHEAD_STATE_SIZE}). */
  st: Tensor;
  /** Committed tokens by position (u32). */
  tokens: Tensor;
  /** The block (u32, T): read, then rewritten as the next step's input. */
  block: Tensor;
  /** Greedy predictions of the block's rows (u32, T). */
  pred: Tensor;
  /** EOS ids (u32, ≥ 1 element; `eosCount` of them used). */
  eos: Tensor;
  /** Number of EOS ids in `eos`. */
  eosCount: number;
  /** The pool table (u32, {@linkcode poolWords}). */
  pool: Tensor;
  /** N, W, G. */
  shape: LookaheadShape;
  /** V. */
  vocabSize: number;
  /** Absolute position limit: prompt length + max new tokens. */
  limit: number;
  /**
   * Sampled decoding: the forward's logits (T, V), their rows' statistics (T, 4; kernels/sample.ts)
   * and the seed of the draws; `pred` then holds each row's draw.
   */
  sampled?: { logits: Tensor; stats: Tensor; seed: number };
}

/**
 * Records one acceptance step (see {@linkcode lookaheadAcceptSpec}).
 *
 * @example One lookahead step
 * ```ts ignore
 * model.forward(step, { tokens: block, tokenOffset: 0, rows: T, position: { state: st, slot: 0 }, cache, logits, relPositions, mask });
 * model.argmax(step, logits, pred, 0);
 * lookaheadAccept(step, { st, tokens, block, pred, eos, eosCount: 1, pool, shape, vocabSize: V, limit });
 * for (let l = 0; l < L; l++) lookaheadMoveKv(step, st, cache.k[l], cache.v[l]);
 * ```
 */
export function lookaheadAccept(step: Step, a: LookaheadAcceptArgs): void {
  checkLookaheadShape(a.shape);
  const sampled = a.sampled;
  step.dispatch(lookaheadAcceptSpec, {
    variant: {
      ..._variant(a.shape, a.vocabSize),
      EOS_COUNT: a.eosCount,
      SAMPLED: sampled !== undefined,
      // Sampled: the invocations share the residual draw over the vocabulary.
      WG: sampled ? (step.gpu.adapter.isFallbackAdapter ? 8 : 256) : 1,
    },
    bindings: {
      st: a.st,
      tokens: a.tokens,
      block: a.block,
      pred: a.pred,
      eos: a.eos,
      pool: a.pool,
      ...(sampled ? { logits: sampled.logits, stats: sampled.stats } : {}),
    },
    params: { limit: a.limit, seed: (sampled?.seed ?? 0) >>> 0 },
    workgroups: [1],
  });
}

const MOVE_WG = 64;

/**
 * Records the KV move of one layer (see {@linkcode lookaheadMoveKvSpec}). Record it after
 * {@linkcode lookaheadAccept} and before the next forward, once per layer.
 *
 * @param step the step to record into
 * @param st the state holding the move
 * @param k (S, KVH, D) key cache of the layer
 * @param v (S, KVH, D) value cache of the layer
 * @param slots where `st` holds the move's source row, destination row and count (default:
 *   lookahead's; the Jacobi recycling decoder has its own, kernels/jacobi_recycle.ts)
 *
 * @example Every layer of a KvCache
 * ```ts ignore
 * for (let l = 0; l < cache.k.length; l++) lookaheadMoveKv(step, st, cache.k[l], cache.v[l]);
 * ```
 */
export function lookaheadMoveKv(
  step: Step,
  st: Tensor,
  k: Tensor,
  v: Tensor,
  slots: { moveSrc: number; moveDst: number; moveCount: number } = LOOKAHEAD_SLOTS,
): void {
  const S = k.shape[0];
  const rowSize = S > 0 ? k.size / S : 0;
  if (k.size !== v.size || k.dtype !== v.dtype || k.dtype === "f16") {
    throw new TypeError(
      `lookaheadMoveKv: caches "${k.label}" and "${v.label}" must have one 32-bit dtype and one shape`,
    );
  }
  if (rowSize === 0) return;
  const { workgroups, rowStride } = grid1d(rowSize, MOVE_WG);
  step.dispatch(lookaheadMoveKvSpec, {
    variant: { WG: MOVE_WG },
    bindings: { st, k, v },
    params: {
      rowSize,
      cacheRows: S,
      rowStride,
      srcSlot: slots.moveSrc,
      dstSlot: slots.moveDst,
      countSlot: slots.moveCount,
    },
    workgroups,
  });
}

// ----------------------------------------------------------------------------------------------
// CPU references (plain loops over the LADE description, on a Map pool)

/** Arguments of {@linkcode lookaheadAcceptReference}; arrays are mutated like the kernel's buffers. */
export interface LookaheadAcceptReferenceArgs {
  /** State slots. */
  st: Uint32Array;
  /** Committed tokens by position. */
  tokens: Uint32Array;
  /** The block (T). */
  block: Uint32Array;
  /** Per-row greedy predictions (T). */
  pred: Uint32Array;
  /** The pool (mutated). */
  pool: NgramPool;
  /** EOS ids. */
  eos: readonly number[];
  /** N, W, G. */
  shape: LookaheadShape;
  /** V (keys ≥ V are never stored). */
  vocabSize: number;
  /** Absolute position limit. */
  limit: number;
}

/**
 * CPU reference of one acceptance step, written from the LADE description (docs/method.md §10)
 * with lists for the window levels and a Map for the pool.
 *
 * @example A candidate that matches fully: 3 tokens committed (2 matched + the bonus)
 * ```ts
 * import { LOOKAHEAD_STATE_SIZE, lookaheadAcceptReference } from "./lookahead.ts";
 * const shape = { ngram: 3, window: 1, guesses: 1 }; // rows: lst, level 1, candidate (2 tokens)
 * import { LOOKAHEAD_SLOTS } from "./lookahead.ts";
 * const st = new Uint32Array(LOOKAHEAD_STATE_SIZE);
 * st[LOOKAHEAD_SLOTS.valid] = 1; // one valid candidate
 * const tokens = new Uint32Array(16);
 * const block = new Uint32Array([4, 9, 5, 6]);
 * const pred = new Uint32Array([5, 1, 6, 7]);
 * lookaheadAcceptReference({ st, tokens, block, pred, pool: new Map(), eos: [], shape, vocabSize: 16, limit: 16 });
 * Array.from(tokens.subarray(1, 4)); // [5, 6, 7]
 * st[LOOKAHEAD_SLOTS.base]; // 3
 * block[0]; // 7 (the next lst)
 * ```
 */
export function lookaheadAcceptReference(a: LookaheadAcceptReferenceArgs): void {
  const { st, tokens, block, pred, shape } = a;
  const S = LOOKAHEAD_SLOTS;
  const { ngram: N, window: W, guesses: G } = shape;
  if (st[S.done]) return;
  const base = st[S.base];
  st[S.forwards]++;
  st[S.moveCount] = 0;
  const stop = (end: number) => {
    st[S.done] = 1;
    st[S.end] = end;
    st[S.moveCount] = 0;
  };
  // Unpack the block: levels[l] = W tokens of level l (levels[0][0] = lst), and the candidates.
  const levels: number[][] = [];
  for (let l = 0; l < N - 1; l++) levels.push(Array.from(block.subarray(l * W, (l + 1) * W)));
  const predLevels: number[][] = [];
  for (let l = 0; l < N - 1; l++) predLevels.push(Array.from(pred.subarray(l * W, (l + 1) * W)));
  const candStart = (N - 1) * W;
  const cands: number[][] = [];
  const corrs: number[][] = [];
  for (let g = 0; g < st[S.valid]; g++) {
    const o = candStart + g * (N - 1);
    cands.push(Array.from(block.subarray(o, o + N - 1)));
    corrs.push([pred[0], ...pred.subarray(o, o + N - 1)]);
  }
  // Verification: h = matched prefix length; the largest wins, the first on ties.
  let h = 0;
  let best = 0;
  cands.forEach((cand, g) => {
    let m = 0;
    while (m < N - 1 && cand[m] === corrs[g][m]) m++;
    if (m > h) [h, best] = [m, g];
  });
  const committed = h > 0 ? corrs[best].slice(0, h + 1) : [pred[0]];
  for (let j = 0; j < committed.length; j++) {
    const pos = base + 1 + j;
    if (pos >= a.limit) return stop(a.limit);
    tokens[pos] = committed[j];
    if (j > 0) st[S.accepted]++;
    if (j === 1) st[S.hitSteps]++;
    if (a.eos.includes(committed[j])) return stop(pos + 1);
  }
  st[S.moveSrc] = base + candStart + best * (N - 1);
  st[S.moveDst] = base + 1;
  st[S.moveCount] = h;
  st[S.base] = base + 1 + h;
  if (base + 1 + h + 1 >= a.limit) return stop(a.limit);
  // Pool: column i's n-gram is its level tokens plus this step's new result.
  const newResults = predLevels[N - 2];
  for (let i = 0; i < W; i++) {
    const key = levels[0][i];
    if (key >= a.vocabSize) continue;
    const value = [...levels.slice(1).map((lv) => lv[i]), newResults[i]];
    poolInsert(a.pool, key, value, G);
  }
  // Shift: level 0 (columns 1..) ← level 1, level l ← level l+1, last level ← new results.
  const next = levels.map((lv) => lv.slice());
  for (let i = 1; i < W; i++) next[0][i] = levels[1][i];
  for (let l = 1; l < N - 2; l++) next[l] = levels[l + 1].slice();
  next[N - 2] = newResults.slice();
  const lst = committed[committed.length - 1];
  next[0][0] = lst;
  next.forEach((lv, l) => lv.forEach((t, i) => (block[l * W + i] = t)));
  // Candidates for the next step.
  const list = a.pool.get(lst) ?? [];
  for (let g = 0; g < G; g++) {
    for (let k = 0; k < N - 1; k++) block[candStart + g * (N - 1) + k] = g < list.length ? list[g][k] : lst;
  }
  st[S.valid] = list.length;
}

/**
 * CPU reference of {@linkcode lookaheadStartSpec}: the initial state and block.
 *
 * @param tokens prompt tokens then tokens[P] (the prefill's token)
 * @param pool the seeded pool
 * @param shape N, W, G
 * @param base P
 * @param seed PRNG seed
 * @returns the state and the block
 */
export function lookaheadStartReference(
  tokens: readonly number[],
  pool: NgramPool,
  shape: LookaheadShape,
  base: number,
  seed: number,
): { st: Uint32Array; block: Uint32Array } {
  const { ngram: N, window: W, guesses: G } = shape;
  const S = LOOKAHEAD_SLOTS;
  const st = new Uint32Array(LOOKAHEAD_STATE_SIZE);
  const block = new Uint32Array(lookaheadRows(shape));
  st[S.base] = base;
  const lst = tokens[base];
  block[0] = lst;
  let r = 0;
  for (let row = 1; row < (N - 1) * W; row++) {
    block[row] = tokens[pcgHash((seed ^ pcgHash(r)) >>> 0) % base];
    r++;
  }
  st[S.rng] = r;
  const list = pool.get(lst) ?? [];
  const list2 = list.slice(-G);
  for (let g = 0; g < G; g++) {
    for (let k = 0; k < N - 1; k++) {
      block[(N - 1) * W + g * (N - 1) + k] = g < list2.length ? list2[g][k] : lst;
    }
  }
  st[S.valid] = list2.length;
  return { st, block };
}

/**
 * CPU reference of {@linkcode lookaheadMoveKvSpec} for one cache tensor (returns a copy).
 *
 * @param cache (S, rowSize) values
 * @param rowSize values per row
 * @param src first source row
 * @param dst first destination row
 * @param count rows
 * @returns the updated copy
 */
export function lookaheadMoveKvReference(
  cache: Float32Array,
  rowSize: number,
  src: number,
  dst: number,
  count: number,
): Float32Array {
  const out = cache.slice();
  for (let j = 0; j < count; j++) {
    for (let e = 0; e < rowSize; e++) out[(dst + j) * rowSize + e] = out[(src + j) * rowSize + e];
  }
  return out;
}
