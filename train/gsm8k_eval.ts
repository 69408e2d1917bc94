/**
 * GSM8K accuracy (docs/method.md §5.2): greedy solve rate on `question`/`answer` JSONL, with AR or
 * Jacobi decoding, and the decoder's speed on the same run.
 *
 * Scoring follows the reference's `eval/gsm8k/acc.py` where it matters for numeric answers: the
 * generation is cut at the first "Question" (a model that rambles on into a new problem), the
 * answer is the number after the last `####` ({@linkcode answerOf}: `$` and thousands commas
 * removed), and it is correct when it equals the gold number (the number after the last `####` of
 * the dataset's answer) as a number: "1,000", "1000" and "1000.0" are all 1000. The reference's
 * sympy equivalence of free-form expressions is not reproduced; GSM8K golds are plain numbers.
 *
 * @module
 */

import { decode } from "../decode/decode.ts";
import { type Decoder, decoderLabel } from "../decode/decoder.ts";
import { type GenerationResult, runToEnd } from "../decode/generation.ts";
import { formatPrompt } from "../model/chat_template.ts";
import { FormatError } from "../model/format_error.ts";
import type { Pretrained } from "../model/pretrained.ts";
import type { TextTokenizer } from "../model/tokenizer.ts";

// ===================================================================================================
// Data
// ===================================================================================================

/**
 * One GSM8K item (other fields of the file are ignored).
 *
 * @example
 * ```ts
 * import type { Gsm8kItem } from "./gsm8k_eval.ts";
 * const item: Gsm8kItem = { question: "What is 2 + 3?", answer: "2 + 3 = <<2+3=5>>5\n#### 5" };
 * ```
 */
export interface Gsm8kItem {
  /** The word problem. */
  question: string;
  /** Reference solution ending in `#### <number>`. */
  answer: string;
}

/**
 * Parses GSM8K JSON Lines: one object with string `question` and `answer` fields per non-blank line.
 *
 * @param text the file contents
 * @param file the file name, for errors
 * @returns the items, in file order
 * @throws {FormatError} naming the line of malformed JSON or a missing field, or when there is no item
 *
 * @example
 * ```ts
 * import { parseGsm8k } from "./gsm8k_eval.ts";
 * const items = parseGsm8k('{"question": "1+1?", "answer": "#### 2"}\n', "t.jsonl");
 * console.log(items.length); // 1
 * ```
 */
export function parseGsm8k(text: string, file: string): Gsm8kItem[] {
  const items: Gsm8kItem[] = [];
  text.split("\n").forEach((line, i) => {
    if (line.trim() === "") return;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      throw new FormatError(
        file,
        `line ${i + 1} is not valid JSON (${(e as Error).message})`,
        "fix or remove it",
      );
    }
    const o = obj as Record<string, unknown>;
    if (
      typeof o !== "object" || o === null || typeof o.question !== "string" || typeof o.answer !== "string"
    ) {
      throw new FormatError(
        file,
        `line ${i + 1} lacks a string "question" or "answer" field`,
        'use GSM8K\'s layout: {"question": "...", "answer": "... #### 42"}',
      );
    }
    items.push({ question: o.question, answer: o.answer });
  });
  if (items.length === 0) throw new FormatError(file, "the file has no items", "give a non-empty JSONL file");
  return items;
}

/**
 * Reads a GSM8K JSONL file (see {@linkcode parseGsm8k}).
 *
 * @param path the file
 * @returns the items
 *
 * @example
 * ```ts ignore
 * const items = await readGsm8k("/work/shared/data/gsm8k/test.jsonl"); // 1319 items
 * ```
 */
export async function readGsm8k(path: string): Promise<Gsm8kItem[]> {
  return parseGsm8k(await Deno.readTextFile(path), path);
}

// ===================================================================================================
// Scoring
// ===================================================================================================

/**
 * The model's answer in a generation: the text before the first "Question" (the prompt itself is
 * not part of the generation), then {@linkcode answerOf}.
 *
 * @param generation the generated text (prompt excluded)
 * @returns the number, or null when the model gave none
 *
 * @example
 * ```ts
 * import { predictedAnswer } from "./gsm8k_eval.ts";
 * predictedAnswer("2 + 3 = 5\n#### 5\nQuestion:\nWhat is 1 + 1?\n#### 2"); // 5
 * ```
 */
export function predictedAnswer(generation: string): number | null {
  const cut = generation.indexOf("Question");
  return answerOf(cut >= 0 ? generation.slice(0, cut) : generation);
}

/**
 * Whether a predicted number equals the gold number (relative tolerance 1e-9, for "0.5" vs ".50").
 * A missing prediction or gold is never correct.
 *
 * @param predicted the model's number
 * @param gold the reference number
 * @returns whether they are equal
 *
 * @example
 * ```ts
 * import { answersEqual } from "./gsm8k_eval.ts";
 * answersEqual(1000, 1000); // true
 * answersEqual(null, 3); // false
 * ```
 */
export function answersEqual(predicted: number | null, gold: number | null): boolean {
  if (predicted === null || gold === null) return false;
  return Math.abs(predicted - gold) <= 1e-9 * Math.max(1, Math.abs(gold));
}

/**
 * Scores one generation against a reference answer.
 *
 * @param generation the generated text
 * @param referenceAnswer the dataset's answer (ending in `#### n`)
 * @returns gold and predicted numbers and whether they agree
 *
 * @example
 * ```ts
 * import { scoreGeneration } from "./gsm8k_eval.ts";
 * scoreGeneration("So 3 * 4 = 12\n#### 12", "#### 12"); // { gold: 12, predicted: 12, correct: true }
 * ```
 */
export function scoreGeneration(
  generation: string,
  referenceAnswer: string,
): { gold: number | null; predicted: number | null; correct: boolean } {
  const gold = answerOf(referenceAnswer);
  const predicted = predictedAnswer(generation);
  return { gold, predicted, correct: answersEqual(predicted, gold) };
}

// ===================================================================================================
// Evaluation
// ===================================================================================================

/**
 * Options of {@linkcode evaluateGsm8k}.
 *
 * @example
 * ```ts
 * import type { EvalOptions } from "./gsm8k_eval.ts";
 * const o: EvalOptions = { decoder: { kind: "jacobi", blockSize: 16 }, maxNewTokens: 256 };
 * ```
 */
export interface EvalOptions {
  /** The decoder (greedy: every decoder gives the same answers, at different speeds). */
  decoder: Decoder;
  /**
   * Positions kept free at the end of the context (default 16, at least a Jacobi block), so every
   * decoder gets the same budget on a model with a short context.
   */
  contextReserve?: number;
  /** New-token budget per item (clipped to what the context leaves after the prompt). */
  maxNewTokens: number;
  /** Generate a few tokens first, outside the timings, to compile the GPU pipelines (default true). */
  warmup?: boolean;
  /** Called after each item (progress, incremental logs). */
  onItem?: (result: EvalItemResult, done: number) => void | Promise<void>;
}

/**
 * One item's outcome; a line of the JSONL log.
 *
 * @example
 * ```ts
 * import type { EvalItemResult } from "./gsm8k_eval.ts";
 * const r: EvalItemResult = {
 *   id: 0, question: "1+1?", gold: 2, predicted: 2, correct: true,
 *   tokens: 4, forwards: 3, tokensPerForward: 1.33, seconds: 0.1, stopReason: "eos", output: "#### 2",
 * };
 * ```
 */
export interface EvalItemResult {
  /** 0-based index in the data file. */
  id: number;
  /** The question. */
  question: string;
  /** Reference number (null when the reference has no `####` number). */
  gold: number | null;
  /** The model's number (null when it gave none). */
  predicted: number | null;
  /** predicted == gold. */
  correct: boolean;
  /** New tokens (EOS included when generation stopped on it). */
  tokens: number;
  /** Forward passes, prefill included. */
  forwards: number;
  /** tokens / forwards. */
  tokensPerForward: number;
  /** Wall time of the generation (prefill included). */
  seconds: number;
  /** Why generation stopped; "context" when the prompt left no room to generate (the item is wrong). */
  stopReason: "eos" | "length" | "context";
  /** The generated text (special tokens dropped). */
  output: string;
}

/**
 * Totals of an evaluation.
 *
 * @example
 * ```ts ignore
 * console.log(`${summary.correct}/${summary.items} = ${(100 * summary.accuracy).toFixed(1)}%`);
 * ```
 */
export interface EvalSummary {
  /** The decoder's label (`decoderLabel`). */
  decoder: string;
  /** Items evaluated. */
  items: number;
  /** Items answered correctly. */
  correct: number;
  /** correct / items. */
  accuracy: number;
  /** Items whose reference has no `####` number (counted wrong). */
  missingGold: number;
  /** Items whose generation has no number after `####`. */
  missingPrediction: number;
  /** New tokens over all items. */
  tokens: number;
  /** Forward passes over all items. */
  forwards: number;
  /** Generation seconds over all items. */
  seconds: number;
  /** tokens / forwards over all items. */
  tokensPerForward: number;
  /** Mean of the items' tokens per forward. */
  meanItemTokensPerForward: number;
  /** tokens / seconds. */
  tokensPerSecond: number;
}

/**
 * Totals of item results.
 *
 * @param results the items' outcomes
 * @param decoder the decoder's label
 * @returns the summary
 *
 * @example
 * ```ts ignore
 * const summary = summarizeEval(results, "ar");
 * ```
 */
export function summarizeEval(results: readonly EvalItemResult[], decoder: string): EvalSummary {
  let correct = 0, missingGold = 0, missingPrediction = 0, tokens = 0, forwards = 0, seconds = 0, tpf = 0;
  for (const r of results) {
    if (r.correct) correct++;
    if (r.gold === null) missingGold++;
    if (r.predicted === null) missingPrediction++;
    tokens += r.tokens;
    forwards += r.forwards;
    seconds += r.seconds;
    tpf += r.tokensPerForward;
  }
  const n = results.length;
  return {
    decoder,
    items: n,
    correct,
    accuracy: n ? correct / n : 0,
    missingGold,
    missingPrediction,
    tokens,
    forwards,
    seconds,
    tokensPerForward: forwards ? tokens / forwards : 0,
    meanItemTokensPerForward: n ? tpf / n : 0,
    tokensPerSecond: seconds > 0 ? tokens / seconds : 0,
  };
}

/**
 * Runs greedy decoding on every item's GSM8K prompt (`formatPrompt("gsm8k")`, BOS as the tokenizer
 * says) and scores the answers.
 *
 * @param p the model, its tokenizer and EOS ids
 * @param items the data
 * @param options decoder, block size, budget, callbacks
 * @returns per-item results and the summary
 * @throws {RangeError} for a block size the model cannot run
 *
 * @example
 * ```ts ignore
 * const { summary } = await evaluateGsm8k(pretrained, items, { decoder: { kind: "jacobi" }, maxNewTokens: 256 });
 * ```
 */
export async function evaluateGsm8k(
  p: Pick<Pretrained, "model" | "tokenizer" | "eosIds">,
  items: readonly Gsm8kItem[],
  options: EvalOptions,
): Promise<{ results: EvalItemResult[]; summary: EvalSummary }> {
  const d = options.decoder;
  const block = d.kind === "jacobi" ? d.blockSize ?? 16 : 1;
  if (!Number.isInteger(block) || block < 1 || block > p.model.maxRows) {
    throw new RangeError(`The Jacobi block size must be 1..${p.model.maxRows}, not ${block}`);
  }
  const n = Math.max(options.contextReserve ?? 16, block);
  // Sampled decoding draws each item with its own seed (the decoder's seed + the item's index).
  const itemDecoder = (i: number): Decoder =>
    d.sampling ? { ...d, sampling: { ...d.sampling, seed: (d.sampling.seed ?? 0) + i } } : d;
  const run = async (prompt: number[], budget: number, i = 0): Promise<GenerationResult> =>
    (await runToEnd(decode(p.model, prompt, itemDecoder(i), { maxNewTokens: budget, eosIds: p.eosIds })))
      .result;
  // Room for the prompt, the budget, the reserve and one token of slack (decode/generation.ts).
  const budgetFor = (P: number) => Math.min(options.maxNewTokens, p.model.maxLength - P - n - 1);

  const prompts = items.map((it) => p.tokenizer.encode(formatPrompt("gsm8k", { question: it.question })));
  if (options.warmup ?? true) {
    const i = prompts.findIndex((ids) => budgetFor(ids.length) >= 1);
    if (i >= 0) await run(prompts[i], Math.min(4, budgetFor(prompts[i].length)));
  }
  const results: EvalItemResult[] = [];
  for (let i = 0; i < items.length; i++) {
    const budget = budgetFor(prompts[i].length);
    let result: EvalItemResult;
    if (budget < 1) {
      const gold = answerOf(items[i].answer);
      result = {
        id: i,
        question: items[i].question,
        gold,
        predicted: null,
        correct: false,
        tokens: 0,
        forwards: 0,
        tokensPerForward: 0,
        seconds: 0,
        stopReason: "context",
        output: "",
      };
    } else {
      const t0 = performance.now();
      const r = await run(prompts[i], budget, i);
      const seconds = (performance.now() - t0) / 1000;
      const output = p.tokenizer.decode(r.tokens);
      const s = scoreGeneration(output, items[i].answer);
      result = {
        id: i,
        question: items[i].question,
        ...s,
        tokens: r.tokens.length,
        forwards: r.stats.forwards,
        tokensPerForward: r.stats.tokensPerForward,
        seconds,
        stopReason: r.stopReason,
        output,
      };
    }
    results.push(result);
    await options.onItem?.(result, results.length);
  }
  return { results, summary: summarizeEval(results, decoderLabel(d)) };
}

/**
 * The number after the last `####` in a GSM8K-style answer: the rest of that line, with `$`,
 * thousands commas and spaces removed, up to the first number in it. The GSM8K convention.
 *
 * @param text an answer or a model's generation
 * @returns the number, or null when there is no `####` or no number after it
 *
 * @example
 * ```ts
 * import { answerOf } from "./gsm8k_eval.ts";
 * answerOf("5 * 4 = <<5*4=20>>20\n#### 20"); // 20
 * answerOf("#### $1,000."); // 1000
 * answerOf("no marker 12"); // null
 * ```
 */
export function answerOf(text: string): number | null {
  const at = text.lastIndexOf("####");
  if (at < 0) return null;
  let tail = text.slice(at + 4);
  const nl = tail.indexOf("\n");
  if (nl >= 0) tail = tail.slice(0, nl);
  // "1,000" → "1000" (commas between digits only); "$18" → "18"; "- 3" → "-3".
  const cleaned = tail.replace(/(?<=\d),(?=\d)/g, "").replaceAll("$", "").replace(/\s+/g, "");
  const m = cleaned.match(/-?\d+(?:\.\d+)?/);
  if (!m) return null;
  const v = Number(m[0]);
  return Number.isFinite(v) ? v : null;
}

/**
 * Token ids per document: BOS (when the tokenizer has one) + prompt + answer + EOS. Encodes the text
 * of each document without relying on special-token text.
 *
 * @param tokenizer the tokenizer (needs an EOS token)
 * @param problems the problems
 * @returns one id array per problem
 * @throws {TypeError} when the tokenizer has no EOS token
 *
 * @example
 * ```ts ignore
 * const docs = encodeDocuments(tokenizer, generateProblems({ seed: 1, count: 1000 }));
 * ```
 */
export function encodeDocuments(tokenizer: TextTokenizer, problems: readonly Gsm8kItem[]): number[][] {
  const eos = tokenizer.eosIds[0];
  if (eos === undefined) {
    throw new TypeError("Cannot encode training documents: the tokenizer has no EOS token; set eos_token");
  }
  return problems.map((p) => {
    const text = formatPrompt("gsm8k", { question: p.question }) + p.answer;
    return [...tokenizer.encode(text, { addBos: tokenizer.bosId !== undefined }), eos];
  });
}
