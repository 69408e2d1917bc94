/**
 * Many independent generations of one prompt, recorded back to back on the GPU with one readback
 * at the end: the prompt is prefilled once, and each generation re-draws the token after it, starts
 * the decoder's loop with its own seed and runs it to the budget. For best-of-n and
 * self-consistency voting, and for the statistical tests that compare a decoder's output
 * distribution with the model's exact one (tests/decode/sampling_exactness_test.ts).
 *
 * @module
 */

import { readTensors, Step, Tensor } from "../core/mod.ts";
import type { DecodeOptions, Decoder } from "./decoder.ts";
import { decoderPlan } from "./decode.ts";
import { type CausalLM, closeSession, prefill, recordFirstPick, trimAtStop } from "./generation.ts";

/** Options of {@linkcode sampleMany}. */
export interface SampleManyOptions extends Pick<DecodeOptions, "maxNewTokens" | "eosIds"> {
  /** One generation per seed. */
  seeds: readonly number[];
  /** Generations recorded per submit (default 256). */
  perSubmit?: number;
  /** Called after each submit's generations are recorded, with how many are done. */
  onProgress?: (recorded: number) => void;
}

/**
 * Runs `decoder` once per seed on the same prompt and returns each generation's new tokens (cut
 * at the first EOS). Each generation is what `decode` returns with that seed.
 *
 * @example Eight sampled continuations
 * ```ts ignore
 * const texts = await sampleMany(model, ids, { kind: "jacobi", sampling: { temperature: 0.7 } },
 *   { maxNewTokens: 32, seeds: [0, 1, 2, 3, 4, 5, 6, 7] });
 * ```
 */
export async function sampleMany(
  model: CausalLM,
  prompt: readonly number[],
  decoder: Decoder,
  options: SampleManyOptions,
): Promise<number[][]> {
  const budget = options.maxNewTokens;
  const eosIds = options.eosIds ?? [];
  const plan = decoderPlan(model, prompt, decoder, { maxNewTokens: budget, eosIds });
  const sampling = plan.sampling;
  const s = prefill(model, prompt, budget + plan.overshoot);
  const gpu = model.gpu;
  const P = s.promptLength;
  const V = model.config.vocabSize;
  const owned: Tensor[] = [];
  try {
    const { loop, owned: buffers } = plan.setup(s);
    owned.push(...buffers);
    // The prompt's last logits, kept: AR's iterations overwrite the session's.
    const first = new Tensor(gpu, [1, V], "f32", "prompt logits");
    owned.push(first);
    const out = new Tensor(gpu, [Math.max(1, options.seeds.length * budget)], "u32", "samples");
    owned.push(out);
    const copy = new Step(gpu, "sample many: prompt logits");
    copy.copy(s.lastLogits, 0, first, 0, V * 4);
    copy.submit();
    // Every iteration that can still commit a token when only the first is known.
    const iterations = loop.useful(1, 0, 0);
    const perSubmit = options.perSubmit ?? 256;
    for (let g0 = 0; g0 < options.seeds.length; g0 += perSubmit) {
      const step = new Step(gpu, "sample many");
      for (let g = g0; g < Math.min(options.seeds.length, g0 + perSubmit); g++) {
        const seed = options.seeds[g];
        recordFirstPick(step, s, first, { sampling, seed });
        loop.start?.(step, seed);
        for (let i = 0; i < iterations; i++) loop.iterate(step, i, seed);
        step.copy(s.tokens, P * 4, out, g * budget * 4, budget * 4);
      }
      step.submit();
      options.onProgress?.(Math.min(options.seeds.length, g0 + perSubmit));
    }
    const [all] = await readTensors(gpu, [out]);
    return options.seeds.map((_, g) =>
      trimAtStop(Array.from(all.subarray(g * budget, (g + 1) * budget)), eosIds, budget).tokens
    );
  } finally {
    for (const t of owned) t.destroy();
    closeSession(s);
  }
}
