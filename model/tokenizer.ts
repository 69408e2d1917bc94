/**
 * Text ↔ token ids for a checkpoint directory, on top of `@huggingface/tokenizers`.
 *
 * `TextTokenizer` reads the two Hugging Face files (`tokenizer.json`, `tokenizer_config.json`) as
 * parsed JSON objects, so it runs unchanged in a browser; `loadTokenizer` is the one edge that reads
 * them by name through a caller-supplied function. Besides `encode`/`decode` it offers a streaming
 * decoder for printing tokens as they are generated, which is where byte-fallback tokens (one UTF-8
 * byte each) and Llama's "strip the first space" rule make naive per-token decoding wrong.
 *
 * @module
 */

import { Tokenizer } from "@huggingface/tokenizers";
import { FormatError } from "./format_error.ts";

/**
 * File names used in error messages, so a message points at the path the user actually has.
 *
 * @example Naming files inside a model directory
 * ```ts
 * import type { TokenizerFileNames } from "./tokenizer.ts";
 * const names: TokenizerFileNames = {
 *   tokenizer: "models/tiny/tokenizer.json",
 *   config: "models/tiny/tokenizer_config.json",
 * };
 * ```
 */
export interface TokenizerFileNames {
  /** Where `tokenizer.json` came from. */
  tokenizer: string;
  /** Where `tokenizer_config.json` came from. */
  config: string;
}

/**
 * Options for {@linkcode TextTokenizer.encode}.
 *
 * @example Encoding without BOS
 * ```ts ignore
 * const ids = tok.encode("Hello", { addBos: false } satisfies EncodeOptions);
 * ```
 */
export interface EncodeOptions {
  /**
   * Put the BOS token first. Defaults to `tokenizer_config.json`'s `add_bos_token`, or, where that is
   * absent, to whether the tokenizer's own post-processor adds BOS (true for Llama).
   */
  addBos?: boolean;
}

/**
 * Incremental detokenizer returned by {@linkcode TextTokenizer.createStreamDecoder}.
 *
 * Invariant: the concatenation of everything `push` and `flush` returned equals
 * `tokenizer.decode(allPushedIds)`. `push` never returns U+FFFD for a UTF-8 sequence that later
 * tokens may still complete.
 *
 * @example Printing tokens as they arrive
 * ```ts ignore
 * const stream = tok.createStreamDecoder();
 * for (const id of ids) out.write(stream.push(id));
 * out.write(stream.flush());
 * ```
 */
export interface StreamDecoder {
  /** Adds one token id; returns the text it completed (often "", e.g. mid-way through a multi-byte char). */
  push(id: number): string;
  /** Returns whatever text is still held back (an unfinished UTF-8 sequence decodes to U+FFFD here). */
  flush(): string;
}

/** Added special tokens that end a turn or a document in common tokenizer families. */
const _KNOWN_EOS_TOKENS = [
  "</s>",
  "<|endoftext|>",
  "<|end_of_text|>",
  "<|eot_id|>",
  "<|im_end|>",
  "<|EOT|>",
  "<end_of_turn>",
  "<eos>",
];

type _Json = Record<string, unknown>;

function _isObject(v: unknown): v is _Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** `bos_token` etc. are either a string or an AddedToken object `{content: "<s>", ...}`. */
function _tokenField(config: _Json, field: string, file: string): string | undefined {
  const v = config[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v === "string") return v;
  if (_isObject(v) && typeof v.content === "string") return v.content;
  throw new FormatError(
    file,
    `field "${field}" is ${JSON.stringify(v)}, not a token string or {"content": ...} object`,
    `set it to the token text, e.g. "${field}": "<s>"`,
  );
}

/**
 * A tokenizer for one model: encode, decode, special ids and the chat template.
 *
 * @example Encoding and decoding
 * ```ts ignore
 * import { TextTokenizer } from "./tokenizer.ts";
 * const tok = TextTokenizer.fromJson(tokenizerJson, tokenizerConfigJson);
 * const ids = tok.encode("Hello world"); // [1, 15043, 3186] for Llama-2
 * console.log(tok.decode(ids)); // "Hello world"
 * ```
 */
export class TextTokenizer {
  /** Id of the beginning-of-sequence token, if the tokenizer has one. */
  readonly bosId: number | undefined;
  /** Ids that end generation: `eos_token` from the config plus known end-of-turn special tokens. */
  readonly eosIds: readonly number[];
  /** Number of ids (largest id + 1, added tokens included). */
  readonly vocabSize: number;
  /** The Jinja chat template from `tokenizer_config.json`, if any. */
  readonly chatTemplate: string | undefined;
  /** BOS token text (for chat templates), if any. */
  readonly bosToken: string | undefined;
  /** EOS token text (for chat templates), if any. */
  readonly eosToken: string | undefined;
  /** Whether `encode` adds BOS when not told otherwise. */
  readonly addBosByDefault: boolean;
  readonly #tok: Tokenizer;

  private constructor(
    tok: Tokenizer,
    fields: {
      bosId: number | undefined;
      eosIds: number[];
      vocabSize: number;
      chatTemplate: string | undefined;
      bosToken: string | undefined;
      eosToken: string | undefined;
      addBosByDefault: boolean;
    },
  ) {
    this.#tok = tok;
    this.bosId = fields.bosId;
    this.eosIds = Object.freeze(fields.eosIds);
    this.vocabSize = fields.vocabSize;
    this.chatTemplate = fields.chatTemplate;
    this.bosToken = fields.bosToken;
    this.eosToken = fields.eosToken;
    this.addBosByDefault = fields.addBosByDefault;
  }

  /**
   * Builds a tokenizer from the parsed contents of `tokenizer.json` and (optionally)
   * `tokenizer_config.json`.
   *
   * @param tokenizerJson parsed `tokenizer.json`
   * @param configJson parsed `tokenizer_config.json`, or `undefined`/`null` when the model has none
   * @param names file names for error messages
   * @returns the tokenizer
   * @throws {FormatError} when either object is malformed or names tokens the vocabulary lacks
   *
   * @example From objects already in memory
   * ```ts ignore
   * import { TextTokenizer } from "./tokenizer.ts";
   * const tok = TextTokenizer.fromJson(JSON.parse(tokText), JSON.parse(cfgText), {
   *   tokenizer: "m/tokenizer.json",
   *   config: "m/tokenizer_config.json",
   * });
   * ```
   */
  static fromJson(
    tokenizerJson: unknown,
    configJson?: unknown,
    names: Partial<TokenizerFileNames> = {},
  ): TextTokenizer {
    const tokFile = names.tokenizer ?? "tokenizer.json";
    const cfgFile = names.config ?? "tokenizer_config.json";
    if (!_isObject(tokenizerJson)) {
      throw new FormatError(
        tokFile,
        "the top level is not a JSON object",
        "use a Hugging Face tokenizer.json",
      );
    }
    if (!_isObject(tokenizerJson.model)) {
      throw new FormatError(
        tokFile,
        'field "model" is missing or not an object',
        "re-export it with Hugging Face tokenizers (tokenizer.save(...))",
      );
    }
    if (tokenizerJson.added_tokens !== undefined && !Array.isArray(tokenizerJson.added_tokens)) {
      throw new FormatError(
        tokFile,
        'field "added_tokens" is not an array',
        "make it a list of token objects",
      );
    }
    if (configJson !== undefined && configJson !== null && !_isObject(configJson)) {
      throw new FormatError(cfgFile, "the top level is not a JSON object", "delete the file or fix it");
    }
    const config: _Json = _isObject(configJson) ? configJson : {};

    // tokenizers.js insists that these keys exist (null is fine); many real files omit some of them.
    const full = {
      normalizer: null,
      pre_tokenizer: null,
      post_processor: null,
      decoder: null,
      added_tokens: [],
      ...tokenizerJson,
    };
    let tok: Tokenizer;
    try {
      tok = new Tokenizer(full, config);
    } catch (e) {
      throw new FormatError(
        tokFile,
        `the tokenizer cannot be built (${(e as Error).message})`,
        "check that it is a Hugging Face tokenizer.json of a supported type (BPE, WordPiece, Unigram)",
      );
    }

    let vocabSize = 0;
    for (const id of tok.get_vocab(true).values()) vocabSize = Math.max(vocabSize, id + 1);

    const lookup = (field: string): { text: string | undefined; id: number | undefined } => {
      const text = _tokenField(config, field, cfgFile);
      if (text === undefined) return { text, id: undefined };
      const id = tok.token_to_id(text);
      if (id === undefined) {
        throw new FormatError(
          cfgFile,
          `field "${field}" names ${JSON.stringify(text)}, which is not in the vocabulary of ${tokFile}`,
          "use a token from the vocabulary or remove the field",
        );
      }
      return { text, id };
    };
    const bos = lookup("bos_token");
    const eos = lookup("eos_token");

    // Without a config, fall back to the conventional names (a bare llama tokenizer.json still has "<s>").
    const added = new Map<string, { id: number; special: boolean }>();
    for (const t of (full.added_tokens as unknown[])) {
      if (_isObject(t) && typeof t.content === "string" && typeof t.id === "number") {
        added.set(t.content, { id: t.id, special: t.special === true });
      }
    }
    let bosId = bos.id;
    let bosToken = bos.text;
    if (bosId === undefined && !("bos_token" in config)) {
      for (const name of ["<s>", "<|begin_of_text|>", "<bos>"]) {
        const a = added.get(name);
        if (a) {
          bosId = a.id;
          bosToken = name;
          break;
        }
      }
    }
    const eosIds: number[] = [];
    if (eos.id !== undefined) eosIds.push(eos.id);
    for (const name of _KNOWN_EOS_TOKENS) {
      const a = added.get(name);
      if (a && a.special && !eosIds.includes(a.id)) eosIds.push(a.id);
    }
    let eosToken = eos.text;
    if (eosToken === undefined && eosIds.length > 0) eosToken = tok.id_to_token(eosIds[0]);

    let addBosByDefault: boolean;
    if (typeof config.add_bos_token === "boolean") {
      addBosByDefault = config.add_bos_token && bosId !== undefined;
    } else if (config.add_bos_token !== undefined && config.add_bos_token !== null) {
      throw new FormatError(
        cfgFile,
        `field "add_bos_token" is ${JSON.stringify(config.add_bos_token)}, not true or false`,
        "set it to true or false",
      );
    } else {
      // No explicit setting: do what the tokenizer's own post-processor does.
      const probe = tok.encode("a", { add_special_tokens: true }).ids;
      addBosByDefault = bosId !== undefined && probe[0] === bosId;
    }

    let chatTemplate: string | undefined;
    const ct = config.chat_template;
    if (typeof ct === "string") {
      chatTemplate = ct;
    } else if (Array.isArray(ct)) {
      // Newer configs store named templates: [{name: "default", template: "..."}, ...].
      const named = ct.find((t) => _isObject(t) && t.name === "default") ?? ct[0];
      if (_isObject(named) && typeof named.template === "string") chatTemplate = named.template;
    } else if (ct !== undefined && ct !== null) {
      throw new FormatError(
        cfgFile,
        `field "chat_template" is a ${typeof ct}, not a string`,
        "set it to the Jinja template text",
      );
    }

    return new TextTokenizer(tok, {
      bosId,
      eosIds,
      vocabSize,
      chatTemplate,
      bosToken,
      eosToken,
      addBosByDefault,
    });
  }

  /**
   * Text to ids. Special-token text in the input (e.g. `"</s>"`) becomes the special id, as in
   * Hugging Face `transformers`.
   *
   * @param text the text
   * @param options `addBos` (default: {@linkcode TextTokenizer.addBosByDefault})
   * @returns the ids
   *
   * @example With and without BOS
   * ```ts ignore
   * tok.encode("Hello world"); // [1, 15043, 3186]
   * tok.encode("Hello world", { addBos: false }); // [15043, 3186]
   * ```
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    // Encode without the post-processor and add BOS ourselves, so `addBos` means exactly that.
    const ids = this.#tok.encode(text, { add_special_tokens: false }).ids;
    const addBos = options.addBos ?? this.addBosByDefault;
    if (!addBos) return ids;
    if (this.bosId === undefined) {
      throw new TypeError(
        "Cannot encode with addBos: this tokenizer has no BOS token; pass { addBos: false }",
      );
    }
    return [this.bosId, ...ids];
  }

  /**
   * Ids to text, dropping special tokens (BOS, EOS, ...).
   *
   * @param ids token ids, each in `[0, vocabSize)`
   * @returns the text
   * @throws {RangeError} for an id outside the vocabulary
   *
   * @example Decoding
   * ```ts ignore
   * tok.decode([1, 15043, 3186, 2]); // "Hello world"
   * ```
   */
  decode(ids: readonly number[]): string {
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new RangeError(`Cannot decode token id ${id}: the vocabulary has ids 0..${this.vocabSize - 1}`);
      }
    }
    // tokenizers.js rejects an empty array; the empty sequence is simply "".
    if (ids.length === 0) return "";
    return this.#tok.decode(ids as number[], { skip_special_tokens: true });
  }

  /**
   * The id of a token string, e.g. `"<s>"` or `"▁the"`.
   *
   * @param token the token text as it appears in the vocabulary
   * @returns its id, or `undefined`
   *
   * @example Looking up BOS
   * ```ts ignore
   * tok.tokenToId("<s>"); // 1
   * ```
   */
  tokenToId(token: string): number | undefined {
    return this.#tok.token_to_id(token);
  }

  /**
   * The vocabulary string of an id.
   *
   * @param id a token id
   * @returns the token text, or `undefined`
   *
   * @example Looking up an id
   * ```ts ignore
   * tok.idToToken(15043); // "▁Hello"
   * ```
   */
  idToToken(id: number): string | undefined {
    return this.#tok.id_to_token(id);
  }

  /**
   * A decoder for tokens that arrive one at a time.
   *
   * Decoding each token alone is wrong twice over: a byte-fallback token holds one byte of a
   * multi-byte character, and Llama's decoder strips the leading space of the *first* token only.
   * So, as in Hugging Face text-generation-inference, we decode a small window twice, from a token
   * already printed (`prefix`) to the end and to the last printed token (`read`), and print the
   * difference; both decodes see the same first token, so the space stripping cancels out. While the
   * window's text ends in U+FFFD, a character is incomplete and we wait for more tokens.
   *
   * @returns a fresh stream decoder
   *
   * @example Streaming an emoji split over byte tokens
   * ```ts ignore
   * const s = tok.createStreamDecoder();
   * const pieces = tok.encode("Hi 🦙").map((id) => s.push(id)); // ["", "Hi", " ", "", "", "", "🦙"]
   * ```
   */
  createStreamDecoder(): StreamDecoder {
    // ids[0] is the token at `prefix`; earlier tokens are dropped as they can no longer matter.
    let ids: number[] = [];
    let read = 0; // ids[0..read) have been printed
    const step = (final: boolean): string => {
      const prefixText = this.decode(ids.slice(0, read));
      const newText = this.decode(ids);
      if (newText.length <= prefixText.length) return "";
      if (!final && newText.endsWith("\uFFFD")) return "";
      // The prefix is printed text ending on a whole character, so `newText` extends it.
      const piece = newText.slice(prefixText.length);
      ids = ids.slice(read);
      read = ids.length;
      return piece;
    };
    return {
      push: (id: number): string => {
        if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
          throw new RangeError(
            `Cannot decode token id ${id}: the vocabulary has ids 0..${this.vocabSize - 1}`,
          );
        }
        ids.push(id);
        return step(false);
      },
      flush: (): string => (read < ids.length ? step(true) : ""),
    };
  }
}

/**
 * Reads `tokenizer.json` and `tokenizer_config.json` from a model directory.
 *
 * @param readText returns a file's text by name, or `null` when the file does not exist
 * @param dirName the directory, used in error messages
 * @returns the tokenizer
 * @throws {FormatError} when `tokenizer.json` is missing or either file is not valid JSON
 *
 * @example Loading from disk with Deno
 * ```ts ignore
 * import { loadTokenizer } from "./tokenizer.ts";
 * const dir = "models/stories260K";
 * const tok = await loadTokenizer(async (name) => {
 *   try {
 *     return await Deno.readTextFile(`${dir}/${name}`);
 *   } catch (e) {
 *     if (e instanceof Deno.errors.NotFound) return null;
 *     throw e;
 *   }
 * }, dir);
 * ```
 */
export async function loadTokenizer(
  readText: (name: string) => Promise<string | null>,
  dirName: string,
): Promise<TextTokenizer> {
  const names: TokenizerFileNames = {
    tokenizer: `${dirName}/tokenizer.json`,
    config: `${dirName}/tokenizer_config.json`,
  };
  const tokText = await readText("tokenizer.json");
  if (tokText === null) {
    throw new FormatError(
      names.tokenizer,
      "the file does not exist",
      "copy tokenizer.json from the model's Hugging Face repository into the directory " +
        "(a model with only tokenizer.model must be converted with transformers first)",
    );
  }
  const cfgText = await readText("tokenizer_config.json");
  const parse = (text: string, file: string): unknown => {
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new FormatError(file, `the file is not valid JSON (${(e as Error).message})`, "re-download it");
    }
  };
  const tokJson = parse(tokText, names.tokenizer);
  const cfgJson = cfgText === null ? undefined : parse(cfgText, names.config);
  return TextTokenizer.fromJson(tokJson, cfgJson, names);
}
