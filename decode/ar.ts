/**
 * Autoregressive decoding: greedy with the loop state on the GPU, and sampled.
 *
 * Greedy: each forward's argmax is written into the token buffer on the GPU and the next forward
 * embeds it from there, so many forwards are recorded per submit and the host reads the tokens
 * back once per chunk (every wait costs ~10 ms in Deno). Generation overshoots EOS by at most one
 * chunk plus the forwards run during the last wait, and the overshoot is discarded.
 *
 * Sampled: the next token depends on a host-side random draw, so every token needs one readback
 * of the last row's logits (~10 ms each in Deno); it is capped at ~90 tokens/s here.
 *
 * @module
 */

import { readTensors, seededRandom, Step } from "../core/mod.ts";
import {
  type CausalLM,
  closeSession,
  type DecodeSession,
  type GenerateOptions,
  type GenerationResult,
  makeStats,
  prefill,
  readTokens,
  trimAtStop,
} from "./generation.ts";
import { adaptiveCadence, fixedCadence, timedRead } from "./cadence.ts";
import { sampleToken, type SamplingOptions } from "./sampling.ts";

/** Options of greedy AR decoding. */
export interface GreedyOptions extends GenerateOptions {
  /**
   * Forwards per readback, those behind the read included; setting it fixes the cadence (1 gives the
   * one-readback-per-token loop). Default: adaptive (decode/cadence.ts), all of them behind the read.
   */
  forwardsPerReadback?: number;
  /**
   * Forwards submitted right after each readback is issued, to run during its fixed wait: with a
   * fixed cadence, this many of the `forwardsPerReadback` (default 3; 0 leaves the GPU idle while the
   * host waits); with the adaptive one, where it starts (default 3: ~10 ms of 1-row forwards on
   * llvmpipe).
   */
  forwardsDuringReadback?: number;
}

/**
 * Greedy AR decoding with the loop on the GPU. Yields new tokens chunk by chunk (trimmed at EOS
 * and the budget); returns the full result.
 *
 * @example Greedy generation
 * ```ts ignore
 * const gen = generateGreedy(model, promptIds, { maxNewTokens: 64, eosIds: [2] });
 * for (let r = await gen.next(); !r.done; r = await gen.next()) console.log(r.value);
 * ```
 */
export async function* generateGreedy(
  model: CausalLM,
  prompt: readonly number[],
  options: GreedyOptions,
): AsyncGenerator<number[], GenerationResult> {
  const budget = options.maxNewTokens;
  const eos = options.eosIds ?? [];
  // A fixed cadence of `chunk` forwards per readback puts `behind` of them behind the read.
  const chunk = options.forwardsPerReadback === undefined
    ? undefined
    : Math.max(1, options.forwardsPerReadback);
  const behind = Math.max(0, options.forwardsDuringReadback ?? 3);
  const cadence = chunk === undefined
    ? adaptiveCadence(model, "ar", behind)
    : fixedCadence(chunk - Math.min(chunk, behind), Math.min(chunk, behind), chunk);
  const t0 = performance.now();
  const s = prefill(model, prompt, budget);
  const P = s.promptLength;
  try {
    // tokens[P .. P+submitted) are being produced by submitted work (the first by prefill).
    let submitted = 1;
    let forwards = 1; // prefill yields the first new token
    const record = (count: number) => {
      const n = Math.min(count, budget - submitted);
      if (n <= 0) return;
      recordGreedySteps(s, P + submitted - 1, n);
      submitted += n;
      forwards += n;
      cadence.submitted(n);
    };
    // Every readback waits ~10 ms after the GPU is done (webgpu-notes.md §2); the GPU spends that
    // wait on forwards submitted after the read was issued (decode/cadence.ts). The prefill's token
    // is read the same way, with the first forwards behind it.
    const firstRead = timedRead(cadence, () => readTokens(s, P, 1));
    record(cadence.first());
    const first = trimAtStop(await firstRead, eos, budget);
    const prefillSeconds = (performance.now() - t0) / 1000;
    let out = first.tokens;
    yield out;
    let readbacks = 0;
    let stopped = first.stopped;
    while (stopped === null) {
      const seen = submitted;
      const pending = timedRead(cadence, () => readTokens(s, P + out.length, seen - out.length));
      record(cadence.behind());
      const ids = await pending;
      readbacks++;
      const trimmed = trimAtStop(ids, eos, budget - out.length);
      out = out.concat(trimmed.tokens);
      stopped = trimmed.stopped;
      if (trimmed.tokens.length > 0) yield trimmed.tokens;
      if (stopped === null) record(cadence.before());
    }
    // Forwards past an EOS inside the last chunk produced nothing useful; count those that did.
    forwards = Math.min(forwards, out.length);
    const seconds = (performance.now() - t0) / 1000;
    return {
      tokens: out,
      stopReason: stopped,
      stats: makeStats("ar", P, out.length, forwards, readbacks, prefillSeconds, seconds - prefillSeconds),
    };
  } finally {
    closeSession(s);
  }
}

/**
 * Records `n` greedy AR steps: the token at position p is embedded, run at position p, and the
 * argmax of its logits lands at p+1. No readback.
 */
function recordGreedySteps(s: DecodeSession, firstPos: number, n: number): void {
  const step = new Step(s.model.gpu, "ar");
  for (let i = 0; i < n; i++) {
    const pos = firstPos + i;
    s.model.forward(step, {
      tokens: s.tokens,
      tokenOffset: pos,
      rows: 1,
      position: s.cache.at(pos),
      cache: s.cache,
      logits: s.lastLogits,
      lastOnly: true,
    });
    s.model.argmax(step, s.lastLogits, s.tokens, pos + 1);
  }
  step.submit();
  s.cache.length = firstPos + n;
}

/**
 * Sampled AR decoding (temperature, top-k, top-p; seeded). Reads the logits back every token.
 *
 * @example Sampling with a seed
 * ```ts ignore
 * const gen = generateSampled(model, promptIds, { maxNewTokens: 64, temperature: 0.8, topP: 0.9, seed: 1 });
 * ```
 */
export async function* generateSampled(
  model: CausalLM,
  prompt: readonly number[],
  options: GenerateOptions & SamplingOptions,
): AsyncGenerator<number[], GenerationResult> {
  const budget = options.maxNewTokens;
  const eos = options.eosIds ?? [];
  const t0 = performance.now();
  const s = prefill(model, prompt, budget);
  const P = s.promptLength;
  const random = seededRandom(options.seed ?? 0);
  try {
    const out: number[] = [];
    let readbacks = 0;
    let prefillSeconds = -1;
    let stopReason: "eos" | "length" = "length";
    while (out.length < budget) {
      const pos = P + out.length;
      if (out.length > 0) {
        const step = new Step(model.gpu, "ar-sampled");
        model.forward(step, {
          tokens: s.tokens,
          tokenOffset: pos - 1,
          rows: 1,
          position: s.cache.at(pos - 1),
          cache: s.cache,
          logits: s.lastLogits,
          lastOnly: true,
        });
        step.submit();
      }
      const [logits] = await readTensors(model.gpu, [s.lastLogits]);
      readbacks++;
      if (prefillSeconds < 0) prefillSeconds = (performance.now() - t0) / 1000;
      const token = sampleToken(logits as Float32Array, options, random);
      s.tokens.write(new Uint32Array([token]), pos);
      out.push(token);
      yield [token];
      if (eos.includes(token)) {
        stopReason = "eos";
        break;
      }
    }
    const seconds = (performance.now() - t0) / 1000;
    return {
      tokens: out,
      stopReason,
      stats: makeStats(
        "ar-sampled",
        P,
        out.length,
        out.length,
        readbacks,
        prefillSeconds,
        seconds - prefillSeconds,
      ),
    };
  } finally {
    closeSession(s);
  }
}
