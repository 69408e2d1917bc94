/**
 * The Hugging Face `tokenizer.json` / `tokenizer_config.json` pair of a Llama-style tokenizer
 * (SentencePiece BPE with byte fallback, "▁" for spaces, <unk>/<s>/</s> at ids 0..2), for a given
 * vocabulary and merge list. Used by the llama2.c import and by the project's own BPE trainer.
 *
 * @module
 */

/** The special tokens at ids 0, 1, 2. */
export const LLAMA_SPECIALS: readonly string[] = ["<unk>", "<s>", "</s>"];

/** The two files, as JSON values. */
export interface HfTokenizerFiles {
  /** `tokenizer.json`. */
  tokenizerJson: Record<string, unknown>;
  /** `tokenizer_config.json`. */
  tokenizerConfigJson: Record<string, unknown>;
}

/** Inputs of {@linkcode llamaTokenizerFiles}. */
export interface LlamaTokenizerSpec {
  /** Token → id. */
  vocab: Record<string, number>;
  /** Merges in rank order, "a b" each. */
  merges: readonly string[];
  /** A pre-tokenizer (e.g. a regex Split), or null for Llama-2's none. */
  preTokenizer?: Record<string, unknown> | null;
  /** `model_max_length` for the config, when known. */
  modelMaxLength?: number;
  /** `tokenizer_class` (default "LlamaTokenizer"). */
  tokenizerClass?: string;
}

/**
 * Builds both files with Llama-2's pipeline (legacy: false): Prepend + Replace normalizer, BOS
 * post-processor, the ▁ / ByteFallback / Fuse / Strip decoder, and a BPE model.
 *
 * @example A two-token vocabulary on top of the specials and bytes
 * ```ts
 * import { llamaTokenizerFiles } from "./llama_tokenizer_json.ts";
 * const files = llamaTokenizerFiles({ vocab: { "<unk>": 0, "<s>": 1, "</s>": 2 }, merges: [] });
 * console.log(files.tokenizerConfigJson.bos_token); // "<s>"
 * ```
 */
export function llamaTokenizerFiles(spec: LlamaTokenizerSpec): HfTokenizerFiles {
  const specialToken = (id: number) => ({
    id,
    content: LLAMA_SPECIALS[id],
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  const tokenizerJson: Record<string, unknown> = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [0, 1, 2].map(specialToken),
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Prepend", prepend: "\u2581" },
        { type: "Replace", pattern: { String: " " }, content: "\u2581" },
      ],
    },
    pre_tokenizer: spec.preTokenizer ?? null,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [
        { SpecialToken: { id: "<s>", type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "<s>", type_id: 1 } },
        { Sequence: { id: "B", type_id: 1 } },
      ],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "\u2581" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: "<unk>",
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab: spec.vocab,
      merges: [...spec.merges],
    },
  };
  const tokenizerConfigJson: Record<string, unknown> = {
    add_bos_token: true,
    add_eos_token: false,
    bos_token: "<s>",
    eos_token: "</s>",
    unk_token: "<unk>",
    pad_token: null,
    clean_up_tokenization_spaces: false,
    legacy: false,
    tokenizer_class: spec.tokenizerClass ?? "LlamaTokenizer",
  };
  if (spec.modelMaxLength !== undefined) tokenizerConfigJson.model_max_length = spec.modelMaxLength;
  return { tokenizerJson, tokenizerConfigJson };
}
