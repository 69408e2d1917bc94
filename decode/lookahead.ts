/**
 * Lookahead decoding (LADE: Jacobi iteration + an n-gram pool, docs/method.md §10) with its loop
 * on the GPU.
 *
 * Each step is ONE forward over T = (N−1)·(W+G) rows: `lst` (the last committed token), a window
 * of N−1 Jacobi levels of W columns (the lookahead branch, which harvests n-grams into the pool)
 * and G candidate (N−1)-grams from the pool under `lst` (the verification branch). The structure
 * is static for (N, W, G), so the rows' relative positions and the attention mask are built once
 * on the host (kernels/lookahead.ts). After the forward, a per-row argmax and one acceptance
 * kernel commit the verified tokens, update the pool, shift the window and write the next input;
 * a per-layer kernel moves the accepted candidate rows' K/V to their committed slots. None of it
 * needs the host, so several steps are recorded per submit and the host reads back `st` and the
 * tokens once per chunk (decode/gpu_loop.ts).
 *
 * Output equals greedy AR token for token: only verified tokens are committed (row 0's argmax is
 * always right; a candidate token is committed only if it equals the model's prediction there).
 * Sampled (`sampling` with a temperature above 0), every row draws its token, the window advances
 * with the draws, and candidates are verified as point-mass drafts (kernels/lookahead.ts), so the
 * text has sampled AR's distribution.
 *
 * Differences from LADE: the bonus token is committed when all N−1 candidate tokens match (LADE
 * drops it), generation stops at exactly `maxNewTokens` and at the first EOS, there is no warm-up
 * phase (every window level starts as tokens drawn from the prompt), and the pool is seeded from
 * the prompt's n-grams and then fed by the window only (LADE's POOL_FROM_PROMPT also adds the
 * n-grams of the committed text).
 *
 * @module
 */

import { Tensor } from "../core/mod.ts";
import {
  encodePool,
  LOOKAHEAD_SLOTS,
  LOOKAHEAD_STATE_SIZE,
  lookaheadAccept,
  lookaheadLayout,
  lookaheadMoveKv,
  type LookaheadShape,
  lookaheadStart,
  promptPool,
} from "../kernels/lookahead.ts";
import { DRAW, sampleForward, STATS_WORDS } from "../kernels/sample.ts";
import { samplingParams } from "./sampling.ts";
import type { CausalLM, GenerateOptions, GenerationResult, GenerationStats } from "./generation.ts";
import { chooseCadence, type ReadbackOptions } from "./cadence.ts";
import { decoderLabel } from "./decoder.ts";
import {
  blockBuffers,
  type GpuDecoderPlan,
  type GpuLoop,
  recordBlockForward,
  runGpuDecoder,
} from "./gpu_loop.ts";

/** Options of lookahead decoding. */
export interface LookaheadOptions extends GenerateOptions, ReadbackOptions {
  /** N-gram size N ≥ 3 (default 4): N−1 window levels, candidates of N−1 tokens. */
  ngram?: number;
  /** Window width W ≥ 1 (default 5). */
  window?: number;
  /** Candidate n-grams verified per step G ≥ 1, also the n-grams kept per pool key (default 5). */
  candidates?: number;
}

/** Statistics of a lookahead generation. */
export interface LookaheadStats extends GenerationStats {
  /** N. */
  ngram: number;
  /** W. */
  window: number;
  /** G. */
  candidates: number;
  /** Rows of each decoding forward, T = (N−1)·(W+G). */
  rows: number;
  /** Tokens committed from verified candidates (beyond the one token every step commits). */
  acceptedFromPool: number;
  /** Decoding steps that committed at least one verified candidate token. */
  hitSteps: number;
}

/** Result of a lookahead generation. */
export interface LookaheadResult extends GenerationResult {
  /** Statistics. */
  stats: LookaheadStats;
}

/**
 * Lookahead decoding, greedy or (with `sampling`) lossless sampled. Yields new tokens as they are read back; returns tokens and
 * statistics. `stats.forwards` counts prefill as one; `tokens = forwards + acceptedFromPool`.
 *
 * @example Lookahead with 4-grams, a window of 5 and 5 guesses
 * ```ts ignore
 * const gen = generateLookahead(model, promptIds, { maxNewTokens: 128, eosIds: [2], ngram: 4, window: 5, candidates: 5 });
 * let r = await gen.next();
 * while (!r.done) r = await gen.next();
 * console.log(r.value.stats.tokensPerForward, r.value.stats.acceptedFromPool);
 * ```
 */
export function generateLookahead(
  model: CausalLM,
  prompt: readonly number[],
  options: LookaheadOptions,
): AsyncGenerator<number[], LookaheadResult> {
  return runGpuDecoder(model, prompt, options, lookaheadPlan(model, prompt, options));
}

/** The GPU-loop plan of lookahead decoding, for `runGpuDecoder` and `sampleMany`. */
export function lookaheadPlan(
  model: CausalLM,
  prompt: readonly number[],
  options: LookaheadOptions,
): GpuDecoderPlan<LookaheadResult> {
  const shape: LookaheadShape = {
    ngram: options.ngram ?? 4,
    window: options.window ?? 5,
    guesses: options.candidates ?? 5,
  };
  const layout = lookaheadLayout(shape); // validates N, W, G
  const T = layout.rows;
  if (T > model.maxRows) {
    throw new RangeError(
      `Lookahead with N=${shape.ngram}, W=${shape.window}, G=${shape.guesses} needs ${T} rows per forward, ` +
        `over the model's maxRows of ${model.maxRows}; lower the window or the candidates, or load the model ` +
        `with a larger maxRows`,
    );
  }
  const budget = options.maxNewTokens;
  const eosIds = options.eosIds ?? [];
  const sampling = samplingParams(options.sampling);
  const label = decoderLabel({
    kind: "lookahead",
    ngram: shape.ngram,
    window: shape.window,
    candidates: shape.guesses,
    sampling: options.sampling,
  });
  const cadence = chooseCadence(model, label, options, 2, model.gpu.readbackMs);
  const V = model.config.vocabSize;
  return {
    label,
    cadence,
    sampling,
    overshoot: 0,
    setup(s) {
      const gpu = model.gpu;
      const P = s.promptLength;
      const limit = P + budget;
      const b = blockBuffers(model, "lookahead", T, eosIds);
      const { st, block, pred, eos } = b;
      const relPositions = Tensor.from(gpu, layout.relPositions, [T], "lookahead positions");
      const mask = Tensor.from(gpu, layout.mask, [T, layout.maskWords], "lookahead mask");
      // The prompt's pool stays as uploaded; each generation starts from a copy of it.
      const words = V * (1 + shape.guesses * (shape.ngram - 1));
      const seedPool = Tensor.from(
        gpu,
        encodePool(promptPool(prompt, shape), V, shape),
        [words],
        "lookahead prompt pool",
      );
      const pool = new Tensor(gpu, [words], "u32", "lookahead pool");
      const stats = sampling ? new Tensor(gpu, [T * STATS_WORDS], "f32", "lookahead row statistics") : null;
      const loop: GpuLoop = {
        start: (step, seed) => {
          step.copy(seedPool, 0, pool, 0, words * 4);
          lookaheadStart(step, { st, tokens: s.tokens, block, pool, shape, vocabSize: V, base: P, seed });
        },
        iterate: (step, _index, seed) => {
          recordBlockForward(step, s, b, T, { relPositions, mask }, !sampling);
          if (sampling) {
            sampleForward(step, b.logits, stats!, pred, sampling, {
              purpose: DRAW.rowSample,
              seed,
              state: st,
              counterSlot: LOOKAHEAD_SLOTS.forwards,
            });
          }
          lookaheadAccept(step, {
            sampled: sampling ? { logits: b.logits, stats: stats!, seed } : undefined,
            st,
            tokens: s.tokens,
            block,
            pred,
            eos,
            eosCount: eosIds.length,
            pool,
            shape,
            vocabSize: V,
            limit,
          });
          for (let l = 0; l < s.cache.k.length; l++) lookaheadMoveKv(step, st, s.cache.k[l], s.cache.v[l]);
        },
        read: [st],
        // Committed: positions up to base (lst included), or up to end once stopped.
        committed: ([state]) => {
          const done = state[LOOKAHEAD_SLOTS.done] !== 0;
          return { done, end: done ? state[LOOKAHEAD_SLOTS.end] : state[LOOKAHEAD_SLOTS.base] + 1 };
        },
        // Every step commits at least one token until done.
        useful: (known, pending) => limit - (P + known) - pending,
      };
      return { loop, owned: [...b.all, relPositions, mask, seedPool, pool, ...(stats ? [stats] : [])] };
    },
    forwards: (last) => 1 + (last.length ? last[0][LOOKAHEAD_SLOTS.forwards] : 0),
    finish(common, last) {
      const state = last.length ? last[0] : new Uint32Array(LOOKAHEAD_STATE_SIZE);
      return {
        ...common,
        stats: {
          ...common.stats,
          ngram: shape.ngram,
          window: shape.window,
          candidates: shape.guesses,
          rows: T,
          acceptedFromPool: state[LOOKAHEAD_SLOTS.accepted],
          hitSteps: state[LOOKAHEAD_SLOTS.hitSteps],
        },
      };
    },
  };
}
