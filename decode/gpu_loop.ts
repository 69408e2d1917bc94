/**
 * The host side of a decoding loop that lives on the GPU (Jacobi, lookahead): after prefill, the
 * decoder's kernels hold the loop state in a GPU buffer, commit tokens and write the next input;
 * the host only records iterations, reads the state back now and then, and streams new tokens.
 *
 * Cadence (decode/cadence.ts): some iterations before each read, some behind it to run during the
 * read's fixed wait (webgpu-notes.md §2). The decoders' acceptance kernels ignore iterations once
 * the loop is done, so iterations past the end (the rest of the last submit before the read that
 * sees the end, plus those behind it) waste GPU time but never change a token. The prefill's token
 * is read the same way, with the first submit behind it.
 *
 * @module
 */

import { type ReadData, readTensors, Step, type Tensor } from "../core/mod.ts";
import { type Cadence, timedRead } from "./cadence.ts";
import { type DecodeSession, readTokens, trimAtStop } from "./generation.ts";

/** What a GPU-resident decoder gives the loop. */
export interface GpuLoop {
  /** Records the kernels that set up the loop state after prefill (once, before any iteration). */
  start(step: Step): void;
  /** Records one iteration: a forward over the decoder's rows and its acceptance kernel. */
  iterate(step: Step): void;
  /** The loop state, read back each time; first of the results. */
  state: Tensor;
  /** More tensors read back with the state each time (e.g. a trajectory log); last of the results. */
  alsoRead?: Tensor[];
  /** From a read state: whether the loop finished, and the end (exclusive) of the committed tokens. */
  committed(state: ReadData): { done: boolean; end: number };
  /**
   * How many more iterations can still commit a token when `known` tokens are known to the host
   * and `pending` iterations were submitted after the state it last saw (a bound on waste only).
   */
  useful(known: number, pending: number): number;
}

/** Cadence and stop rules of {@linkcode runGpuLoop}. */
export interface GpuLoopOptions {
  /** Token budget. */
  budget: number;
  /** Stop tokens (only for the prefill's token; the kernels handle the rest). */
  eosIds: readonly number[];
  /** How many iterations go before and behind each read (decode/cadence.ts). */
  cadence: Cadence;
  /** Decoder name for the internal-error message. */
  label: string;
}

/** What the loop returns: new tokens, readbacks, the prefill's time, and the last read tensors. */
export interface GpuLoopResult {
  /** New tokens (the prefill's first). */
  tokens: number[];
  /** Readbacks after prefill. */
  readbacks: number;
  /** Seconds until the prefill's token was read back. */
  prefillSeconds: number;
  /** The last read state and `alsoRead` tensors (empty when the prefill's token ended generation). */
  last: ReadData[];
}

/**
 * Runs a GPU-resident decoding loop after prefill; yields new tokens as they are read back.
 *
 * @param s the session (prefilled)
 * @param loop the decoder's kernels and state
 * @param options cadence and stop rules
 * @param t0 when generation started (`performance.now()`), for the prefill time
 */
export async function* runGpuLoop(
  s: DecodeSession,
  loop: GpuLoop,
  options: GpuLoopOptions,
  t0: number,
): AsyncGenerator<number[], GpuLoopResult> {
  const gpu = s.model.gpu;
  const P = s.promptLength;
  let out: number[] = [];
  let pending = 0; // iterations submitted after the state the host last saw
  const cadence = options.cadence;
  const record = (count: number, start = false) => {
    // The prefill's token is known to come, so it counts as known from the start.
    const n = Math.min(count, loop.useful(Math.max(1, out.length), pending));
    if (n <= 0 && !start) return;
    const step = new Step(gpu, options.label);
    if (start) loop.start(step);
    for (let i = 0; i < n; i++) loop.iterate(step);
    step.submit();
    pending += Math.max(0, n);
    cadence.submitted(Math.max(0, n));
  };
  const firstRead = timedRead(cadence, () => readTokens(s, P, 1));
  record(cadence.first(), true);
  const first = trimAtStop(await firstRead, options.eosIds, options.budget);
  const prefillSeconds = (performance.now() - t0) / 1000;
  yield first.tokens;
  out = first.tokens;
  let readbacks = 0;
  let done = first.stopped !== null;
  let last: ReadData[] = [];
  while (!done) {
    if (pending === 0) throw new Error(`${options.label}: no iteration left to run (internal error)`);
    const read = timedRead(cadence, () => readTensors(gpu, [loop.state, s.tokens, ...(loop.alsoRead ?? [])]));
    pending = 0;
    record(cadence.behind());
    const [state, tokens, ...rest] = await read;
    last = [state, ...rest];
    readbacks++;
    const c = loop.committed(state);
    done = c.done;
    // The prefill's token is re-committed by the first iteration; it was emitted already.
    const fresh = Array.from(tokens.subarray(P + out.length, c.end));
    if (fresh.length > 0) {
      out = out.concat(fresh);
      yield fresh;
    }
    if (!done) record(cadence.before());
  }
  return { tokens: out, readbacks, prefillSeconds, last };
}
