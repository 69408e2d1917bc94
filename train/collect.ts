/**
 * Jacobi trajectory collection (docs/method.md §3, `data/generate_trajectory.py`): per prompt, one
 * greedy Jacobi generation, then one record per n-token block.
 *
 * Per prompt:
 * 1. Build the prompt text (optionally with a built-in format) and tokenize it (BOS included).
 * 2. Run ONE {@linkcode generateJacobi}: it logs the input state of every forward of every block,
 *    so the whole trajectory comes from a single generation (the reference re-runs its no-cache
 *    Jacobi loop block by block instead).
 * 3. For block k: context = prompt ⊕ fixed points of blocks 0..k−1; states = the block's states;
 *    teacher = context ⊕ fixed point; labels = tokenize(prompt text + label) when asked.
 * 4. complete_teacher_output_ids = prompt ⊕ the full response: the teacher of the last block.
 * 5. Drop records whose teacher repeats a token 10 times in a row before EOS (the reference's
 *    post-processing, {@linkcode hasRepetition}); optionally augment the states
 *    ({@linkcode augmentStates}), seeded per prompt.
 *
 * Differences from the reference, on purpose:
 * - Block initialisation. Our Jacobi decoder uses the KV cache, as CLLM inference does (docs/method.md §2.1): each
 *   block starts with the known next token (the previous block's bonus token) followed by n−1
 *   guesses drawn from the context. The reference's data generator (docs/method.md §2.3) has no cache, and its
 *   block position 0 is a random guess too. So our first state is always right at position 0,
 *   trajectories can be shorter, and a block may converge on its first forward (a single state:
 *   the trainer must cope with T = 1, docs/method.md §7.8). These are the states a CLLM meets at inference.
 * - The final block. The reference keeps the last block whatever it holds, post-EOS tokens
 *   included (docs/method.md §7.6), and stops only after a whole block. Our decoder stops exactly at EOS or at
 *   the budget, so the final block may end early. Decision: a block is written only when its last
 *   state is a full n-token fixed point, i.e. all n tokens were committed from it. A final block
 *   cut short by EOS or by the budget is dropped (counted in `droppedPartial`); one that ends
 *   exactly at the budget, or whose EOS is its last token, is kept. The dropped tail still appears
 *   in `complete_teacher_output_ids`. So a prompt yields ⌊G/n⌋ blocks for G generated tokens
 *   ({@linkcode expectedItrs}), before the repetition filter.
 * - Budget: generation stops at exactly `maxNewTokens` tokens (the reference checks `itr·n < M`).
 * - The repetition filter runs per record as the data is collected, not in a second pass; as a
 *   teacher is a prefix of every later teacher, the filtered records are a suffix of the blocks.
 *
 * @module
 */

import { seededRandom } from "../core/random.ts";
import { generateJacobi, type JacobiResult } from "../decode/jacobi.ts";
import { runToEnd } from "../decode/generation.ts";
import { formatPrompt } from "../model/chat_template.ts";
import type { Pretrained } from "../model/pretrained.ts";
import type { TextTokenizer } from "../model/tokenizer.ts";
import {
  augmentStates,
  hasRepetition,
  type TrajectoryRecord,
  trajectoryRecord,
  type TrajectorySample,
} from "./trajectory_file.ts";

/**
 * One prompt to collect.
 *
 * @example A GSM8K question with its gold answer
 * ```ts
 * import type { CollectPrompt } from "./collect.ts";
 * const p: CollectPrompt = { id: 7, text: "What is 2 + 3?", label: "2 + 3 = 5.\n#### 5" };
 * ```
 */
export interface CollectPrompt {
  /** Global prompt index: the record's `data_id` is `data_<id>`. */
  id: number;
  /** Prompt text (the question when `format` is set). */
  text: string;
  /** Ground-truth answer, for `labels`. */
  label?: string;
}

/**
 * Options of {@linkcode collectTrajectories}.
 *
 * @example GSM8K settings of the reference (n = 16, M = 256, augmentation and labels)
 * ```ts ignore
 * const opts: CollectOptions = {
 *   model: pretrained, prompts, blockSize: 16, maxNewTokens: 256,
 *   augment: true, labels: true, seed: 0, format: "gsm8k",
 * };
 * ```
 */
export interface CollectOptions {
  /** The target model, its tokenizer and EOS ids. */
  model: Pretrained;
  /** Prompts, in the order to collect them. */
  prompts: readonly CollectPrompt[];
  /** Block size n (1..model.maxRows). */
  blockSize: number;
  /** Generation budget M per prompt. */
  maxNewTokens: number;
  /** Apply {@linkcode augmentStates} (default false). */
  augment?: boolean;
  /** Store `labels_ids` = tokenize(prompt text + label); every prompt then needs a label (default false). */
  labels?: boolean;
  /** Base seed of the guesses and of augmentation; each prompt derives its own from it and its id. */
  seed?: number;
  /** Built-in prompt format (model/chat_template.ts PROMPT_FORMATS), applied as `{ question: text }`. */
  format?: string;
  /** Run length of the repetition filter (default 10, as the reference). */
  repetitionRun?: number;
  /** Told about a prompt skipped because it does not fit the model's context. Default: console.warn. */
  onSkip?: (message: string) => void;
}

/**
 * What one prompt produced.
 *
 * @example Counting filtered records
 * ```ts ignore
 * await collectTrajectories(opts, (records, info) => { filtered += info.filtered; });
 * ```
 */
export interface CollectedPrompt {
  /** The prompt. */
  prompt: CollectPrompt;
  /** Prompt tokens. */
  promptIds: number[];
  /** Generated tokens (the full response, EOS included when it stopped there). */
  tokens: number[];
  /** Blocks the generation started. */
  blocks: number;
  /** Records dropped by the repetition filter. */
  filtered: number;
  /** 1 when the final block was cut short by EOS or the budget and dropped, else 0. */
  droppedPartial: number;
  /** Forward passes of the generation (prefill included). */
  forwards: number;
  /** True when the prompt was skipped (too long for the context); no records then. */
  skipped: boolean;
}

/**
 * Totals of a collection.
 *
 * @example
 * ```ts ignore
 * const s = await collectTrajectories(opts, write);
 * console.log(`${s.records} records, ${s.tokensPerForward.toFixed(2)} tokens/forward`);
 * ```
 */
export interface CollectSummary {
  /** Prompts generated (skipped ones excluded). */
  prompts: number;
  /** Prompts skipped as too long. */
  skippedPrompts: number;
  /** Records passed to the callback. */
  records: number;
  /** Records dropped by the repetition filter. */
  filtered: number;
  /** Final blocks dropped as not a full fixed point. */
  droppedPartial: number;
  /** Generated tokens. */
  tokens: number;
  /** Forward passes. */
  forwards: number;
  /** tokens / forwards (accepted tokens per forward, prefill counted). */
  tokensPerForward: number;
}

/**
 * The seed of prompt `id` under base seed `seed`: independent of which other prompts run (sharding,
 * resuming), so a prompt's records are the same whichever run writes them.
 *
 * @example
 * ```ts
 * import { promptSeed } from "./collect.ts";
 * promptSeed(0, 3) === promptSeed(0, 3); // true
 * ```
 */
export function promptSeed(seed: number, id: number): number {
  return (Math.imul((seed >>> 0) ^ 0x5bd1e995, 0x9e3779b1) + Math.imul(id + 1, 0x85ebca6b)) >>> 0;
}

/**
 * The block indices a prompt yields, before augmentation, given its complete sequence: blocks
 * 0..⌊G/n⌋−1 (G = generated tokens; a final partial block is dropped), without those whose teacher
 * the repetition filter rejects. A resuming writer uses it to tell whether a prompt's records were
 * all written. (A generation that ends on its prefill token has no blocks at all, hence no
 * records: callers only ask about prompts that have records.)
 *
 * @param complete `complete_teacher_output_ids`
 * @param promptLength P
 * @param n block size
 * @param eosIds EOS ids of the repetition filter
 * @param run run length of the repetition filter (default 10)
 * @returns the itr values that must be present, ascending
 *
 * @example 19 generated tokens with n = 8: blocks 0 and 1
 * ```ts
 * import { expectedItrs } from "./collect.ts";
 * expectedItrs(Array.from({ length: 22 }, (_, i) => i), 3, 8, [2]); // [0, 1]
 * ```
 */
export function expectedItrs(
  complete: readonly number[],
  promptLength: number,
  n: number,
  eosIds: readonly number[],
  run = 10,
): number[] {
  const blocks = Math.floor((complete.length - promptLength) / n);
  // Teachers are prefixes of `complete`: block k's is rejected iff it reaches the index where the
  // first run of `run` equal tokens before EOS completes (hasRepetition on that prefix).
  let runEnd = Infinity;
  let count = 0;
  for (let i = 0; i < complete.length; i++) {
    if (eosIds.includes(complete[i])) break;
    count = i > 0 && complete[i] === complete[i - 1] ? count + 1 : 1;
    if (count >= run) {
      runEnd = i;
      break;
    }
  }
  const out: number[] = [];
  for (let k = 0; k < blocks; k++) if (promptLength + (k + 1) * n <= runEnd) out.push(k);
  return out;
}

/**
 * The prompt's text (with the built-in format, if any) and its tokens (BOS added as the
 * tokenizer does by default, as the reference's `tokenizer(prompt)`).
 *
 * @param tokenizer the model's tokenizer
 * @param text the prompt (the question when `format` is set)
 * @param format a built-in prompt format name
 * @returns the text and its ids
 * @throws {RangeError} for an unknown format; {TypeError} when the format needs other fields
 *
 * @example
 * ```ts ignore
 * const { ids } = promptTokens(pretrained.tokenizer, "What is 2 + 3?", "gsm8k");
 * ```
 */
export function promptTokens(
  tokenizer: Pick<TextTokenizer, "encode">,
  text: string,
  format?: string,
): { text: string; ids: number[] } {
  const full = format === undefined ? text : formatPrompt(format, { question: text });
  return { text: full, ids: tokenizer.encode(full) };
}

function _equal(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/**
 * Turns one Jacobi generation into records (steps 3–5 of the module doc). Pure: no GPU.
 *
 * @param prompt the prompt
 * @param promptIds its tokens
 * @param result the Jacobi result (tokens and trajectory)
 * @param options block size, EOS ids, filter, augmentation, labels
 * @returns the records and the counts
 * @throws {Error} when the trajectory contradicts the tokens (a decoder bug)
 *
 * @example
 * ```ts ignore
 * const { records } = blockRecords(prompt, ids, result, { blockSize: 8, eosIds: [2] });
 * ```
 */
export function blockRecords(
  prompt: CollectPrompt,
  promptIds: readonly number[],
  result: Pick<JacobiResult, "tokens" | "trajectory">,
  options: {
    blockSize: number;
    eosIds: readonly number[];
    repetitionRun?: number;
    augmentRng?: () => number;
    labels?: number[];
  },
): { records: TrajectoryRecord[]; filtered: number; droppedPartial: number } {
  const n = options.blockSize;
  const tokens = result.tokens;
  const complete = [...promptIds, ...tokens];
  const records: TrajectoryRecord[] = [];
  let filtered = 0;
  let droppedPartial = 0;
  const blocks = result.trajectory;
  for (let k = 0; k < blocks.length; k++) {
    const b = blocks[k];
    if (b.block !== k || b.states.length === 0) {
      throw new Error(
        `Prompt ${prompt.id}: trajectory block ${k} is logged as block ${b.block}; a decoder bug`,
      );
    }
    const fixed = b.states[b.states.length - 1];
    const committed = tokens.slice(k * n, (k + 1) * n);
    // A full fixed point: the block's last state was committed whole (see the module doc).
    if (!(committed.length === n && _equal(committed, fixed))) {
      if (k !== blocks.length - 1) {
        throw new Error(
          `Prompt ${prompt.id}: block ${k}'s last state ${
            JSON.stringify(fixed)
          } is not its committed tokens ` +
            `${JSON.stringify(committed)}; a decoder bug`,
        );
      }
      droppedPartial++;
      continue;
    }
    const context = complete.slice(0, promptIds.length + k * n);
    const teacher = [...context, ...fixed];
    if (hasRepetition(teacher, options.eosIds, options.repetitionRun ?? 10)) {
      filtered++;
      continue;
    }
    const sample: TrajectorySample = {
      dataId: `data_${prompt.id}`,
      itr: k,
      promptLength: promptIds.length,
      context,
      states: options.augmentRng ? augmentStates(b.states, options.augmentRng) : b.states.map((s) => [...s]),
      fixedPoint: fixed,
      complete,
    };
    if (options.labels) sample.labels = options.labels;
    records.push(trajectoryRecord(sample));
  }
  // The resume check relies on this: the kept blocks are exactly what expectedItrs predicts.
  if (blocks.length > 0) {
    const expected = expectedItrs(complete, promptIds.length, n, options.eosIds, options.repetitionRun ?? 10);
    const got = records.map((r) => Number(r.jacobian_itr_id.slice(4)));
    if (!_equal(expected, got)) {
      throw new Error(
        `Prompt ${prompt.id}: kept blocks ${JSON.stringify(got)} but expected ${
          JSON.stringify(expected)
        }; a bug`,
      );
    }
  }
  return { records, filtered, droppedPartial };
}

/**
 * Collects Jacobi trajectories: per prompt one greedy Jacobi generation, one record per converged
 * block (see the module doc for the exact rules and the differences from the reference).
 *
 * @param options model, prompts and settings
 * @param onPrompt called once per prompt, in order, with ALL of its records (possibly none), so a
 *   writer can append a prompt with one write; awaited before the next prompt starts
 * @returns totals
 * @throws {RangeError} for a bad block size or budget, or an unknown format; {TypeError} when
 *   `labels` is set and a prompt has no label
 *
 * @example Writing JSON Lines
 * ```ts ignore
 * import { collectTrajectories } from "./collect.ts";
 * import { formatTrajectoryRecord } from "./trajectory_file.ts";
 * const lines: string[] = [];
 * const summary = await collectTrajectories(
 *   { model: pretrained, prompts: [{ id: 0, text: "Once upon a time" }], blockSize: 8, maxNewTokens: 64 },
 *   (records) => { for (const r of records) lines.push(formatTrajectoryRecord(r)); },
 * );
 * ```
 */
export async function collectTrajectories(
  options: CollectOptions,
  onPrompt: (records: TrajectoryRecord[], info: CollectedPrompt) => void | Promise<void>,
): Promise<CollectSummary> {
  const { model: pretrained, blockSize: n, maxNewTokens } = options;
  const { model, tokenizer, eosIds } = pretrained;
  if (!Number.isInteger(n) || n < 1 || n > model.maxRows) {
    throw new RangeError(`The block size must be an integer in 1..${model.maxRows}, not ${n}`);
  }
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) {
    throw new RangeError(`The generation budget must be a positive integer, not ${maxNewTokens}`);
  }
  if (options.format !== undefined) formatPrompt(options.format, { question: "" }); // validates the name
  const onSkip = options.onSkip ?? ((m: string) => console.warn(m));
  const seed = options.seed ?? 0;
  const summary: CollectSummary = {
    prompts: 0,
    skippedPrompts: 0,
    records: 0,
    filtered: 0,
    droppedPartial: 0,
    tokens: 0,
    forwards: 0,
    tokensPerForward: 0,
  };
  for (const prompt of options.prompts) {
    if (options.labels && prompt.label === undefined) {
      throw new TypeError(`Prompt ${prompt.id} has no label; labels need an answer for every prompt`);
    }
    const { text, ids: promptIds } = promptTokens(tokenizer, prompt.text, options.format);
    const info: CollectedPrompt = {
      prompt,
      promptIds,
      tokens: [],
      blocks: 0,
      filtered: 0,
      droppedPartial: 0,
      forwards: 0,
      skipped: false,
    };
    // The decoder's capacity: prompt, budget, one block of overshoot and the bonus token.
    const needed = promptIds.length + maxNewTokens + n + 1;
    if (promptIds.length === 0 || needed > model.maxLength) {
      onSkip(
        `Skipped prompt ${prompt.id}: ${promptIds.length} prompt tokens + ${maxNewTokens} new + block ${n} ` +
          `need ${needed} positions, but the model's context is ${model.maxLength}`,
      );
      summary.skippedPrompts++;
      info.skipped = true;
      await onPrompt([], info);
      continue;
    }
    const s = promptSeed(seed, prompt.id);
    const { result } = await runToEnd(
      generateJacobi(model, promptIds, { maxNewTokens, eosIds, blockSize: n, seed: s }),
    );
    // EOS ends the labels as it ends a teacher output, so gold AR targets keep teaching the stop
    // (the reference appends it for chat data but not for GSM8K).
    const labels = options.labels
      ? [...tokenizer.encode(text + prompt.label), ...eosIds.slice(0, 1)]
      : undefined;
    const { records, filtered, droppedPartial } = blockRecords(prompt, promptIds, result, {
      blockSize: n,
      eosIds,
      repetitionRun: options.repetitionRun,
      augmentRng: options.augment ? seededRandom(s) : undefined,
      labels,
    });
    info.tokens = result.tokens;
    info.blocks = result.trajectory.length;
    info.filtered = filtered;
    info.droppedPartial = droppedPartial;
    info.forwards = result.stats.forwards;
    summary.prompts++;
    summary.records += records.length;
    summary.filtered += filtered;
    summary.droppedPartial += droppedPartial;
    summary.tokens += result.tokens.length;
    summary.forwards += result.stats.forwards;
    await onPrompt(records, info);
  }
  summary.tokensPerForward = summary.forwards > 0 ? summary.tokens / summary.forwards : 0;
  return summary;
}
