/**
 * A SentencePiece-style BPE tokenizer trainer (the Llama layout) that writes Hugging Face files.
 *
 * The tokenizer it produces:
 * - ids 0..2 are the special tokens `<unk>`, `<s>`, `</s>`; ids 3..258 the byte-fallback tokens
 *   `<0x00>`..`<0xFF>` (any character outside the vocabulary becomes its UTF-8 bytes, so every text
 *   encodes and decodes back exactly); then the alphabet (single characters of the corpus, most
 *   frequent first); then one token per merge, in merge order.
 * - normalizer: Llama's `Prepend("▁")` + `Replace(" " → "▁")`.
 * - pre-tokenizer: a `Split` on {@linkcode PRE_TOKENIZER_PATTERN}, which cuts the text into words
 *   that start at a "▁" (merges never cross a word boundary), and makes every digit and every
 *   newline a piece of its own: numbers are always spelled digit by digit (which helps arithmetic),
 *   and a prompt that ends in "\n" tokenizes the same alone as followed by its answer.
 * - decoder and post-processor: Llama-2's (`▁` → space, byte fallback, fuse, strip one leading
 *   space; BOS first).
 *
 * Training (Sennrich et al.'s BPE, as in Hugging Face's `BpeTrainer`): split the corpus on the
 * special-token texts, normalize and pre-tokenize each section exactly as the tokenizer will, count
 * word frequencies, then repeatedly merge the most frequent adjacent pair (ties: the pair with the
 * smaller left id, then the smaller right id). Pair counts are updated incrementally: only the
 * words that contain the merged pair are rewritten, a heap with lazy deletion finds the next pair.
 *
 * @module
 */

import { type HfTokenizerFiles, llamaTokenizerFiles } from "../mod.ts";

// ===================================================================================================
// Layout
// ===================================================================================================

/** The special tokens, at ids 0, 1, 2. */
const _SPECIALS = ["<unk>", "<s>", "</s>"] as const;
/** Ids 3..258 are the byte-fallback tokens. */
const _FIRST_BYTE_ID = 3;
const _BYTE_TOKENS = 256;
/** SentencePiece's space marker. */
const _SPACE = "\u2581";

/**
 * The pre-tokenizer's pieces: a word (an optional "▁" and then characters that are not "▁", digits
 * or newlines), a lone "▁", one digit, or one newline. It matches every character, so splitting and
 * matching agree (also for Rust `tokenizers`).
 */
export const PRE_TOKENIZER_PATTERN = `${_SPACE}?[^${_SPACE}0-9\\n]+|${_SPACE}|[0-9]|\\n`;

/** Largest vocabulary: ids of a pair are packed into one number as `left * 65536 + right`. */
const _MAX_VOCAB = 65536;

function _byteToken(b: number): string {
  return `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`;
}

// ===================================================================================================
// Options and results
// ===================================================================================================

/**
 * Options of {@linkcode trainBpe}.
 *
 * @example A 512-token vocabulary
 * ```ts
 * import type { BpeOptions } from "./bpe.ts";
 * const o: BpeOptions = { vocabSize: 512, minFrequency: 2 };
 * ```
 */
export interface BpeOptions {
  /** Vocabulary size including the 3 specials and 256 byte tokens (260..65536; default 1024). */
  vocabSize?: number;
  /**
   * A character joins the alphabet, and a pair is merged, only when it occurs at least this often
   * in the corpus (default 2). Rarer characters are encoded as bytes.
   */
  minFrequency?: number;
  /** Written as `model_max_length` in `tokenizer_config.json` when given. */
  modelMaxLength?: number;
}

/**
 * Figures of one training run.
 *
 * @example Printing compression
 * ```ts ignore
 * const { stats } = trainBpe(text);
 * console.log(`${(stats.tokens / stats.chars).toFixed(3)} tokens per character`);
 * ```
 */
export interface BpeStats {
  /** Characters (UTF-16 code units) of the corpus, special-token texts excluded. */
  chars: number;
  /** Distinct pre-tokenized words. */
  words: number;
  /** Single-character tokens. */
  alphabet: number;
  /** Merges learned. */
  merges: number;
  /** Final vocabulary size (≤ the requested size; smaller when no pair is frequent enough). */
  vocabSize: number;
  /** Tokens the trained tokenizer gives the corpus (special-token texts excluded). */
  tokens: number;
  /** Wall time of training. */
  seconds: number;
}

/**
 * The trained tokenizer's two files, and figures of the run.
 *
 * @example
 * ```ts ignore
 * const { tokenizerJson, tokenizerConfigJson, stats } = trainBpe(text, { vocabSize: 1024 });
 * ```
 */
export interface BpeTokenizer extends HfTokenizerFiles {
  /** Figures of the run. */
  stats: BpeStats;
}

// ===================================================================================================
// Pre-tokenization (mirrors the tokenizer.json written below)
// ===================================================================================================

/**
 * Word frequencies of a corpus as the tokenizer will see it: sections between special-token texts,
 * each normalized ("▁" first, spaces to "▁") and pre-tokenized.
 */
function _countWords(texts: readonly string[]): { counts: Map<string, number>; chars: number } {
  const counts = new Map<string, number>();
  const specials = /<unk>|<\/s>|<s>/g;
  const piece = new RegExp(PRE_TOKENIZER_PATTERN, "gu");
  let chars = 0;
  for (const text of texts) {
    for (const section of text.split(specials)) {
      if (section.length === 0) continue;
      chars += section.length;
      const normalized = _SPACE + section.replaceAll(" ", _SPACE);
      for (const m of normalized.matchAll(piece)) {
        const w = m[0];
        counts.set(w, (counts.get(w) ?? 0) + 1);
      }
    }
  }
  return { counts, chars };
}

// ===================================================================================================
// Pair counts: a max-heap with lazy deletion
// ===================================================================================================

/** Max-heap of (count, pair key); ties pop the smaller key first. Stale entries are skipped by the caller. */
class _PairHeap {
  #counts: number[] = [];
  #keys: number[] = [];

  get size(): number {
    return this.#keys.length;
  }

  #above(i: number, j: number): boolean {
    const ci = this.#counts[i], cj = this.#counts[j];
    return ci > cj || (ci === cj && this.#keys[i] < this.#keys[j]);
  }

  #swap(i: number, j: number): void {
    [this.#counts[i], this.#counts[j]] = [this.#counts[j], this.#counts[i]];
    [this.#keys[i], this.#keys[j]] = [this.#keys[j], this.#keys[i]];
  }

  push(count: number, key: number): void {
    this.#counts.push(count);
    this.#keys.push(key);
    let i = this.#keys.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#above(i, parent)) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  /** Removes and returns the top entry. */
  pop(): { count: number; key: number } {
    const top = { count: this.#counts[0], key: this.#keys[0] };
    const lastCount = this.#counts.pop()!, lastKey = this.#keys.pop()!;
    const n = this.#keys.length;
    if (n > 0) {
      this.#counts[0] = lastCount;
      this.#keys[0] = lastKey;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let best = i;
        if (l < n && this.#above(l, best)) best = l;
        if (r < n && this.#above(r, best)) best = r;
        if (best === i) break;
        this.#swap(i, best);
        i = best;
      }
    }
    return top;
  }
}

// ===================================================================================================
// Training
// ===================================================================================================

/**
 * Trains a byte-fallback BPE tokenizer on a corpus.
 *
 * Special-token texts in the corpus (`<s>`, `</s>`, `<unk>`) are not trained on: the tokenizer maps
 * them to their ids, as it will when encoding. Characters rarer than `minFrequency` (and, when the
 * vocabulary is too small for all of them, the rarest) are left to byte fallback.
 *
 * @param corpus the training text, or several texts (counted as if concatenated with special tokens
 *   between them)
 * @param options vocabulary size, minimum frequency, `model_max_length`
 * @returns `tokenizer.json` and `tokenizer_config.json` contents, and figures of the run
 * @throws {RangeError} for a vocabulary size outside 260..65536 or a minimum frequency below 1
 *
 * @example Training and loading
 * ```ts
 * import { trainBpe } from "./bpe.ts";
 * import { TextTokenizer } from "../model/tokenizer.ts";
 * const { tokenizerJson, tokenizerConfigJson } = trainBpe("the cat sat on the mat. ".repeat(50), { vocabSize: 300 });
 * const tok = TextTokenizer.fromJson(tokenizerJson, tokenizerConfigJson);
 * console.log(tok.decode(tok.encode("the cat"))); // "the cat"
 * ```
 */
export function trainBpe(corpus: string | readonly string[], options: BpeOptions = {}): BpeTokenizer {
  const t0 = performance.now();
  const vocabSize = options.vocabSize ?? 1024;
  const minFrequency = options.minFrequency ?? 2;
  const reserved = _FIRST_BYTE_ID + _BYTE_TOKENS;
  if (!Number.isInteger(vocabSize) || vocabSize <= reserved || vocabSize > _MAX_VOCAB) {
    throw new RangeError(
      `Cannot train a BPE vocabulary of ${vocabSize} tokens: it must be an integer in ${
        reserved + 1
      }..${_MAX_VOCAB} (3 specials and 256 byte tokens come first)`,
    );
  }
  if (!Number.isFinite(minFrequency) || minFrequency < 1) {
    throw new RangeError(`The minimum frequency must be at least 1, not ${minFrequency}`);
  }

  // ---- 1. word frequencies
  const { counts, chars } = _countWords(typeof corpus === "string" ? [corpus] : corpus);
  const wordTexts = [...counts.keys()];
  const freqs = wordTexts.map((w) => counts.get(w)!);

  // ---- 2. alphabet: characters by frequency (ties by code point), as many as fit
  const charFreq = new Map<string, number>();
  wordTexts.forEach((w, i) => {
    for (const ch of w) charFreq.set(ch, (charFreq.get(ch) ?? 0) + freqs[i]);
  });
  const alphabet = [...charFreq.entries()]
    .filter(([, f]) => f >= minFrequency)
    .sort((x, y) => y[1] - x[1] || x[0].codePointAt(0)! - y[0].codePointAt(0)!)
    .slice(0, vocabSize - reserved)
    .map(([ch]) => ch);

  const vocab: string[] = [..._SPECIALS];
  for (let b = 0; b < _BYTE_TOKENS; b++) vocab.push(_byteToken(b));
  const idOf = new Map<string, number>(vocab.map((t, i) => [t, i]));
  // Merged strings that must never become normal tokens (they would shadow a special or byte token).
  const forbidden = new Set<string>(vocab);
  for (const ch of alphabet) {
    idOf.set(ch, vocab.length);
    vocab.push(ch);
  }

  // ---- 3. words as symbol ids; -1 marks a byte-fallback character, which no pair may include
  const words: number[][] = wordTexts.map((w) => Array.from(w, (ch) => idOf.get(ch) ?? -1));
  const pairCount = new Map<number, number>();
  const where = new Map<number, Set<number>>(); // pair → words that contained it (may be stale)
  const addPairs = (w: number, sign: number, touched: Set<number>) => {
    const s = words[w];
    for (let i = 0; i + 1 < s.length; i++) {
      if (s[i] < 0 || s[i + 1] < 0) continue;
      const key = s[i] * _MAX_VOCAB + s[i + 1];
      pairCount.set(key, (pairCount.get(key) ?? 0) + sign * freqs[w]);
      touched.add(key);
      if (sign > 0) {
        let set = where.get(key);
        if (!set) where.set(key, set = new Set());
        set.add(w);
      }
    }
  };
  const heap = new _PairHeap();
  {
    const all = new Set<number>();
    for (let w = 0; w < words.length; w++) addPairs(w, 1, all);
    for (const key of all) heap.push(pairCount.get(key)!, key);
  }

  // ---- 4. merges: most frequent pair first
  const merges: string[] = [];
  while (vocab.length < vocabSize && heap.size > 0) {
    const { count, key } = heap.pop();
    if (pairCount.get(key) !== count) continue; // stale: a newer entry holds the current count
    if (count < minFrequency) break;
    const a = Math.floor(key / _MAX_VOCAB), b = key % _MAX_VOCAB;
    const merged = vocab[a] + vocab[b];
    if (forbidden.has(merged)) {
      pairCount.set(key, 0); // never pick it again
      continue;
    }
    let c = idOf.get(merged);
    if (c === undefined) {
      c = vocab.length;
      vocab.push(merged);
      idOf.set(merged, c);
    }
    merges.push(`${vocab[a]} ${vocab[b]}`);
    // Rewrite every word holding (a, b): remove its pair counts, merge left to right, add them back.
    const touched = new Set<number>();
    for (const w of where.get(key) ?? []) {
      const s = words[w];
      let has = false;
      for (let i = 0; i + 1 < s.length; i++) if (s[i] === a && s[i + 1] === b) has = true;
      if (!has) continue;
      addPairs(w, -1, touched);
      const out: number[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          out.push(c);
          i++;
        } else {
          out.push(s[i]);
        }
      }
      words[w] = out;
      addPairs(w, 1, touched);
    }
    where.delete(key);
    for (const k of touched) {
      const n = pairCount.get(k)!;
      if (n > 0) heap.push(n, k);
    }
  }

  // ---- 5. the corpus in tokens: one per symbol, but a byte-fallback character (never merged, so
  // still one symbol) is as many tokens as its UTF-8 bytes
  let tokens = 0;
  const utf8 = new TextEncoder();
  words.forEach((s, w) => {
    let n = s.length;
    for (const ch of wordTexts[w]) if (!idOf.has(ch)) n += utf8.encode(ch).length - 1;
    tokens += n * freqs[w];
  });

  const files = _hfFiles(vocab, merges, options.modelMaxLength);
  return {
    ...files,
    stats: {
      chars,
      words: wordTexts.length,
      alphabet: alphabet.length,
      merges: merges.length,
      vocabSize: vocab.length,
      tokens,
      seconds: (performance.now() - t0) / 1000,
    },
  };
}

/** The two Hugging Face files for a vocabulary (ids in array order) and merges (rank order). */
function _hfFiles(
  vocab: readonly string[],
  merges: readonly string[],
  modelMaxLength?: number,
): HfTokenizerFiles {
  const vocabJson: Record<string, number> = {};
  vocab.forEach((t, i) => (vocabJson[t] = i));
  return llamaTokenizerFiles({
    vocab: vocabJson,
    merges,
    preTokenizer: {
      type: "Split",
      pattern: { Regex: PRE_TOKENIZER_PATTERN },
      behavior: "Isolated",
      invert: false,
    },
    modelMaxLength,
    tokenizerClass: "PreTrainedTokenizerFast",
  });
}

// ===================================================================================================
// Files
// ===================================================================================================

/**
 * Writes `tokenizer.json` and `tokenizer_config.json` into `dir` (created if needed).
 *
 * @param dir the directory
 * @param files the two JSON objects (e.g. from {@linkcode trainBpe})
 *
 * @example
 * ```ts ignore
 * await writeTokenizer("models/gsm-tiny", trainBpe(await Deno.readTextFile("corpus.txt")));
 * ```
 */
export async function writeTokenizer(dir: string, files: HfTokenizerFiles): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(`${dir}/tokenizer.json`, JSON.stringify(files.tokenizerJson, null, 1) + "\n");
  await Deno.writeTextFile(
    `${dir}/tokenizer_config.json`,
    JSON.stringify(files.tokenizerConfigJson, null, 2) + "\n",
  );
}
