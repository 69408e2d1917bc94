/**
 * What every decoder shares: options, statistics, the result, prefill, and the token budget and
 * stop rules.
 *
 * @module
 */

import { type Gpu, readTensors, Step, Tensor } from "../core/mod.ts";
import type { ForwardArgs } from "../model/llama.ts";
import type { KvCache } from "../model/kv_cache.ts";
import { DRAW, sampleForward, type SamplingParams, STATS_WORDS } from "../kernels/sample.ts";
import type { SamplingOptions } from "./sampling.ts";

/**
 * What a decoder needs from a model: a forward over T rows at a GPU-held position, and a greedy
 * pick. `Llama` implements it; tests implement it with synthetic models.
 */
export interface CausalLM {
  /** The device. */
  readonly gpu: Gpu;
  /** The vocabulary size (logit width). */
  readonly config: { readonly vocabSize: number };
  /** Largest T a forward accepts. */
  readonly maxRows: number;
  /** Context length in positions. */
  readonly maxLength: number;
  /**
   * A KV cache of the given capacity.
   * @internal
   */
  createCache(maxLength: number): KvCache;
  /**
   * Records a forward (see Llama.forward).
   * @internal
   */
  forward(step: Step, args: ForwardArgs): void;
  /**
   * Records out[outOffset + t] = argmax(logits[t]).
   * @internal
   */
  argmax(step: Step, logits: Tensor, out: Tensor, outOffset: number): void;
}

/** Options common to every decoder. */
export interface GenerateOptions {
  /** Maximum number of new tokens (generation stops at exactly this many). */
  maxNewTokens: number;
  /** Token ids that end generation; the first one is kept in the output and nothing after it. */
  eosIds?: readonly number[];
  /** A KV cache kept across generations: only the prompt past its common prefix is prefilled. */
  prefixCache?: PrefixCache;
  /** Sampling settings (absent or temperature 0: greedy). */
  sampling?: SamplingOptions;
  /** Seed of every random draw: sampled tokens, Jacobi guesses, lookahead's window (default 0). */
  seed?: number;
}

/**
 * A KV cache kept from one generation to the next, for prompts that extend earlier ones (a chat's
 * turns): the next prefill keeps the rows of the longest common prefix of its prompt and the tokens
 * the cache holds, and computes only the rest. After a generation the cache holds the prompt and
 * every new token but the last (whose K/V no forward has computed yet). A generation that fails or
 * is stopped early leaves it empty (the next one prefills everything). Not shared between models,
 * nor used by two generations at once.
 *
 * @example A chat whose second turn prefills only its new tokens
 * ```ts ignore
 * const prefix = new PrefixCache();
 * await runToEnd(decode(model, turn1, { kind: "jacobi" }, { maxNewTokens: 64, prefixCache: prefix }));
 * await runToEnd(decode(model, turn1AndReplyAndTurn2, { kind: "jacobi" }, { maxNewTokens: 64, prefixCache: prefix }));
 * console.log(prefix.reused); // the tokens of turn 1 and its reply
 * ```
 */
export class PrefixCache {
  #cache: KvCache | null = null;
  #model: CausalLM | null = null;
  #tokens: number[] = [];
  /** Prompt tokens the last prefill took from the cache instead of computing. */
  reused = 0;

  /** Tokens whose K/V rows the cache holds, in order. */
  get tokens(): readonly number[] {
    return this.#tokens;
  }

  /**
   * Hands a session a cache of at least `capacity` rows and how many leading prompt rows it holds
   * already (at most P − 1: the last prompt row is always computed, for its logits).
   * @internal
   */
  take(model: CausalLM, prompt: readonly number[], capacity: number): { cache: KvCache; start: number } {
    const cache = this.#cache;
    this.#cache = null;
    if (cache && this.#model === model && cache.maxLength >= capacity) {
      let start = 0;
      const limit = Math.min(this.#tokens.length, prompt.length - 1);
      while (start < limit && this.#tokens[start] === prompt[start]) start++;
      this.reused = start;
      return { cache, start };
    }
    cache?.destroy();
    this.#model = model;
    this.reused = 0;
    // Room for the whole context, so that later, longer prompts fit the same cache.
    return { cache: model.createCache(Math.max(capacity, model.maxLength + model.maxRows)), start: 0 };
  }

  /**
   * Takes a session's cache back with the tokens whose rows are valid.
   * @internal
   */
  keep(cache: KvCache, tokens: readonly number[]): void {
    this.#cache?.destroy();
    this.#cache = cache;
    this.#tokens = [...tokens];
  }

  /** Frees the cache (the next generation prefills everything). */
  destroy(): void {
    this.#cache?.destroy();
    this.#cache = null;
    this.#tokens = [];
  }
}

/** Statistics of one generation. */
export interface GenerationStats {
  /** Decoder name. */
  decoder: string;
  /** Prompt tokens. */
  promptTokens: number;
  /** New tokens returned (EOS included when generation stopped on it). */
  tokens: number;
  /** Forward passes, prefill counted as one (it yields the first token), converging passes included. */
  forwards: number;
  /** Accepted tokens per forward = tokens / forwards (1 for AR). */
  tokensPerForward: number;
  /** GPU readbacks after prefill. */
  readbacks: number;
  /** Forward passes (decoder iterations) per readback. */
  iterationsPerReadback: number;
  /** Seconds spent in prefill (until the first new token was known on the GPU and read). */
  prefillSeconds: number;
  /** Seconds spent decoding after prefill. */
  decodeSeconds: number;
  /** tokens / (prefill + decode seconds). */
  tokensPerSecond: number;
  /** tokens / decode seconds. */
  decodeTokensPerSecond: number;
}

/** The outcome of a generation. */
export interface GenerationResult {
  /** New token ids (the prompt excluded). */
  tokens: number[];
  /** Why it stopped. */
  stopReason: "eos" | "length";
  /** Statistics. */
  stats: GenerationStats;
}

/**
 * Cuts a list of new tokens at the first EOS (kept) and at the budget.
 *
 * @example Trimming
 * ```ts
 * import { trimAtStop } from "./generation.ts";
 * trimAtStop([5, 6, 2, 7], [2], 10); // { tokens: [5, 6, 2], stopped: "eos" }
 * ```
 */
export function trimAtStop(
  tokens: readonly number[],
  eosIds: readonly number[],
  budget: number,
): { tokens: number[]; stopped: "eos" | "length" | null } {
  const out: number[] = [];
  for (const t of tokens) {
    if (out.length >= budget) return { tokens: out, stopped: "length" };
    out.push(t);
    if (eosIds.includes(t)) return { tokens: out, stopped: "eos" };
  }
  return { tokens: out, stopped: out.length >= budget ? "length" : null };
}

/** Token buffer + cache + logits scratch for one generation. */
export interface DecodeSession {
  /** The model. */
  model: CausalLM;
  /** KV cache; holds the prompt after prefill. */
  cache: KvCache;
  /** u32 (capacity): prompt then generated tokens, at their positions. */
  tokens: Tensor;
  /** (1, V) logits of the last row. */
  lastLogits: Tensor;
  /** Statistics of the last row's filtered distribution (f32, 4), written by the sample kernel. */
  lastStats: Tensor;
  /** Prompt length P. */
  promptLength: number;
  /** The prompt. */
  prompt: readonly number[];
  /** Where the cache came from and goes back to, if kept across generations. */
  prefixCache?: PrefixCache;
}

/** How the token after the prompt is chosen: greedy (no sampling), or drawn with the seed. */
export interface FirstPick {
  /** The kernels' sampling settings, or null for the argmax. */
  sampling: SamplingParams | null;
  /** Seed of the draw. */
  seed: number;
}

/**
 * Records the choice of the token at `tokens[P]` from the last prompt row's logits: the argmax,
 * or a draw keyed by (seed, position P), the same key sampled AR uses for that position.
 */
export function recordFirstPick(step: Step, s: DecodeSession, logits: Tensor, pick: FirstPick): void {
  const P = s.promptLength;
  if (!pick.sampling) s.model.argmax(step, logits, s.tokens, P);
  else {
    sampleForward(step, logits, s.lastStats, s.tokens, pick.sampling, {
      purpose: DRAW.token,
      seed: pick.seed,
      counter: P,
    }, { outOffset: P });
  }
}

/**
 * Writes the prompt into a fresh token buffer and cache, runs it through the model in chunks of
 * at most `maxRows`, and puts the next token at `tokens[P]` (greedy, or drawn as `pick` says; on
 * the GPU, not read back).
 */
export function prefill(
  model: CausalLM,
  prompt: readonly number[],
  extra: number,
  prefixCache?: PrefixCache,
  pick: FirstPick = { sampling: null, seed: 0 },
): DecodeSession {
  const P = prompt.length;
  if (P === 0) throw new RangeError("The prompt is empty; give at least one token (e.g. BOS)");
  const capacity = P + extra + 1;
  if (capacity > model.maxLength) {
    throw new RangeError(
      `The prompt (${P} tokens) plus ${extra} new tokens exceeds the context of ${model.maxLength} positions; ` +
        `shorten the prompt or lower --max-new-tokens`,
    );
  }
  const gpu = model.gpu;
  // Rows past the prompt's are written by the decoders' forwards, up to maxRows beyond the budget.
  const { cache, start: first } = prefixCache
    ? prefixCache.take(model, prompt, capacity + model.maxRows)
    : { cache: model.createCache(capacity + model.maxRows), start: 0 };
  const tokens = new Tensor(gpu, [capacity + model.maxRows], "u32", "tokens");
  tokens.write(Uint32Array.from(prompt));
  const lastLogits = new Tensor(gpu, [1, model.config.vocabSize], "f32", "last_logits");
  const lastStats = new Tensor(gpu, [STATS_WORDS], "f32", "last row statistics");
  const session = { model, cache, tokens, lastLogits, lastStats, promptLength: P, prompt, prefixCache };
  const step = new Step(gpu, "prefill");
  for (let start = first; start < P; start += model.maxRows) {
    const rows = Math.min(model.maxRows, P - start);
    model.forward(step, {
      tokens,
      tokenOffset: start,
      rows,
      position: cache.at(start),
      cache,
      logits: lastLogits,
      lastOnly: true,
    });
  }
  recordFirstPick(step, session, lastLogits, pick);
  step.submit();
  cache.length = P;
  return session;
}

/** The stop tokens as a u32 tensor for the acceptance kernels (one never-matching id when none). */
export function eosTensor(gpu: Gpu, eosIds: readonly number[]): Tensor {
  return Tensor.from(gpu, Uint32Array.from(eosIds.length ? eosIds : [0xffffffff]), [
    Math.max(1, eosIds.length),
  ], "eos");
}

/**
 * Frees a session's GPU buffers. With `committed` (the new tokens of a generation that ended
 * normally) a kept cache goes back to its {@linkcode PrefixCache}, holding the prompt and every new
 * token but the last.
 */
export function closeSession(s: DecodeSession, committed?: readonly number[]): void {
  if (s.prefixCache && committed) {
    s.prefixCache.keep(s.cache, [...s.prompt, ...committed.slice(0, -1)]);
  } else s.cache.destroy();
  s.tokens.destroy();
  s.lastLogits.destroy();
  s.lastStats.destroy();
}

/** Reads `count` tokens of the session's buffer from index `from`. */
export async function readTokens(s: DecodeSession, from: number, count: number): Promise<number[]> {
  const [all] = await readTensors(s.model.gpu, [s.tokens]);
  return Array.from(all.subarray(from, from + count));
}

/** Builds the stats object from raw counts. */
export function makeStats(
  decoder: string,
  promptTokens: number,
  tokens: number,
  forwards: number,
  readbacks: number,
  prefillSeconds: number,
  decodeSeconds: number,
): GenerationStats {
  const total = prefillSeconds + decodeSeconds;
  return {
    decoder,
    promptTokens,
    tokens,
    forwards,
    tokensPerForward: forwards > 0 ? tokens / forwards : 0,
    readbacks,
    iterationsPerReadback: readbacks > 0 ? forwards / readbacks : 0,
    prefillSeconds,
    decodeSeconds,
    tokensPerSecond: total > 0 ? tokens / total : 0,
    decodeTokensPerSecond: decodeSeconds > 0 ? tokens / decodeSeconds : 0,
  };
}

/**
 * Runs a decoder to its end when the caller does not stream: returns its result and the tokens it
 * yielded along the way (which equal `result.tokens` for every decoder here).
 *
 * @example Waiting for a whole generation
 * ```ts ignore
 * const { result } = await runToEnd(generateJacobi(model, ids, { maxNewTokens: 64 }));
 * console.log(result.stats.tokensPerForward);
 * ```
 */
export async function runToEnd<T>(
  gen: AsyncGenerator<number[], T>,
): Promise<{ result: T; streamed: number[] }> {
  const streamed: number[] = [];
  let r = await gen.next();
  while (!r.done) {
    streamed.push(...r.value);
    r = await gen.next();
  }
  return { result: r.value, streamed };
}
