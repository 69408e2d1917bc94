/**
 * Jacobi decoding with a KV cache, as in CLLM's inference (docs/method.md §2.1), with its loop on
 * the GPU.
 *
 * After prefill, each block of n tokens starts with the known next token and n−1 guesses drawn
 * (seeded) from the context. Every iteration is one forward over the block at the committed
 * position, a per-row argmax, and the acceptance kernel (kernels/jacobi_accept.ts), which commits
 * the longest verified prefix, advances the cache length (truncation is a length) and writes the
 * next input. None of it needs the host, so many iterations are recorded per submit and the host
 * reads back only to stream text and to see whether generation stopped (decode/gpu_loop.ts).
 *
 * Fixed against the reference: generation stops at exactly `maxNewTokens`, and at the first EOS
 * even inside a block, with nothing emitted after it.
 *
 * Cost note: every forward runs all n rows, rows past the active suffix masked by being ignored,
 * so dispatch sizes stay fixed and the host never needs the active length.
 *
 * @module
 */

import { type Step, Tensor } from "../core/mod.ts";
import { jacobiSampledAccept, jacobiWorkWords, type SampledAcceptRule } from "../kernels/jacobi_sampled.ts";
import { DRAW, sampleForward } from "../kernels/sample.ts";
import { samplingParams } from "./sampling.ts";
import {
  JACOBI_SLOTS,
  JACOBI_STATE_SIZE,
  jacobiAccept,
  type JacobiGuesses,
  jacobiLogStride,
  jacobiStart,
  refillUnit,
} from "../kernels/jacobi_accept.ts";
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
import { type BlockTrajectory, trajectoryStats } from "./jacobi_stats.ts";
import {
  jacobiRecyclePrepare,
  jacobiRecycleVerify,
  RECYCLE_SLOTS,
  recycleLayout,
  recyclePoolWords,
  type RecycleShape,
} from "../kernels/jacobi_recycle.ts";
import { lookaheadMoveKv } from "../kernels/lookahead.ts";

/** Options of Jacobi decoding. */
export interface JacobiOptions extends GenerateOptions, ReadbackOptions {
  /** Block size n (1..model.maxRows; default 16). */
  blockSize?: number;
  /**
   * Called after each readback with every block's states so far (the trajectory the result will
   * hold), for a live view: where reads are cheap (browsers) that is after every forward.
   */
  onTrajectory?: (trajectory: BlockTrajectory[]) => void;
  /**
   * The sampled acceptance rule: `exact` (default), or `resample`, a deliberately wrong rule kept
   * only as the negative control of the statistical test (kernels/jacobi_sampled.ts).
   * @internal
   */
  acceptRule?: SampledAcceptRule;
  /**
   * Sliding window (default false): after a partial acceptance the block is refilled to n tokens
   * with fresh guesses instead of shrinking to the unverified suffix, so no row of a forward is
   * idle. Same output; the recorded trajectory then holds window states, not CLLM block states.
   */
  sliding?: boolean;
  /**
   * Blocks in flight K (multiblock decoding; default 1): each forward runs K·n rows — the first
   * block verified against the committed text, the later ones iterating on the unverified blocks
   * before them (Jacobi Forcing's pseudo-active blocks, verified once they become the first) — and
   * a new block of n guesses enters whenever n places of the window are free. Same output. Not
   * with `sliding` (which refills every free place at once).
   */
  blocks?: number;
  /**
   * Rejection recycling (greedy only; default 0, off): G branches verified beside the window in
   * every forward, each the next token followed by a continuation from the model's predictions at
   * an earlier iteration (kernels/jacobi_recycle.ts); the longest verified path is committed.
   */
  recycle?: number;
  /** Tokens per recycled branch C (2..window; default the block size). */
  recycleLength?: number;
  /**
   * Where new guesses come from (default `"random"`, the reference's): `"context"` copies the
   * tokens that followed the latest earlier occurrence of the preceding ones (prompt lookup), which
   * raises tokens per forward where answers repeat the question. Same output either way.
   */
  guessSource?: JacobiGuesses;
}

/** Statistics of a Jacobi generation. */
export interface JacobiStats extends GenerationStats {
  /** Block size. */
  blockSize: number;
  /** Blocks in flight (multiblock decoding; 1 otherwise). */
  blocksInFlight: number;
  /** Tokens committed from recycled branches beyond what the window verified (0 without recycling). */
  recycledTokens: number;
  /** Iterations a recycled branch won. */
  recycleHits: number;
  /** Blocks started. */
  blocks: number;
  /** Mean newly-correct prefix tokens per iteration (docs/method.md §5.1), averaged over blocks. */
  fastForward: number;
  /** Stationary tokens: correct before all their predecessors were, and unchanged since (docs/method.md §5.1). */
  stationary: number;
}

/** Result of a Jacobi generation: tokens, stats, and every block's states. */
export interface JacobiResult extends GenerationResult {
  /** Statistics. */
  stats: JacobiStats;
  /** Every Jacobi state of every block, in order (input of each forward). */
  trajectory: BlockTrajectory[];
}

/**
 * Jacobi decoding, greedy or (with `sampling`) lossless sampled. Yields new tokens as they are read back; returns tokens, statistics and
 * the trajectory of every block.
 *
 * @example Jacobi decoding with 16-token blocks
 * ```ts ignore
 * const gen = generateJacobi(model, promptIds, { maxNewTokens: 128, eosIds: [2], blockSize: 16 });
 * let r = await gen.next();
 * while (!r.done) r = await gen.next();
 * console.log(r.value.stats.tokensPerForward);
 * ```
 */
export function generateJacobi(
  model: CausalLM,
  prompt: readonly number[],
  options: JacobiOptions,
): AsyncGenerator<number[], JacobiResult> {
  return runGpuDecoder(model, prompt, options, jacobiPlan(model, options));
}

/**
 * The GPU-loop plan of Jacobi decoding, greedy or sampled, for `runGpuDecoder` and `sampleMany`.
 * Sampled, each iteration draws every row's token (kernels/sample.ts) and verifies the guesses
 * with the speculative-sampling rule (kernels/jacobi_sampled.ts).
 */
export function jacobiPlan(model: CausalLM, options: JacobiOptions): GpuDecoderPlan<JacobiResult> {
  const blockSize = options.blockSize ?? 16;
  const blocks = options.blocks ?? 1;
  // The window: every forward's rows (one block, or K blocks in flight).
  const n = blockSize * blocks;
  if (
    !Number.isInteger(blockSize) || blockSize < 1 || !Number.isInteger(blocks) || blocks < 1 ||
    n > model.maxRows
  ) {
    throw new RangeError(
      `The Jacobi window (block size ${blockSize} × ${blocks} blocks) must be 1..${model.maxRows} rows` +
        (n > model.maxRows ? `; load the model with maxRows ≥ ${n}, or use fewer or smaller blocks` : ""),
    );
  }
  refillUnit(n, options.sliding, blocks); // validates the combination
  const recycle = options.recycle ?? 0;
  const shape: RecycleShape | null = recycle > 0
    ? { window: n, branches: recycle, length: Math.min(n, options.recycleLength ?? blockSize) }
    : null;
  const layout = shape ? recycleLayout(shape) : null; // validates G and C
  // Rows of every forward: the window, and the recycled branches beside it.
  const rows = layout?.rows ?? n;
  if (rows > model.maxRows) {
    throw new RangeError(
      `Jacobi with ${recycle} recycled branches of ${
        shape!.length
      } needs ${rows} rows per forward, over the ` +
        `model's maxRows of ${model.maxRows}; use fewer or shorter branches, or load the model with a larger maxRows`,
    );
  }
  const budget = options.maxNewTokens;
  const eosIds = options.eosIds ?? [];
  const sliding = options.sliding ?? false;
  const guesses = options.guessSource ?? "random";
  const sampling = samplingParams(options.sampling);
  if (sampling && shape) {
    throw new RangeError("Rejection recycling is greedy-only; drop `recycle` or sample with temperature 0");
  }
  const rule = options.acceptRule ?? "exact";
  const label = decoderLabel({
    kind: "jacobi",
    blockSize,
    blocks,
    recycle,
    recycleLength: shape?.length,
    sliding,
    guessSource: guesses,
    sampling: options.sampling,
  });
  // Two 16-row forwards fill a readback's ~10 ms wait on llvmpipe, where the adaptive cadence starts.
  const cadence = chooseCadence(model, label, options, 2, model.gpu.readbackMs);
  const logCapacity = budget + 2;
  return {
    label,
    cadence,
    sampling,
    overshoot: rows,
    setup(s) {
      const P = s.promptLength;
      const limit = P + budget;
      const b = blockBuffers(model, "jacobi", rows, eosIds);
      const recycling = shape && layout
        ? {
          relPositions: Tensor.from(model.gpu, layout.relPositions, [rows], "recycling positions"),
          mask: Tensor.from(model.gpu, layout.mask, [rows, layout.maskWords], "recycling mask"),
          pool: new Tensor(model.gpu, [recyclePoolWords(shape)], "u32", "recycling pool"),
        }
        : null;
      const { st, block, pred, eos } = b;
      const traj = new Tensor(model.gpu, [logCapacity * jacobiLogStride(n)], "u32", "jacobi trajectory");
      const V = model.config.vocabSize;
      const work = sampling
        ? new Tensor(model.gpu, [jacobiWorkWords(n, V)], "f32", "jacobi sampling workspace")
        : null;
      const sampledIteration = (step: Step, seed: number) => {
        recordBlockForward(step, s, b, n, {}, false);
        sampleForward(step, b.logits, work!, pred, sampling!, {
          purpose: DRAW.rowSample,
          seed,
          state: st,
          counterSlot: JACOBI_SLOTS.forwards,
        });
        jacobiSampledAccept(step, {
          st,
          tokens: s.tokens,
          block,
          pred,
          eos,
          eosCount: eosIds.length,
          traj,
          logCapacity,
          logits: b.logits,
          work: work!,
          n,
          limit,
          seed,
          sliding,
          blocks,
          guesses,
          rule,
        });
      };
      const loop: GpuLoop = {
        start: (step, seed) => {
          jacobiStart(step, {
            st,
            tokens: s.tokens,
            block,
            n,
            base: P,
            seed,
            guesses,
            work: work ?? undefined,
          });
          if (recycling) jacobiRecyclePrepare(step, { st, block, pool: recycling.pool, shape: shape! });
        },
        iterate: (step, _index, seed) => {
          if (sampling) return sampledIteration(step, seed);
          if (recycling) {
            recordBlockForward(step, s, b, rows, {
              relPositions: recycling.relPositions,
              mask: recycling.mask,
            });
            jacobiRecycleVerify(step, { st, block, pred, pool: recycling.pool, shape: shape! });
          } else {
            recordBlockForward(step, s, b, n);
          }
          jacobiAccept(step, {
            st,
            tokens: s.tokens,
            block,
            pred,
            eos,
            eosCount: eosIds.length,
            traj,
            logCapacity,
            n,
            limit,
            seed,
            sliding,
            blocks,
            guesses,
          });
          if (recycling) {
            for (let l = 0; l < s.cache.k.length; l++) {
              lookaheadMoveKv(step, st, s.cache.k[l], s.cache.v[l], RECYCLE_SLOTS);
            }
            jacobiRecyclePrepare(step, { st, block, pool: recycling.pool, shape: shape! });
          }
        },
        // The trajectory log rides along with every read, so no readback is needed at the end.
        read: [st, traj],
        observe: options.onTrajectory
          ? ([state, log]) =>
            options.onTrajectory!(
              parseTrajectory(log as Uint32Array, Math.min(state[JACOBI_SLOTS.logCount], logCapacity), n),
            )
          : undefined,
        committed: ([state]) => {
          const done = state[JACOBI_SLOTS.done] !== 0;
          return { done, end: done ? state[JACOBI_SLOTS.end] : state[JACOBI_SLOTS.base] };
        },
        // Every iteration commits at least one token until done; the prefill's token is
        // re-committed by block 0, hence the + 1.
        useful: (known, pending) => limit - (P + known) + 1 - pending,
      };
      return {
        loop,
        owned: [...b.all, traj, ...(work ? [work] : []), ...(recycling ? Object.values(recycling) : [])],
      };
    },
    forwards: (last) => 1 + (last.length ? last[0][JACOBI_SLOTS.forwards] : 0),
    finish(common, last) {
      const [state, log] = last.length ? last : [new Uint32Array(JACOBI_STATE_SIZE), new Uint32Array(0)];
      const trajectory = parseTrajectory(
        log as Uint32Array,
        Math.min(state[JACOBI_SLOTS.logCount], logCapacity),
        n,
      );
      const ts = trajectoryStats(trajectory);
      return {
        ...common,
        trajectory,
        stats: {
          ...common.stats,
          blockSize,
          blocksInFlight: blocks,
          recycledTokens: state[RECYCLE_SLOTS.recycled],
          recycleHits: state[RECYCLE_SLOTS.hits],
          blocks: trajectory.length,
          fastForward: ts.fastForward,
          stationary: ts.stationary,
        },
      };
    },
  };
}

/** Splits the GPU trajectory log into per-block state lists. */
function parseTrajectory(log: Uint32Array, count: number, n: number): BlockTrajectory[] {
  const stride = jacobiLogStride(n);
  const blocks: BlockTrajectory[] = [];
  for (let i = 0; i < count; i++) {
    const o = i * stride;
    const blockIndex = log[o];
    const state = Array.from(log.subarray(o + 2, o + 2 + n));
    if (blocks.length === 0 || blocks[blocks.length - 1].block !== blockIndex) {
      blocks.push({ block: blockIndex, states: [] });
    }
    blocks[blocks.length - 1].states.push(state);
  }
  return blocks;
}
