/**
 * Import of karpathy/llama2.c checkpoints (`*.bin`, legacy format) and tokenizers (`tokenizer.bin`)
 * into a Hugging Face model directory.
 *
 * Dimension letters: C channels (`dim`), I MLP width (`hidden_dim`), L layers, H query heads,
 * KVH key/value heads, D head size (C / H), V vocabulary, T `seq_len`.
 *
 * Two conventions differ between the formats and are the whole point of this file:
 * - RoPE. llama2.c rotates interleaved pairs (x[2i], x[2i+1]); Hugging Face Llama rotates the two
 *   halves of each head (x[i], x[i + D/2]). We permute the rows of wq and wk per head, as transformers'
 *   `convert_llama_weights_to_hf` does, so that q·k scores are unchanged.
 * - Tokenizer. llama2.c greedily merges the adjacent pair whose merged token has the best score;
 *   Hugging Face BPE merges the pair with the lowest merge rank. Ranking every possible merge by the
 *   merged token's score (best first) makes the two produce the same tokens.
 *
 * The parsers are pure (bytes in, objects out); only {@linkcode convertLlama2c} touches the disk.
 *
 * @module
 */

import { type LlamaConfig, llamaConfigToJson } from "./config.ts";
import { FormatError } from "./format_error.ts";
import { type HfTokenizerFiles, llamaTokenizerFiles } from "./llama_tokenizer_json.ts";
import type { TensorToWrite } from "./safetensors.ts";
import { writeSafetensors } from "./deno_files.ts";

// ===================================================================================================
// Checkpoint
// ===================================================================================================

/**
 * A parsed llama2.c checkpoint in Hugging Face form.
 *
 * @example Listing the tensors
 * ```ts ignore
 * const ckpt = parseLlama2cCheckpoint(await Deno.readFile("stories260K.bin"), "stories260K.bin");
 * for (const t of ckpt.tensors) console.log(t.name, t.shape);
 * ```
 */
export interface Llama2cCheckpoint {
  /** The model configuration (bos 1, eos 2, rms_norm_eps 1e-5, rope_theta 10000 as llama2.c hard-codes). */
  config: LlamaConfig;
  /** F32 tensors with Hugging Face names and (out, in) shapes; wq and wk already permuted. */
  tensors: TensorToWrite[];
}

/** Bytes in the legacy header: 7 little-endian int32. */
const _HEADER_BYTES = 28;
/** The first int32 of llama2.c's newer export formats (version 1 and 2): "ak42". */
const _V1_MAGIC = 0x616b3432;

/**
 * Rows of an interleaved-RoPE projection reordered for rotate-half RoPE, as transformers'
 * `permute(w, n_heads, dim1, dim2)`: `w.view(n_heads, dim1/n_heads/2, 2, dim2).transpose(1, 2)`.
 * Within a head, output row j·D/2 + i is input row 2i + j (j ∈ {0, 1}, i < D/2).
 *
 * @param w (heads·D, cols) row-major
 * @param heads number of heads
 * @param cols row length
 * @returns a new (heads·D, cols) array
 */
function _permuteRope(w: Float32Array, heads: number, cols: number): Float32Array {
  const rows = w.length / cols;
  const D = rows / heads;
  const half = D / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < 2; j++) {
      for (let i = 0; i < half; i++) {
        const src = (h * D + 2 * i + j) * cols;
        const dst = (h * D + j * half + i) * cols;
        out.set(w.subarray(src, src + cols), dst);
      }
    }
  }
  return out;
}

/** Little-endian f32 values from `bytes[offset, offset + 4·count)`, copied. */
function _readF32(bytes: Uint8Array, offset: number, count: number): Float32Array {
  const out = new Float32Array(count);
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, count * 4);
  for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
  return out;
}

/**
 * Parses a llama2.c "legacy" checkpoint (`export.py --version 0`, the format of the
 * karpathy/tinyllamas files): a header of 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 * vocab_size, seq_len; a negative vocab_size means the classifier is stored separately), then f32
 * weights.
 *
 * @param bytes the whole file
 * @param name the file name, for error messages
 * @returns config and Hugging Face tensors (F32; `lm_head.weight` only when not tied)
 * @throws {FormatError} when the file is too short, a dimension is not positive or inconsistent, or the
 *   size does not match the header's weight count
 *
 * @example Parsing stories260K
 * ```ts ignore
 * import { parseLlama2cCheckpoint } from "./llama2c.ts";
 * const { config } = parseLlama2cCheckpoint(await Deno.readFile("stories260K.bin"), "stories260K.bin");
 * console.log(config.hiddenSize, config.numLayers); // 64 5
 * ```
 */
export function parseLlama2cCheckpoint(bytes: Uint8Array, name: string): Llama2cCheckpoint {
  if (bytes.length < _HEADER_BYTES) {
    throw new FormatError(
      name,
      `the file is ${bytes.length} bytes, shorter than the ${_HEADER_BYTES}-byte llama2.c header`,
      "is the file truncated? Re-download it",
    );
  }
  const head = new DataView(bytes.buffer, bytes.byteOffset, _HEADER_BYTES);
  const field = (i: number) => head.getInt32(4 * i, true);
  if (field(0) === _V1_MAGIC) {
    throw new FormatError(
      name,
      `the file starts with the llama2.c version-${field(1)} magic "ak42"`,
      "only the legacy format is supported; re-export with `python export.py --version 0`",
    );
  }
  const names = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"];
  const [C, I, L, H, KVH, vocabField, T] = names.map((_, i) => field(i));
  for (const [i, v] of [C, I, L, H, KVH, vocabField, T].entries()) {
    // vocab_size may be negative (its sign only says "classifier not shared"), never zero.
    if (i === 5 ? v === 0 : v <= 0) {
      throw new FormatError(
        name,
        `header field "${names[i]}" is ${v}, which must be ${i === 5 ? "non-zero" : "positive"}`,
        "is this a llama2.c checkpoint? Only the legacy format (export.py --version 0) is supported",
      );
    }
  }
  const tied = vocabField > 0;
  const V = Math.abs(vocabField);
  if (C % H !== 0 || (C / H) % 2 !== 0) {
    throw new FormatError(
      name,
      `header has dim ${C} and n_heads ${H}; the head size must be a whole, even number`,
      "the header is corrupted or not a llama2.c checkpoint",
    );
  }
  if (KVH > H || H % KVH !== 0) {
    throw new FormatError(
      name,
      `header has n_heads ${H} and n_kv_heads ${KVH}; n_heads must be a multiple of n_kv_heads`,
      "the header is corrupted or not a llama2.c checkpoint",
    );
  }
  const D = C / H;
  const KV = KVH * D; // kv_dim

  // Weight count, in file order (run.c `memory_map_weights`).
  const expected = V * C + // token embedding (V, C)
    L * C + // attention RMSNorm (L, C)
    L * C * C + // wq (L, H·D, C)
    2 * L * KV * C + // wk, wv (L, KVH·D, C)
    L * C * C + // wo (L, C, H·D)
    L * C + // FFN RMSNorm (L, C)
    3 * L * I * C + // w1, w3 (L, I, C); w2 (L, C, I)
    C + // final RMSNorm (C)
    T * D + // legacy RoPE tables: cos and sin, (T, D/2) each, unused
    (tied ? 0 : V * C); // classifier (V, C) when not shared
  const expectedBytes = _HEADER_BYTES + 4 * expected;
  if (bytes.length !== expectedBytes) {
    throw new FormatError(
      name,
      `the file is ${bytes.length} bytes but its header (dim ${C}, hidden_dim ${I}, n_layers ${L}, ` +
        `n_heads ${H}, n_kv_heads ${KVH}, vocab_size ${vocabField}, seq_len ${T}) needs ${expectedBytes}`,
      bytes.length < expectedBytes
        ? "is the file truncated? Re-download it"
        : "is this a legacy llama2.c checkpoint?",
    );
  }

  let offset = _HEADER_BYTES;
  const take = (count: number): Float32Array => {
    const out = _readF32(bytes, offset, count);
    offset += 4 * count;
    return out;
  };
  /** Splits a stacked (L, ...) block into L per-layer arrays. */
  const perLayer = (size: number): Float32Array[] => {
    const all = take(L * size);
    return Array.from({ length: L }, (_, l) => all.slice(l * size, (l + 1) * size));
  };
  const embed = take(V * C); // (V, C)
  const rmsAtt = perLayer(C); // L × (C)
  const wq = perLayer(C * C); // L × (H·D, C)
  const wk = perLayer(KV * C); // L × (KVH·D, C)
  const wv = perLayer(KV * C); // L × (KVH·D, C)
  const wo = perLayer(C * C); // L × (C, H·D)
  const rmsFfn = perLayer(C); // L × (C)
  const w1 = perLayer(I * C); // L × (I, C), gate
  const w2 = perLayer(C * I); // L × (C, I), down
  const w3 = perLayer(I * C); // L × (I, C), up
  const rmsFinal = take(C); // (C)
  offset += 4 * T * D; // skip freq_cis_real and freq_cis_imag
  const wcls = tied ? null : take(V * C); // (V, C)

  const tensors: TensorToWrite[] = [];
  const add = (tensorName: string, shape: number[], data: Float32Array) =>
    tensors.push({ name: tensorName, dtype: "F32", shape, data });
  add("model.embed_tokens.weight", [V, C], embed);
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [C], rmsAtt[l]);
    add(`${p}.self_attn.q_proj.weight`, [C, C], _permuteRope(wq[l], H, C));
    add(`${p}.self_attn.k_proj.weight`, [KV, C], _permuteRope(wk[l], KVH, C));
    add(`${p}.self_attn.v_proj.weight`, [KV, C], wv[l]);
    add(`${p}.self_attn.o_proj.weight`, [C, C], wo[l]);
    add(`${p}.post_attention_layernorm.weight`, [C], rmsFfn[l]);
    add(`${p}.mlp.gate_proj.weight`, [I, C], w1[l]);
    add(`${p}.mlp.up_proj.weight`, [I, C], w3[l]);
    add(`${p}.mlp.down_proj.weight`, [C, I], w2[l]);
  }
  add("model.norm.weight", [C], rmsFinal);
  if (wcls) add("lm_head.weight", [V, C], wcls);

  const config: LlamaConfig = {
    hiddenSize: C,
    intermediateSize: I,
    numLayers: L,
    numHeads: H,
    numKvHeads: KVH,
    headDim: D,
    // llama2.c hard-codes these in run.c.
    rmsNormEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    vocabSize: V,
    maxPositionEmbeddings: T,
    tieWordEmbeddings: tied,
    bosTokenId: 1,
    eosTokenIds: [2],
    hiddenAct: "silu",
    torchDtype: "float32",
  };
  return { config, tensors };
}

// ===================================================================================================
// Tokenizer
// ===================================================================================================

/** Names Hugging Face gives ids 0..2 (llama2.c stores "<unk>", "\n<s>\n", "\n</s>\n"). */
const _SPECIALS = ["<unk>", "<s>", "</s>"];
/** Ids 3..258 are the byte-fallback tokens <0x00>..<0xFF>. */
const _FIRST_BYTE_ID = 3;
const _BYTE_TOKENS = 256;

function _byteToken(b: number): string {
  return `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`;
}

/**
 * Converts a llama2.c `tokenizer.bin` (int32 max_token_length, then per token: f32 score, int32 byte
 * length, UTF-8 bytes) into an equivalent Hugging Face `tokenizer.json` and `tokenizer_config.json`.
 *
 * The result is a byte-fallback BPE with Llama-2's normalizer (prepend "▁", spaces to "▁") and decoder.
 * Its merges are every split t = a + b of a non-special, non-byte token t into two vocabulary tokens,
 * ranked by t's score (best first; ties by t's id, then by the length of a).
 *
 * @param bytes the whole file
 * @param name the file name, for error messages
 * @param expectedVocabSize when given, the number of tokens the checkpoint expects
 * @param modelMaxLength written as `model_max_length` when given (the checkpoint's seq_len)
 * @returns the two JSON objects
 * @throws {FormatError} for a truncated file, a token longer than max_token_length, invalid UTF-8,
 *   a vocabulary without the SentencePiece layout (<unk>, <s>, </s>, 256 byte tokens), duplicate
 *   tokens, or a token count different from `expectedVocabSize`
 *
 * @example Converting tok512.bin
 * ```ts ignore
 * import { llama2cTokenizerToHf } from "./llama2c.ts";
 * const files = llama2cTokenizerToHf(await Deno.readFile("tok512.bin"), "tok512.bin", 512);
 * ```
 */
export function llama2cTokenizerToHf(
  bytes: Uint8Array,
  name: string,
  expectedVocabSize?: number,
  modelMaxLength?: number,
): HfTokenizerFiles {
  const truncated = "is the file truncated? Re-download it or re-export it with llama2.c's tokenizer.py";
  if (bytes.length < 4) {
    throw new FormatError(
      name,
      `the file is ${bytes.length} bytes, too short for the max_token_length field`,
      truncated,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const maxLen = view.getInt32(0, true);
  if (maxLen <= 0) {
    throw new FormatError(
      name,
      `max_token_length is ${maxLen}, which must be positive`,
      "is this a llama2.c tokenizer?",
    );
  }

  // ---- read (score, bytes) records until the end of the file
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  const pieces: string[] = [];
  const scores: number[] = [];
  let offset = 4;
  while (offset < bytes.length) {
    const id = pieces.length;
    if (offset + 8 > bytes.length) {
      throw new FormatError(
        name,
        `token ${id} at byte ${offset}: the file ends inside its score/length`,
        truncated,
      );
    }
    const score = view.getFloat32(offset, true);
    const len = view.getInt32(offset + 4, true);
    offset += 8;
    if (len < 0 || len > maxLen) {
      throw new FormatError(
        name,
        `token ${id} has length ${len}, outside 0..max_token_length (${maxLen})`,
        "the file is corrupted or not a llama2.c tokenizer",
      );
    }
    if (offset + len > bytes.length) {
      throw new FormatError(
        name,
        `token ${id} needs ${len} bytes at byte ${offset} but the file has ${bytes.length}`,
        truncated,
      );
    }
    let text: string;
    try {
      text = utf8.decode(bytes.subarray(offset, offset + len));
    } catch {
      throw new FormatError(name, `token ${id} is not valid UTF-8`, "the file is corrupted");
    }
    offset += len;
    if (!Number.isFinite(score)) {
      throw new FormatError(
        name,
        `token ${id} (${JSON.stringify(text)}) has score ${score}`,
        "the file is corrupted",
      );
    }
    pieces.push(text);
    scores.push(score);
  }
  const V = pieces.length;
  if (expectedVocabSize !== undefined && V !== expectedVocabSize) {
    throw new FormatError(
      name,
      `the file has ${V} tokens but the checkpoint's vocab_size is ${expectedVocabSize}`,
      "use the tokenizer the model was trained with",
    );
  }

  // ---- check the SentencePiece layout: 3 specials, then the 256 byte tokens
  const minTokens = _FIRST_BYTE_ID + _BYTE_TOKENS;
  if (V < minTokens) {
    throw new FormatError(
      name,
      `the file has ${V} tokens, fewer than the ${minTokens} of <unk>, <s>, </s> and the 256 byte tokens`,
      truncated,
    );
  }
  for (let i = 0; i < _SPECIALS.length; i++) {
    if (pieces[i].trim() !== _SPECIALS[i]) {
      throw new FormatError(
        name,
        `token ${i} is ${JSON.stringify(pieces[i])}, expected ${_SPECIALS[i]}`,
        "only SentencePiece vocabularies with <unk>, <s>, </s> at ids 0..2 are supported",
      );
    }
  }
  for (let b = 0; b < _BYTE_TOKENS; b++) {
    if (pieces[_FIRST_BYTE_ID + b] !== _byteToken(b)) {
      throw new FormatError(
        name,
        `token ${_FIRST_BYTE_ID + b} is ${JSON.stringify(pieces[_FIRST_BYTE_ID + b])}, expected ${
          _byteToken(b)
        }`,
        "only byte-fallback vocabularies (<0x00>..<0xFF> at ids 3..258) are supported",
      );
    }
  }

  // ---- vocabulary in Hugging Face spelling: SentencePiece's "▁" for spaces
  const hf: string[] = pieces.map((p, i) => {
    if (i < _SPECIALS.length) return _SPECIALS[i];
    if (i < minTokens) return p;
    return p.replaceAll(" ", "\u2581");
  });
  const vocab: Record<string, number> = {};
  for (let i = 0; i < V; i++) {
    if (Object.hasOwn(vocab, hf[i])) {
      throw new FormatError(
        name,
        `tokens ${vocab[hf[i]]} and ${i} are both ${JSON.stringify(hf[i])}`,
        "a vocabulary must not repeat a token; the file is corrupted",
      );
    }
    vocab[hf[i]] = i;
  }

  // ---- merges: every way to build a normal token from two non-special tokens, best score first.
  // llama2.c merges the adjacent pair whose concatenation has the highest score, so a merge's rank is
  // the merged token's score; a token only reachable through some split is covered because every split
  // into vocabulary tokens is listed.
  const isMergeable = (id: number | undefined): boolean => id !== undefined && id >= _SPECIALS.length;
  const merges: { a: string; b: string; score: number; id: number; split: number }[] = [];
  for (let id = minTokens; id < V; id++) {
    const chars = Array.from(hf[id]); // code points, as both tokenizers start from whole characters
    for (let k = 1; k < chars.length; k++) {
      const a = chars.slice(0, k).join("");
      const b = chars.slice(k).join("");
      if (isMergeable(vocab[a]) && isMergeable(vocab[b])) {
        merges.push({ a, b, score: scores[id], id, split: k });
      }
    }
  }
  merges.sort((x, y) => y.score - x.score || x.id - y.id || x.split - y.split);

  // Same pipeline as Llama-2's tokenizer.json (legacy: false), with this vocabulary.
  return llamaTokenizerFiles({ vocab, merges: merges.map((m) => `${m.a} ${m.b}`), modelMaxLength });
}

// ===================================================================================================
// Conversion to a model directory (Deno only)
// ===================================================================================================

/**
 * Arguments of {@linkcode convertLlama2c}.
 *
 * @example Converting stories260K
 * ```ts ignore
 * const args: ConvertLlama2cOptions = { checkpoint: "stories260K.bin", tokenizer: "tok512.bin", out: "m" };
 * ```
 */
export interface ConvertLlama2cOptions {
  /** Path of the llama2.c checkpoint (`*.bin`, legacy format). */
  checkpoint: string;
  /** Path of the llama2.c tokenizer (`tokenizer.bin`, `tok512.bin`, ...). */
  tokenizer: string;
  /** Output directory; must not exist or be empty unless `force`. */
  out: string;
  /** Replace a non-empty `out`. Default false. */
  force?: boolean;
}

/**
 * What {@linkcode convertLlama2c} wrote.
 *
 * @example Reporting
 * ```ts ignore
 * const r = await convertLlama2c(args);
 * console.log(`wrote ${r.files.join(", ")} to ${r.out}`);
 * ```
 */
export interface ConvertLlama2cResult {
  /** The output directory. */
  out: string;
  /** The model configuration. */
  config: LlamaConfig;
  /** File names written inside `out`. */
  files: string[];
}

async function _exists(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/**
 * Converts a llama2.c checkpoint and tokenizer into a Hugging Face Llama directory: `config.json`,
 * `generation_config.json`, `model.safetensors` (F32; no `lm_head.weight` when tied),
 * `tokenizer.json`, `tokenizer_config.json`.
 *
 * Atomic: everything is written into a temporary sibling directory that is renamed to `out` at the
 * end, so an interrupted run never leaves a half-written model where a loader would find it.
 *
 * @param options input paths, output directory, `force`
 * @returns the output directory, config and file names
 * @throws {FormatError} for malformed inputs (nothing is written); `Deno.errors.AlreadyExists` when
 *   `out` is a non-empty directory or a file and `force` is not set
 *
 * @example Converting stories260K
 * ```ts ignore
 * import { convertLlama2c } from "./llama2c.ts";
 * await convertLlama2c({ checkpoint: "stories260K.bin", tokenizer: "tok512.bin", out: "models/stories260K" });
 * ```
 */
export async function convertLlama2c(options: ConvertLlama2cOptions): Promise<ConvertLlama2cResult> {
  const out = options.out.replace(/[\\/]+$/, "") || options.out;

  // Refuse early, before the (possibly long) conversion.
  const existing = await _exists(out);
  if (existing) {
    const empty = existing.isDirectory && (await Array.fromAsync(Deno.readDir(out))).length === 0;
    if (!empty && !options.force) {
      throw new Deno.errors.AlreadyExists(
        `Cannot write "${out}": it already exists and is ${
          existing.isDirectory ? "a non-empty directory" : "a file"
        }; ` +
          "choose another output path or pass force: true (--force) to replace it",
      );
    }
  }

  // Parse and validate everything in memory first: a malformed input writes nothing.
  const ckpt = parseLlama2cCheckpoint(await Deno.readFile(options.checkpoint), options.checkpoint);
  const cfg = ckpt.config;
  const tok = llama2cTokenizerToHf(
    await Deno.readFile(options.tokenizer),
    options.tokenizer,
    cfg.vocabSize,
    cfg.maxPositionEmbeddings,
  );
  const configJson = llamaConfigToJson(cfg);
  const generationJson = { bos_token_id: cfg.bosTokenId, eos_token_id: cfg.eosTokenIds[0] };

  const slash = Math.max(out.lastIndexOf("/"), out.lastIndexOf("\\"));
  const parent = slash >= 0 ? out.slice(0, slash + 1) : "";
  const base = out.slice(slash + 1);
  const tag = crypto.randomUUID().slice(0, 8);
  // A sibling of `out`, so the final rename stays on one file system.
  const tmp = `${parent}.${base}.tmp-${tag}`;
  const files = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
  ];
  const json = (v: unknown) => JSON.stringify(v, null, 2) + "\n";
  await Deno.mkdir(tmp);
  try {
    await Deno.writeTextFile(`${tmp}/config.json`, json(configJson));
    await Deno.writeTextFile(`${tmp}/generation_config.json`, json(generationJson));
    await writeSafetensors(`${tmp}/model.safetensors`, ckpt.tensors, {
      format: "pt",
      source: `llama2.c ${options.checkpoint.split(/[\\/]/).pop()}`,
    });
    // tokenizer.json is large and read by machines: no indentation.
    await Deno.writeTextFile(`${tmp}/tokenizer.json`, JSON.stringify(tok.tokenizerJson));
    await Deno.writeTextFile(`${tmp}/tokenizer_config.json`, json(tok.tokenizerConfigJson));

    const now = await _exists(out);
    if (now === null) {
      await Deno.rename(tmp, out);
    } else if (now.isDirectory && (await Array.fromAsync(Deno.readDir(out))).length === 0) {
      await Deno.remove(out);
      await Deno.rename(tmp, out);
    } else if (!options.force) {
      throw new Deno.errors.AlreadyExists(
        `Cannot write "${out}": it appeared while converting; choose another output path or pass force: true`,
      );
    } else {
      // force: move the old one aside, move the new one in, then delete the old one.
      const old = `${parent}.${base}.old-${tag}`;
      await Deno.rename(out, old);
      await Deno.rename(tmp, out);
      await Deno.remove(old, { recursive: true });
    }
  } catch (e) {
    await Deno.remove(tmp, { recursive: true }).catch(() => {}); // best effort; `tmp` may be gone
    throw e;
  }
  return { out, config: cfg, files };
}
