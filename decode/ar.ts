/**
 * Autoregressive decoding: greedy with the loop state on the GPU, and sampled.
 *
 * Greedy: each forward's argmax is written into the token buffer on the GPU and the next forward
 * embeds it from there, so many forwards are recorded per submit and the host reads the tokens
 * back once per chunk (every wait costs ~10 ms in Deno). Generation overshoots EOS by at most one
 * chunk plus the forwards run during the last wait, and the overshoot is discarded.
 *
 * Sampled: the same loop with the sample kernel (kernels/sample.ts) in place of the argmax; the
 * host-sampled baseline (`generateHostSampled`) reads the logits back every token instead.
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
} from "./generation.ts";
import { chooseCadence, type ReadbackOptions } from "./cadence.ts";
import { decoderLabel } from "./decoder.ts";
import { type GpuDecoderPlan, type GpuLoop, runGpuDecoder } from "./gpu_loop.ts";
import { sampleToken, type SamplingOptions, samplingParams } from "./sampling.ts";
import { DRAW, sampleForward, type SamplingParams } from "../kernels/sample.ts";

/** Options of AR decoding (greedy unless `sampling` has a temperature above 0). */
export interface GreedyOptions extends GenerateOptions, ReadbackOptions {}

/**
 * AR decoding with the loop on the GPU (decode/gpu_loop.ts), greedy or sampled: each iteration's
 * token is the argmax, or a draw by the sample kernel (kernels/sample.ts) keyed by (seed,
 * position), written straight into the token buffer for the next forward. Yields new tokens chunk
 * by chunk (trimmed at EOS and the budget); returns the full result.
 *
 * @example Greedy generation
 * ```ts ignore
 * const gen = generateGreedy(model, promptIds, { maxNewTokens: 64, eosIds: [2] });
 * for (let r = await gen.next(); !r.done; r = await gen.next()) console.log(r.value);
 * ```
 */
export function generateGreedy(
  model: CausalLM,
  prompt: readonly number[],
  options: GreedyOptions,
): AsyncGenerator<number[], GenerationResult> {
  return runGpuDecoder(model, prompt, options, arPlan(model, options));
}

/** The GPU-loop plan of AR decoding (greedy or sampled), for `runGpuDecoder` and `sampleMany`. */
export function arPlan(model: CausalLM, options: GreedyOptions): GpuDecoderPlan<GenerationResult> {
  const budget = options.maxNewTokens;
  const sampling = samplingParams(options.sampling);
  const label = decoderLabel({ kind: "ar", sampling: options.sampling });
  // Three 1-row forwards fill a readback's ~10 ms wait on llvmpipe, where the adaptive cadence starts.
  const cadence = chooseCadence(model, label, options, 3, model.gpu.readbackMs);
  return {
    label,
    cadence,
    sampling,
    overshoot: 0,
    setup: (s) => ({ loop: arLoop(s, budget, sampling), owned: [] }),
    // Forwards past an EOS inside the last chunk produced nothing returned; count those that did.
    forwards: (_last, run) => Math.min(1 + run.submitted, run.tokens),
    finish: (common) => common,
  };
}

/**
 * AR as a GPU loop: iteration i embeds the token at position P + i (the prefill's token for
 * i = 0), runs it at that position, and writes the argmax of its logits, or a draw from them, at
 * P + i + 1. The host knows every position, so there is no loop state to read: after `seen`
 * iterations the tokens up to P + 1 + seen are committed, and the skeleton cuts them at EOS and
 * the budget.
 */
function arLoop(s: DecodeSession, budget: number, sampling: SamplingParams | null): GpuLoop {
  const P = s.promptLength;
  return {
    iterate(step, i, seed) {
      const pos = P + i;
      s.model.forward(step, {
        tokens: s.tokens,
        tokenOffset: pos,
        rows: 1,
        position: s.cache.at(pos),
        cache: s.cache,
        logits: s.lastLogits,
        lastOnly: true,
      });
      if (!sampling) s.model.argmax(step, s.lastLogits, s.tokens, pos + 1);
      else {
        sampleForward(step, s.lastLogits, s.lastStats, s.tokens, sampling, {
          purpose: DRAW.token,
          seed,
          counter: pos + 1,
        }, { outOffset: pos + 1 });
      }
      s.cache.length = pos + 1;
    },
    read: [],
    committed: (_read, seen) => ({ done: false, end: P + 1 + seen }),
    // Tokens P+1 .. P+budget-1 are still to come from iterations (the prefill's token is the first).
    useful: (_known, _pending, submitted) => budget - 1 - submitted,
  };
}

/**
 * Sampled AR decoding (temperature, top-k, top-p; seeded), GPU-resident: the same loop as
 * {@linkcode generateGreedy} with the draw in place of the argmax.
 *
 * @example Sampling with a seed
 * ```ts ignore
 * const gen = generateSampled(model, promptIds, { maxNewTokens: 64, temperature: 0.8, topP: 0.9, seed: 1 });
 * ```
 */
export function generateSampled(
  model: CausalLM,
  prompt: readonly number[],
  options: GreedyOptions & SamplingOptions,
): AsyncGenerator<number[], GenerationResult> {
  const { temperature, topK, topP } = options;
  return generateGreedy(model, prompt, { ...options, sampling: { temperature, topK, topP } });
}

/**
 * Sampled AR decoding with the draw on the host: one logits readback per token (~10 ms each in
 * Deno). Kept as the baseline the bench compares the GPU-resident loop with.
 *
 * @example The host-sampled baseline
 * ```ts ignore
 * const gen = generateHostSampled(model, promptIds, { maxNewTokens: 64, temperature: 0.8, seed: 1 });
 * ```
 */
export async function* generateHostSampled(
  model: CausalLM,
  prompt: readonly number[],
  options: GenerateOptions & SamplingOptions,
): AsyncGenerator<number[], GenerationResult> {
  const budget = options.maxNewTokens;
  const eos = options.eosIds ?? [];
  const t0 = performance.now();
  const s = prefill(model, prompt, budget, options.prefixCache);
  const P = s.promptLength;
  const random = seededRandom(options.seed ?? 0);
  let committed: number[] | undefined; // set when the generation ends normally
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
    committed = out;
    return {
      tokens: out,
      stopReason,
      stats: makeStats(
        `${decoderLabel({ kind: "ar", sampling: options })} host`,
        P,
        out.length,
        out.length,
        readbacks,
        prefillSeconds,
        seconds - prefillSeconds,
      ),
    };
  } finally {
    closeSession(s, committed);
  }
}
