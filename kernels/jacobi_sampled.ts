/**
 * Lossless sampled Jacobi decoding: the acceptance step that verifies sampled guesses with the
 * speculative-sampling rule, so the committed tokens are distributed exactly as AR sampling's.
 *
 * ## The rule
 * A forward over the active block `block[0..m)` at position `base` gives, from row j, the
 * filtered distribution p_j of the token at base+j+1 given the committed text and block[0..j].
 * block[0] is already a draw from the right distribution (see below). Each guess x = block[j],
 * j ≥ 1, was proposed from a distribution q_j that the kernel knows: the previous iteration's
 * p row it was drawn from (kept in the workspace), or a point mass when the guess came from
 * elsewhere (random or copied context tokens: q_j(x) = 1). Left to right:
 * - accept x with probability min(1, p_{j−1}(x) / q_j(x)) (a uniform u: accept when u·q < p);
 * - at the first rejection draw y from the residual max(0, p_{j−1} − q_j), normalised, commit
 *   block[0..j) and start the next iteration with block[0] = y;
 * - when all m−1 guesses pass, the next iteration starts with a draw from p_{m−1}.
 * New guesses for the following positions are draws from this iteration's rows (their q is the
 * row they came from); with the sliding window the block is then refilled with point-mass guesses.
 *
 * ## Why the output is exact
 * Let H be everything decided before the test at block index j: the committed text, the block up
 * to j, and the previous iteration (so q_j is a function of H), and let x = block[j] be drawn
 * from q_j independently of everything else given H. The target p = p_{j−1} is a function of H
 * (the committed text and block[0..j), all accepted). The token that ends up at this position is
 * x when accepted, else y:
 *   P(x accepted and x = t) = q(t) · min(1, p(t)/q(t)) = min(p(t), q(t)),
 *   P(rejected) = 1 − Σ_t min(p(t), q(t)) = Σ_t max(0, p(t) − q(t)) =: β,
 *   P(y = t | rejected) = max(0, p(t) − q(t)) / β,
 * so P(token = t | H) = min(p(t), q(t)) + max(0, p(t) − q(t)) = p(t). A point-mass q is the case
 * q(t) = [t = x] (acceptance p(x), residual p without x). A draw from p (a bonus token, or a
 * residual) is distributed as p by construction. So every committed token, given all that came
 * before it, follows p(· | the committed text), which is AR sampling's law; by the chain rule the
 * committed sequence has AR sampling's joint distribution. Nothing requires q to be close to p:
 * closeness only raises the acceptance rate Σ min(p, q).
 *
 * A deliberately wrong rule (`RULE = "resample"`: on rejection commit a fresh draw from p instead
 * of the residual) exists only as the negative control of the statistical test: it favours the
 * rejected guess and must fail it.
 *
 * ## Buffers
 * The workspace `work` (f32) holds, for block size n and vocabulary V:
 * - words [0, 4n): this iteration's row statistics (m, τ, Z, 1/T), written by the sample kernel
 *   (kernels/sample.ts) before this step;
 * - words [4n, 8n): per block index j, the q of its guess: (m, τ, Z, source row as u32 bits), the
 *   row being 0xffffffff for a point mass;
 * - words [8n, 8n + n·V): the previous iteration's logits (copied there after each step), the rows
 *   those q refer to.
 * `pred[r]` is row r's draw from p_r (the sample kernel's output). Every random number is keyed by
 * (seed, purpose, forward count, index) (kernels/sample.ts), so a seed gives the same text on any
 * readback cadence.
 *
 * @module
 */

import type { Gpu, KernelSpec, Step, Tensor } from "../core/mod.ts";
import { COMMIT_WGSL, PCG_WGSL, slotConstantsWgsl } from "./decode_state.ts";
import { GUESSES_WGSL, JACOBI_SLOTS, type JacobiGuesses, refillUnit } from "./jacobi_accept.ts";
import { DRAW, RANDOM_WGSL, SAMPLING_PROB_WGSL, STATS_WORDS } from "./sample.ts";

/** f32 words of the sampled Jacobi workspace for block size n and vocabulary V. */
export function jacobiWorkWords(n: number, vocabSize: number): number {
  return 2 * STATS_WORDS * n + n * vocabSize;
}

/** Word offset of the previous iteration's logits in the workspace. */
export function jacobiWorkLogitsOffset(n: number): number {
  return 2 * STATS_WORDS * n;
}

/** Rules of {@linkcode jacobiSampledAcceptSpec}: the exact one, and the negative control. */
export type SampledAcceptRule = "exact" | "resample";

/**
 * The sampled acceptance step (see the module header); one workgroup, its invocations share the
 * residual draw over the vocabulary. Variant: `N`, `EOS_COUNT`, `UNIT`, `COPY` (as the greedy
 * kernel), `WG`, `VOCAB`, `RESAMPLE` (the wrong rule).
 */
export const jacobiSampledAcceptSpec: KernelSpec = {
  name: "jacobi_sampled_accept",
  bindings: [
    { name: "st", access: "read_write", type: "u32" },
    { name: "tokens", access: "read_write", type: "u32" },
    { name: "block", access: "read_write", type: "u32" },
    { name: "pred", access: "read", type: "u32" }, // (n) each row's draw from its p
    { name: "eos", access: "read", type: "u32" },
    { name: "traj", access: "read_write", type: "u32" },
    { name: "logits", access: "read", type: "f32" }, // (n, V) this iteration's
    { name: "work", access: "read_write", type: "f32" }, // see the module header
  ],
  params: [
    { name: "limit", type: "u32" },
    { name: "seed", type: "u32" },
    { name: "logCapacity", type: "u32" },
  ],
  wgsl: () => `
${slotConstantsWgsl(JACOBI_SLOTS)}
${PCG_WGSL}
${RANDOM_WGSL}
${SAMPLING_PROB_WGSL}
${COMMIT_WGSL}
${GUESSES_WGSL}

const POINT = 0xffffffffu;
const Q_INFO = ${STATS_WORDS}u * N;
const Q_LOGITS = ${2 * STATS_WORDS}u * N;

var<workgroup> wStop: u32;      // 1: nothing to do (done before this step)
var<workgroup> wReject: u32;    // index of the first rejected guess, or N when none was
var<workgroup> wCounter: u32;   // forward count before this step: the draws' counter
var<workgroup> bestScore: array<f32, WG>;
var<workgroup> bestIndex: array<u32, WG>;

fn curStats(r: u32) -> vec4<f32> {
  return vec4<f32>(work[4u * r], work[4u * r + 1u], work[4u * r + 2u], work[4u * r + 3u]);
}

// p_r(t): this iteration's row r.
fn pAt(r: u32, t: u32) -> f32 { return probOf(logits[r * VOCAB + t], curStats(r)); }

// q_j(t): the proposal of block index j (a previous row, or a point mass at block[j]).
fn qAt(j: u32, t: u32) -> f32 {
  let o = Q_INFO + 4u * j;
  let src = bitcast<u32>(work[o + 3u]);
  if (src == POINT) { return select(0.0, 1.0, t == block[j]); }
  let s = vec4<f32>(work[o], work[o + 1u], work[o + 2u], curStats(0u).w);
  return probOf(work[Q_LOGITS + src * VOCAB + t], s);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  let n = N;
  if (lid == 0u) {
    wStop = st[DONE];
    wCounter = st[FORWARDS];
    wReject = N;
    if (wStop == 0u) {
      let m = st[ACTIVE];
      let base = st[BASE];
      let blockStart = st[BLOCK_START];
      st[FORWARDS] = st[FORWARDS] + 1u;
      // Log the state this forward saw (as the greedy kernel).
      let li = st[LOG_COUNT];
      if (li < P.logCapacity) {
        let o = li * (n + 2u);
        traj[o] = st[BLOCKS];
        traj[o + 1u] = st[BLOCK_ITERS];
        let done = base - blockStart;
        for (var j = 0u; j < n; j++) {
          if (j < done) { traj[o + 2u + j] = tokens[blockStart + j]; } else { traj[o + 2u + j] = block[j - done]; }
        }
        st[LOG_COUNT] = li + 1u;
      }
      st[BLOCK_ITERS] = st[BLOCK_ITERS] + 1u;
      // Verify the guesses left to right: accept x with probability min(1, p(x)/q(x)).
      for (var j = 1u; j < m; j++) {
        let x = block[j];
        let p = pAt(j - 1u, x);
        let q = qAt(j, x);
        let u = uniform01(drawKey(P.seed, ${DRAW.accept}u, wCounter, j), 0u);
        if (!(u * q < p)) { wReject = j; break; }
      }
    }
  }
  let stop = workgroupUniformLoad(&wStop);
  if (stop != 0u) { return; }
  let a = workgroupUniformLoad(&wReject);

  // The residual draw at the rejected index: Gumbel-max over log max(0, p − q).
  var y = 0u;
  if (a < N && !RESAMPLE) {
    let key = drawKey(P.seed, ${DRAW.residual}u, wCounter, a);
    var best = -3.4028234e38;
    var index = POINT;
    for (var t = lid; t < VOCAB; t += WG) {
      let w = pAt(a - 1u, t) - qAt(a, t);
      if (w > 0.0) {
        let score = log(w) + gumbel(key, t);
        if (index == POINT || score > best) {
          best = score;
          index = t;
        }
      }
    }
    bestScore[lid] = best;
    bestIndex[lid] = index;
  }
  workgroupBarrier();
  if (lid != 0u) { return; }
  if (a < N) {
    y = pred[a - 1u]; // the wrong rule, and the fallback if rounding left no residual mass
    if (!RESAMPLE) {
      var b = -3.4028234e38;
      var i = POINT;
      for (var k = 0u; k < WG; k++) {
        let ki = bestIndex[k];
        if (ki == POINT) { continue; }
        if (i == POINT || bestScore[k] > b || (bestScore[k] == b && ki < i)) {
          b = bestScore[k];
          i = ki;
        }
      }
      if (i != POINT) { y = i; }
    }
  }

  // Commit block[0..a) (a = m when every guess passed), stopping at the first EOS or the budget.
  let m = st[ACTIVE];
  let acc = min(a, m);
  var base = st[BASE];
  for (var j = 0u; j < acc; j++) {
    if (!commit(base + j, block[j])) { st[BASE] = st[END]; return; }
  }
  base = base + acc;
  st[BASE] = base;
  if (base >= P.limit) { stopAt(P.limit); return; }

  // The next input: block[0] is the residual draw (or, all accepted, row m−1's draw); the
  // guesses after it are this iteration's draws for the following positions, whose q is their row.
  var known = 1u;
  var end = 0u; // 0: no new block (see the greedy kernel's step 4)
  var rows: array<u32, N>;
  if (acc == m) {
    block[0] = pred[m - 1u];
    end = N;
  } else {
    block[0] = y;
    for (var k = 1u; k < m - acc; k++) {
      block[k] = pred[acc - 1u + k];
      rows[k] = acc - 1u + k;
    }
    known = m - acc;
    let room = (N - known) / UNIT * UNIT;
    if (room > 0u) {
      block[known] = pred[m - 1u];
      rows[known] = m - 1u;
      end = known + room;
      known = known + 1u;
    }
  }
  for (var k = 0u; k < N; k++) {
    let o = Q_INFO + 4u * k;
    if (k >= 1u && k < known) {
      let s = curStats(rows[k]);
      work[o] = s.x;
      work[o + 1u] = s.y;
      work[o + 2u] = s.z;
      work[o + 3u] = bitcast<f32>(rows[k]);
    } else {
      work[o + 3u] = bitcast<f32>(POINT);
    }
  }
  if (end > 0u) {
    st[RNG] = fillGuesses(known, end, base, st[RNG]);
    st[ACTIVE] = end;
    st[BLOCK_START] = base;
    st[BLOCK_ITERS] = 0u;
    st[BLOCKS] = st[BLOCKS] + 1u;
  } else {
    st[ACTIVE] = m - acc;
  }
}`,
};

/** Host-side inputs of {@linkcode jacobiSampledAccept}. */
export interface JacobiSampledAcceptArgs {
  /** State (u32). */
  st: Tensor;
  /** Committed tokens by position (u32). */
  tokens: Tensor;
  /** The block (u32, n). */
  block: Tensor;
  /** Each row's draw from its p (u32, n). */
  pred: Tensor;
  /** EOS ids (u32, ≥ 1 element). */
  eos: Tensor;
  /** Number of EOS ids. */
  eosCount: number;
  /** Trajectory log (u32, logCapacity × (n + 2)). */
  traj: Tensor;
  /** Entries the log holds. */
  logCapacity: number;
  /** This iteration's logits (f32, n × V). */
  logits: Tensor;
  /** The workspace (f32, {@linkcode jacobiWorkWords}). */
  work: Tensor;
  /** Block size n. */
  n: number;
  /** Absolute position limit. */
  limit: number;
  /** Seed of every draw. */
  seed: number;
  /** Sliding window. */
  sliding?: boolean;
  /** Blocks in flight (multiblock; see the greedy kernel's `blocks`). */
  blocks?: number;
  /** Where point-mass guesses come from. */
  guesses?: JacobiGuesses;
  /** The acceptance rule (default exact; `resample` is the statistical test's negative control). */
  rule?: SampledAcceptRule;
}

function workgroupSize(gpu: Gpu): number {
  return gpu.adapter.isFallbackAdapter ? 8 : 256;
}

/**
 * Records one sampled acceptance step, then the copy of this iteration's logits into the
 * workspace (the q of the next iteration's guesses).
 *
 * @example One sampled Jacobi iteration
 * ```ts ignore
 * model.forward(step, { tokens: block, tokenOffset: 0, rows: n, position: { state: st, slot: 0 }, cache, logits });
 * sampleForward(step, logits, work, pred, params, { purpose: DRAW.rowSample, seed, state: st, counterSlot: JACOBI_SLOTS.forwards });
 * jacobiSampledAccept(step, { st, tokens, block, pred, eos, eosCount: 1, traj, logCapacity, logits, work, n, limit, seed });
 * ```
 */
export function jacobiSampledAccept(step: Step, a: JacobiSampledAcceptArgs): void {
  const V = a.logits.shape[a.logits.shape.length - 1];
  if (a.work.size < jacobiWorkWords(a.n, V)) {
    throw new RangeError(`jacobiSampledAccept: the workspace needs ${jacobiWorkWords(a.n, V)} words`);
  }
  step.dispatch(jacobiSampledAcceptSpec, {
    variant: {
      N: a.n,
      EOS_COUNT: a.eosCount,
      UNIT: refillUnit(a.n, a.sliding, a.blocks),
      COPY: a.guesses === "context",
      WG: workgroupSize(step.gpu),
      VOCAB: V,
      RESAMPLE: a.rule === "resample",
    },
    bindings: {
      st: a.st,
      tokens: a.tokens,
      block: a.block,
      pred: a.pred,
      eos: a.eos,
      traj: a.traj,
      logits: a.logits,
      work: a.work,
    },
    params: { limit: a.limit, seed: a.seed, logCapacity: a.logCapacity },
    workgroups: [1],
  });
  step.copy(a.logits, 0, a.work, jacobiWorkLogitsOffset(a.n) * 4, a.n * V * 4);
}
