/**
 * The one skeleton of every GPU-resident decoder (greedy AR, Jacobi, lookahead): prefill, the
 * decoder's own buffers, the readback cadence, the stop rules and the common statistics. A decoder
 * plugs in as a {@linkcode GpuLoop}: the kernels that start and iterate its loop, and how to read
 * its committed tokens from a readback.
 *
 * After prefill the decoder's kernels hold the loop state on the GPU, commit tokens and write the
 * next input; the host only records iterations, reads the token buffer (and the decoder's state)
 * back now and then, and streams new tokens.
 *
 * Cadence (decode/cadence.ts): some iterations before each read, some behind it to run during the
 * read's fixed wait (docs/docs/webgpu.md §2). Iterations past the end (the rest of the last submit
 * before the read that sees the end, plus those behind it) waste GPU time but never change a
 * returned token: the Jacobi and lookahead kernels ignore iterations once their loop is done, and
 * greedy AR's overshoot past EOS or the budget is cut on the host. The prefill's token is read the
 * same way, with the first submit behind it.
 *
 * @module
 */

import { type ReadData, readTensors, Step, Tensor } from "../core/mod.ts";
import { DECODE_SLOTS, DECODE_STATE_SIZE } from "../kernels/decode_state.ts";
import type { ForwardArgs } from "../model/llama.ts";
import { type Cadence, timedRead } from "./cadence.ts";
import type { SamplingParams } from "../kernels/sample.ts";
import {
  type CausalLM,
  closeSession,
  type DecodeSession,
  eosTensor,
  type GenerateOptions,
  type GenerationStats,
  makeStats,
  prefill,
  readTokens,
  trimAtStop,
} from "./generation.ts";

/** What a GPU-resident decoder gives the skeleton once the prompt is prefilled. */
export interface GpuLoop {
  /**
   * Records the kernels that set up the loop state after prefill (once, before any iteration),
   * for the generation seeded by `seed`.
   */
  start?(step: Step, seed: number): void;
  /**
   * Records one iteration: a forward over the decoder's rows and its acceptance kernel.
   * `index` counts the iterations recorded before this one (AR places its row with it); `seed`
   * keys the iteration's random draws (kernels/sample.ts).
   */
  iterate(step: Step, index: number, seed: number): void;
  /** Tensors read back with the token buffer each time (loop state, a trajectory log...). */
  read: Tensor[];
  /**
   * From one readback (`read`'s tensors, in order) and the number of iterations submitted before
   * it: whether the loop finished, and the end (exclusive) of the committed tokens.
   */
  committed(read: ReadData[], iterationsSeen: number): { done: boolean; end: number };
  /** Sees every readback's data as it arrives (a live view of the loop; optional). */
  observe?(read: ReadData[]): void;
  /**
   * How many more iterations can still commit a token when `known` new tokens are known to the
   * host, `pending` iterations were submitted after the read it last saw and `submitted` in all (a
   * bound on waste only).
   */
  useful(known: number, pending: number, submitted: number): number;
}

/** The decoder-specific half of a GPU-resident generation. */
export interface GpuDecoderPlan<R> {
  /** The decoder's label in statistics and errors (`decoderLabel`). */
  label: string;
  /** Readback cadence of this generation. */
  cadence: Cadence;
  /** Token positions needed past the budget (a Jacobi block's overshoot...). */
  overshoot: number;
  /** The sampling settings (null: greedy); the token after the prompt is drawn with them too. */
  sampling: SamplingParams | null;
  /** Creates the decoder's buffers (freed by the skeleton) and its loop, after prefill. */
  setup(session: DecodeSession): { loop: GpuLoop; owned: Tensor[] };
  /** Forwards that produced the returned tokens, prefill included, from the last readback. */
  forwards(last: ReadData[], run: { tokens: number; submitted: number }): number;
  /** The decoder's result from the common one and the last readback (empty when prefill ended it). */
  finish(common: DecodedTokens, last: ReadData[]): R;
}

/** What the skeleton hands to a decoder's `finish`. */
export interface DecodedTokens {
  /** New token ids (the prompt excluded). */
  tokens: number[];
  /** Why generation stopped. */
  stopReason: "eos" | "length";
  /** The statistics every decoder reports. */
  stats: GenerationStats;
}

/**
 * Runs a GPU-resident decoder: prefill, its loop with readbacks on the cadence, the stop rules,
 * then its result. Yields new tokens as they are read back. The decoder's buffers and the session
 * are freed however the generation ends (also when the caller stops iterating).
 *
 * @example How greedy AR plugs in (decode/ar.ts)
 * ```ts ignore
 * return yield* runGpuDecoder(model, prompt, options, { label: "ar", cadence, overshoot: 0, setup, forwards, finish });
 * ```
 */
export async function* runGpuDecoder<R>(
  model: CausalLM,
  prompt: readonly number[],
  options: GenerateOptions,
  plan: GpuDecoderPlan<R>,
): AsyncGenerator<number[], R> {
  const budget = options.maxNewTokens;
  if (!Number.isInteger(budget) || budget < 1) {
    throw new RangeError(`maxNewTokens must be a positive integer, not ${budget}`);
  }
  const eosIds = options.eosIds ?? [];
  const seed = options.seed ?? 0;
  const t0 = performance.now();
  const s = prefill(model, prompt, budget + plan.overshoot, options.prefixCache, {
    sampling: plan.sampling,
    seed,
  });
  const owned: Tensor[] = [];
  let committed: number[] | undefined; // set when the generation ends normally
  try {
    const { loop, owned: buffers } = plan.setup(s);
    owned.push(...buffers);
    const gpu = model.gpu;
    const P = s.promptLength;
    const cadence = plan.cadence;
    let out: number[] = [];
    let pending = 0; // iterations submitted after the read the host last saw
    let submitted = 0; // iterations submitted in all
    const record = (count: number, start = false) => {
      // The prefill's token is known to come, so it counts as known from the start.
      const n = Math.min(count, loop.useful(Math.max(1, out.length), pending, submitted));
      if (n <= 0 && !start) return;
      const step = new Step(gpu, plan.label);
      try {
        if (start) loop.start?.(step, seed);
        for (let i = 0; i < n; i++) loop.iterate(step, submitted + i, seed);
      } catch (e) {
        step.abandon();
        throw e;
      }
      step.submit();
      pending += Math.max(0, n);
      submitted += Math.max(0, n);
      cadence.submitted(Math.max(0, n));
    };
    const firstRead = timedRead(cadence, () => readTokens(s, P, 1));
    record(cadence.first(), true);
    const first = trimAtStop(await firstRead, eosIds, budget);
    const prefillSeconds = (performance.now() - t0) / 1000;
    yield first.tokens;
    out = first.tokens;
    let readbacks = 0;
    let stopped = first.stopped;
    let last: ReadData[] = [];
    while (stopped === null) {
      if (pending === 0) throw new Error(`${plan.label}: no iteration left to run (internal error)`);
      const seen = submitted;
      const read = timedRead(cadence, () => readTensors(gpu, [s.tokens, ...loop.read]));
      pending = 0;
      record(cadence.behind());
      const [tokens, ...rest] = await read;
      last = rest;
      readbacks++;
      const c = loop.committed(rest, seen);
      loop.observe?.(rest);
      // Tokens past the first EOS or the budget are cut here (greedy AR overshoots; the other
      // decoders' kernels stop exactly, so for them this cuts nothing).
      const fresh = trimAtStop(
        Array.from(tokens.subarray(P + out.length, c.end)),
        eosIds,
        budget - out.length,
      );
      stopped = fresh.stopped ?? (c.done ? "length" : null);
      if (fresh.tokens.length > 0) {
        out = out.concat(fresh.tokens);
        yield fresh.tokens;
      }
      if (stopped === null) record(cadence.before());
    }
    const seconds = (performance.now() - t0) / 1000;
    const stopReason = out.length > 0 && eosIds.includes(out[out.length - 1]) ? "eos" : "length";
    const forwards = plan.forwards(last, { tokens: out.length, submitted });
    const stats = makeStats(
      plan.label,
      P,
      out.length,
      forwards,
      readbacks,
      prefillSeconds,
      seconds - prefillSeconds,
    );
    committed = out;
    return plan.finish({ tokens: out, stopReason, stats }, last);
  } finally {
    for (const t of owned) t.destroy();
    closeSession(s, committed);
  }
}

/**
 * The buffers of a decoder whose loop runs a block of rows per iteration (Jacobi, lookahead): the
 * loop state (kernels/decode_state.ts), the block's input tokens, their greedy predictions, the
 * logits and the stop tokens.
 */
export interface BlockBuffers {
  /** Loop state (u32, {@linkcode DECODE_STATE_SIZE}). */
  st: Tensor;
  /** Input tokens of the block (u32, rows). */
  block: Tensor;
  /** Greedy prediction after each row (u32, rows). */
  pred: Tensor;
  /** (rows, V) logits. */
  logits: Tensor;
  /** Stop tokens (u32, ≥ 1). */
  eos: Tensor;
  /** All of them, for the skeleton to free. */
  all: Tensor[];
}

/** Allocates the {@linkcode BlockBuffers} of a decoder named `name` with `rows` rows per forward. */
export function blockBuffers(
  model: CausalLM,
  name: string,
  rows: number,
  eosIds: readonly number[],
): BlockBuffers {
  const gpu = model.gpu;
  const st = new Tensor(gpu, [DECODE_STATE_SIZE], "u32", `${name} state`);
  const block = new Tensor(gpu, [rows], "u32", `${name} block`);
  const pred = new Tensor(gpu, [rows], "u32", `${name} predictions`);
  const logits = new Tensor(gpu, [rows, model.config.vocabSize], "f32", `${name} logits`);
  const eos = eosTensor(gpu, eosIds);
  return { st, block, pred, logits, eos, all: [st, block, pred, logits, eos] };
}

/**
 * Records a forward over the block at the committed position (`st[base]`, read on the GPU) and
 * the greedy prediction of every row into `pred` (sampled decoders draw `pred` themselves, with
 * `greedy` false); `extra` adds per-row positions and a mask.
 */
export function recordBlockForward(
  step: Step,
  s: DecodeSession,
  b: BlockBuffers,
  rows: number,
  extra: Pick<ForwardArgs, "relPositions" | "mask"> = {},
  greedy = true,
): void {
  s.model.forward(step, {
    tokens: b.block,
    tokenOffset: 0,
    rows,
    position: { state: b.st, slot: DECODE_SLOTS.base },
    cache: s.cache,
    logits: b.logits,
    ...extra,
  });
  if (greedy) s.model.argmax(step, b.logits, b.pred, 0);
}
