/**
 * Sampling on the GPU: per row of logits, the filtered distribution (temperature, top-k, top-p)
 * and one token drawn from it, with no readback.
 *
 * The distribution (the same on the CPU, {@linkcode samplingDistributionReference}):
 * 1. top-k keeps every token whose logit is at least the k-th largest (ties at the cut are all
 *    kept, as the Hugging Face warper does);
 * 2. softmax of the kept logits at the temperature T;
 * 3. top-p keeps token i when the mass of the kept tokens with a strictly larger logit is < p
 *    (the smallest set, in logit order, whose mass reaches p; ties kept together);
 * 4. renormalised.
 * Both cuts are a threshold on the logit, so the kernel finds each by a bitwise binary search over
 * order-preserving 32-bit keys of the logits (32 counting or summing passes over the row, each a
 * workgroup reduction), and writes the row's statistics: max m, threshold key τ, mass Z of the kept
 * tokens, 1/T. With them any token's probability is one exp: `p(i) = exp((l_i − m)/T) / Z` when
 * key(l_i) ≥ τ, else 0 ({@linkcode SAMPLING_PROB_WGSL}), which is what the lossless Jacobi and
 * lookahead verifiers need.
 *
 * The draw is Gumbel-max: `argmax_i over kept (l_i − m)/T + G_i` with `G_i = −log(−log U_i)` is
 * exactly a draw from the renormalised softmax, with no prefix sum. `U_i` comes from a counter-based
 * generator keyed by (seed, purpose, counter, row, token) ({@linkcode RANDOM_WGSL}), so a draw
 * depends only on those numbers, never on when the host reads back: a seed reproduces a
 * generation on any readback cadence.
 *
 * Dimension letters: R rows, V vocabulary.
 *
 * @module
 */

import { type Gpu, type KernelSpec, type Step, Tensor } from "../core/mod.ts";
import { PCG_WGSL, pcgHash } from "./decode_state.ts";

/** Sampling settings of the kernels (already validated: T > 0, k ≥ 1 or 0 = all, p in (0, 1]). */
export interface SamplingParams {
  /** Temperature T > 0. */
  temperature: number;
  /** Keep the k most likely tokens (0 = all). */
  topK: number;
  /** Keep the smallest set whose mass reaches p (1 = all). */
  topP: number;
}

/**
 * What a random draw is for: the first argument of the keyed generator, so that draws for
 * different purposes at the same counter never share numbers.
 */
export const DRAW = {
  /** The token at a position, drawn by AR (and the first token after prefill): counter = position. */
  token: 1,
  /** A row's sample in a block decoder: counter = the decoder's forward count. */
  rowSample: 2,
  /** The uniform that accepts or rejects a guess: counter = forward count, row = block index. */
  accept: 3,
  /** The draw from the residual after a rejection: counter = forward count, row = block index. */
  residual: 4,
} as const;

/**
 * WGSL of the keyed generator (needs {@linkcode PCG_WGSL}): `drawKey(seed, purpose, counter, row)`
 * names one draw; `uniform01(key, i)` is its i-th uniform in (0, 1) (i = token id for a Gumbel
 * vector, 0 for a single uniform); `gumbel(key, i)` = −log(−log(uniform01)).
 * {@linkcode uniformReference} is the CPU twin.
 */
export const RANDOM_WGSL = `fn drawKey(seed: u32, purpose: u32, counter: u32, row: u32) -> u32 {
  return pcg(pcg(pcg(seed ^ pcg(purpose)) ^ counter) ^ row);
}

fn uniform01(key: u32, i: u32) -> f32 {
  let h = pcg(pcg(key ^ i));
  return (f32(h >> 8u) + 0.5) * (1.0 / 16777216.0);
}

fn gumbel(key: u32, i: u32) -> f32 {
  return -log(-log(uniform01(key, i)));
}`;

/**
 * WGSL of the probability of a token under a row's statistics `s = (m, τ bits, Z, 1/T)` (as the
 * sample kernel writes them): `orderedKey(x)` maps f32 to u32 preserving order, and
 * `probOf(l, s)` = exp((l − m)/T)/Z when orderedKey(l) ≥ τ, else 0.
 */
export const SAMPLING_PROB_WGSL = `fn orderedKey(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  return select(b | 0x80000000u, ~b, (b >> 31u) == 1u);
}

fn probOf(l: f32, s: vec4<f32>) -> f32 {
  if (orderedKey(l) < bitcast<u32>(s.y)) { return 0.0; }
  return exp((l - s.x) * s.w) / s.z;
}`;

/** f32 words of one row's statistics in a stats buffer: (m, τ bits, Z, 1/T). */
export const STATS_WORDS = 4;

/** No state slot: the seed (or counter) comes from the parameters alone. */
export const NO_SLOT = 0xffffffff;

/**
 * The sample kernel: one workgroup per row; writes the row's statistics and its draw.
 * Variant: `WG` (invocations per row), `VOCAB` (V), `TOPK`, `TOPP` (whether each cut is on).
 */
export const sampleSpec: KernelSpec = {
  name: "sample",
  bindings: [
    { name: "logits", access: "read", type: "f32" }, // (R, V)
    { name: "stats", access: "read_write", type: "f32" }, // ((statsOffset + R) · 4)
    { name: "out", access: "read_write", type: "u32" }, // (outOffset + R)
    { name: "st", access: "read", type: "u32" }, // decoder state: seed and counter slots
  ],
  params: [
    { name: "rows", type: "u32" },
    { name: "outOffset", type: "u32" },
    { name: "statsOffset", type: "u32" },
    { name: "invT", type: "f32" },
    { name: "topK", type: "u32" },
    { name: "topP", type: "f32" },
    { name: "seed", type: "u32" },
    { name: "seedSlot", type: "u32" },
    { name: "purpose", type: "u32" },
    { name: "counter", type: "u32" },
    { name: "counterSlot", type: "u32" },
  ],
  wgsl: () => `
${PCG_WGSL}
${RANDOM_WGSL}
${SAMPLING_PROB_WGSL}

var<workgroup> red: array<f32, WG>;
var<workgroup> redIndex: array<u32, WG>;

// Sum of every invocation's v (called in uniform control flow by the whole workgroup).
fn sumAll(lid: u32, v: f32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) { red[lid] = red[lid] + red[lid + s]; }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}

fn maxAll(lid: u32, v: f32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) { red[lid] = max(red[lid], red[lid + s]); }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier();
  return total;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x;
  if (row >= P.rows) { return; } // uniform: the whole workgroup leaves together
  let start = row * VOCAB;

  // 1. The max, for a stable softmax.
  var m = -3.4028234e38;
  for (var v = lid; v < VOCAB; v += WG) { m = max(m, logits[start + v]); }
  m = maxAll(lid, m);

  // 2. top-k: the largest key τ with at least k keys ≥ τ (the k-th largest), bit by bit.
  var tau = 0u;
  if (TOPK) {
    for (var bit = 0u; bit < 32u; bit++) {
      let cand = tau | (0x80000000u >> bit);
      var count = 0.0;
      for (var v = lid; v < VOCAB; v += WG) {
        if (orderedKey(logits[start + v]) >= cand) { count += 1.0; }
      }
      if (sumAll(lid, count) >= f32(P.topK)) { tau = cand; }
    }
  }

  // 3. The mass of the kept tokens, then top-p: the largest τ whose mass reaches p of it.
  var z = 0.0;
  for (var v = lid; v < VOCAB; v += WG) {
    let l = logits[start + v];
    if (orderedKey(l) >= tau) { z += exp((l - m) * P.invT); }
  }
  z = sumAll(lid, z);
  if (TOPP) {
    // The kept mass at the accepted candidate is the new Z (no pass after the search).
    let floorKey = tau;
    let goal = P.topP * z;
    tau = 0u;
    for (var bit = 0u; bit < 32u; bit++) {
      let cand = tau | (0x80000000u >> bit);
      var mass = 0.0;
      for (var v = lid; v < VOCAB; v += WG) {
        let l = logits[start + v];
        let key = orderedKey(l);
        if (key >= cand && key >= floorKey) { mass += exp((l - m) * P.invT); }
      }
      let total = sumAll(lid, mass);
      if (total >= goal) {
        tau = cand;
        z = total;
      }
    }
    tau = max(tau, floorKey);
  }
  if (lid == 0u) {
    let o = (P.statsOffset + row) * ${STATS_WORDS}u;
    stats[o] = m;
    stats[o + 1u] = bitcast<f32>(tau);
    stats[o + 2u] = z;
    stats[o + 3u] = P.invT;
  }

  // 4. Gumbel-max over the kept tokens.
  var seed = P.seed;
  if (P.seedSlot != ${NO_SLOT}u) { seed = st[P.seedSlot]; }
  var counter = P.counter;
  if (P.counterSlot != ${NO_SLOT}u) { counter = counter + st[P.counterSlot]; }
  let key = drawKey(seed, P.purpose, counter, row);
  var best = -3.4028234e38;
  var bestIndex = 0xffffffffu;
  for (var v = lid; v < VOCAB; v += WG) {
    let l = logits[start + v];
    if (orderedKey(l) >= tau) {
      let score = (l - m) * P.invT + gumbel(key, v);
      if (bestIndex == 0xffffffffu || score > best) {
        best = score;
        bestIndex = v;
      }
    }
  }
  red[lid] = best;
  redIndex[lid] = bestIndex;
  workgroupBarrier();
  if (lid == 0u) {
    var b = red[0];
    var i = redIndex[0];
    for (var k = 1u; k < WG; k++) {
      let ki = redIndex[k];
      if (ki == 0xffffffffu) { continue; }
      if (i == 0xffffffffu || red[k] > b || (red[k] == b && ki < i)) {
        b = red[k];
        i = ki;
      }
    }
    out[P.outOffset + row] = i;
  }
}`,
};

/** Where a sample kernel's random key comes from. */
export interface DrawSource {
  /** What the draw is for ({@linkcode DRAW}). */
  purpose: number;
  /** Seed given by the host (used when `seedSlot` is absent). */
  seed?: number;
  /** Read the seed from this slot of `state` instead. */
  seedSlot?: number;
  /** Counter (added to `state[counterSlot]` when that is given). */
  counter?: number;
  /** Add this slot of `state` to the counter. */
  counterSlot?: number;
  /** The decoder state holding those slots. */
  state?: Tensor;
}

/** A one-word state for draws that read no slot (a binding cannot alias the output). */
function noState(gpu: Gpu): Tensor {
  let t = gpu.caches.get("sample: no state") as Tensor | undefined;
  if (!t) gpu.caches.set("sample: no state", t = new Tensor(gpu, [1], "u32", "no state"));
  return t;
}

/** Passes over a row at most: max, 32 top-k, sum, 32 top-p, draw. */
const MAX_PASSES = 67;

/**
 * Invocations per row: 256 on GPUs; on software adapters as few as possible (8, like argmax:
 * cheaper barriers), but enough that one invocation runs under 60,000 loop iterations in all.
 * llvmpipe stops a shader's loops after 65,535 iterations per invocation (its loop limiter) and
 * carries on with wrong sums: at V = 32,000 with 8 invocations the top-p search was cut at pass 14.
 */
export function sampleWorkgroupSize(gpu: Gpu, vocabSize: number): number {
  if (!gpu.adapter.isFallbackAdapter) return 256;
  let wg = 8;
  while (wg < 256 && Math.ceil(vocabSize / wg) * MAX_PASSES >= 60_000) wg *= 2;
  return wg;
}

/**
 * Records one draw per row of `logits` from its filtered distribution into
 * `out[outOffset + r]`, and the row's statistics into `stats[(statsOffset + r) · 4 ..]`.
 *
 * @example The token after the prompt, drawn at temperature 0.7 with top-p 0.9
 * ```ts ignore
 * sampleForward(step, lastLogits, stats, tokens, { temperature: 0.7, topK: 0, topP: 0.9 },
 *   { purpose: DRAW.token, seed: 1, counter: P }, { outOffset: P });
 * ```
 */
export function sampleForward(
  step: Step,
  logits: Tensor,
  stats: Tensor,
  out: Tensor,
  sampling: SamplingParams,
  source: DrawSource,
  offsets: { outOffset?: number; statsOffset?: number } = {},
): void {
  const V = logits.shape[logits.shape.length - 1];
  const rows = logits.size / V;
  const outOffset = offsets.outOffset ?? 0;
  const statsOffset = offsets.statsOffset ?? 0;
  if (logits.dtype !== "f32") throw new TypeError(`sampleForward: logits "${logits.label}" must be f32`);
  if (outOffset + rows > out.size) {
    throw new RangeError(`sampleForward: writing ${rows} tokens at ${outOffset} overruns "${out.label}"`);
  }
  if ((statsOffset + rows) * STATS_WORDS > stats.size) {
    throw new RangeError(
      `sampleForward: ${rows} rows of statistics at ${statsOffset} overrun "${stats.label}"`,
    );
  }
  if ((source.seedSlot !== undefined || source.counterSlot !== undefined) && !source.state) {
    throw new TypeError("sampleForward: a seed or counter slot needs the state tensor");
  }
  const topK = sampling.topK > 0 && sampling.topK < V ? sampling.topK : 0;
  step.dispatch(sampleSpec, {
    variant: { WG: sampleWorkgroupSize(step.gpu, V), VOCAB: V, TOPK: topK > 0, TOPP: sampling.topP < 1 },
    bindings: { logits, stats, out, st: source.state ?? noState(step.gpu) },
    params: {
      rows,
      outOffset,
      statsOffset,
      invT: 1 / sampling.temperature,
      topK,
      topP: sampling.topP,
      seed: source.seed ?? 0,
      seedSlot: source.seedSlot ?? NO_SLOT,
      purpose: source.purpose,
      counter: source.counter ?? 0,
      counterSlot: source.counterSlot ?? NO_SLOT,
    },
    workgroups: [rows],
  });
}

// ----------------------------------------------------------------------------------------------
// CPU references

/**
 * The filtered distribution of one row of logits, in f64 (the kernel's definition; see the module
 * header). Returns V probabilities, zero outside the kept set.
 *
 * @example top-k 2 keeps both tokens tied at the cut
 * ```ts
 * import { samplingDistributionReference } from "./sample.ts";
 * const p = samplingDistributionReference(new Float32Array([3, 1, 1, 0]), { temperature: 1, topK: 2, topP: 1 });
 * p[3]; // 0
 * ```
 */
export function samplingDistributionReference(logits: ArrayLike<number>, s: SamplingParams): Float64Array {
  const V = logits.length;
  const sorted = Array.from(logits).sort((a, b) => b - a);
  const kth = s.topK > 0 && s.topK < V ? sorted[s.topK - 1] : -Infinity;
  const max = sorted[0];
  const weight = new Float64Array(V);
  let z = 0;
  for (let i = 0; i < V; i++) {
    if (logits[i] >= kth) z += weight[i] = Math.exp((logits[i] - max) / s.temperature);
  }
  if (s.topP < 1) {
    // Mass strictly above each distinct value, from the top.
    const above = new Map<number, number>();
    let acc = 0;
    let prev = NaN;
    let run = 0;
    for (const l of sorted) {
      if (l !== prev) {
        acc += run;
        run = 0;
        above.set(l, acc);
        prev = l;
      }
      if (l >= kth) run += Math.exp((l - max) / s.temperature) / z;
    }
    let kept = 0;
    for (let i = 0; i < V; i++) {
      if (weight[i] > 0 && above.get(logits[i])! < s.topP) kept += weight[i];
      else weight[i] = 0;
    }
    z = kept;
  }
  for (let i = 0; i < V; i++) weight[i] /= z;
  return weight;
}

/**
 * The kernels' uniform in (0, 1) for (seed, purpose, counter, row, i), bit-exact with
 * {@linkcode RANDOM_WGSL}.
 *
 * @example
 * ```ts
 * import { DRAW, uniformReference } from "./sample.ts";
 * const u = uniformReference(1, DRAW.token, 5, 0, 0); // 0 < u < 1
 * ```
 */
export function uniformReference(
  seed: number,
  purpose: number,
  counter: number,
  row: number,
  i: number,
): number {
  const key = pcgHash((pcgHash((pcgHash((seed ^ pcgHash(purpose)) >>> 0) ^ counter) >>> 0) ^ row) >>> 0);
  const h = pcgHash(pcgHash((key ^ i) >>> 0));
  return ((h >>> 8) + 0.5) / 16777216;
}
