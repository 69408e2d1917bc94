/**
 * Tests for model/llama2c.ts: converts the real stories260K checkpoint and tok512 tokenizer
 * (../shared/models/stories260K, not committed to this repository) and checks the result against
 * independent plain-TypeScript references of llama2.c's RoPE and `encode()`.
 */
import { sharedPath, sharedTest, STORIES_FIXTURE } from "../_fixtures.ts";

import assert from "node:assert/strict";
import { fileSource } from "../../model/deno_files.ts";
import { parseLlamaConfig } from "../../model/config.ts";
import { FormatError } from "../../model/format_error.ts";
import { convertLlama2c, llama2cTokenizerToHf, parseLlama2cCheckpoint } from "../../model/llama2c.ts";
import { openSafetensors } from "../../model/safetensors.ts";
import { loadTokenizer, type TextTokenizer } from "../../model/tokenizer.ts";

const DIR = new URL(`file://${sharedPath(STORIES_FIXTURE)}`);
const CKPT = new URL("stories260K.bin", DIR).pathname;
const TOK = new URL("tok512.bin", DIR).pathname;

// stories260K dimensions (NOTICE.md): C 64, I 172, L 5, H 8, KVH 4, V 512, T 512; D = 8.
const C = 64, I = 172, L = 5, H = 8, KVH = 4, V = 512, T = 512, D = C / H;

/** Converts once into a fresh temporary directory shared by the tests below. */
let _converted: Promise<string> | undefined;
function converted(): Promise<string> {
  _converted ??= (async () => {
    const root = await Deno.makeTempDir({ prefix: "llama2c_test_" });
    const out = `${root}/stories260K`;
    await convertLlama2c({ checkpoint: CKPT, tokenizer: TOK, out });
    return out;
  })();
  return _converted;
}

async function convertedTokenizer(): Promise<TextTokenizer> {
  const out = await converted();
  return loadTokenizer(async (name) => {
    try {
      return await Deno.readTextFile(`${out}/${name}`);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw e;
    }
  }, out);
}

// ---------------------------------------------------------------------------------------------------
// Independent reference: llama2.c's tokenizer (run.c `build_tokenizer` + `encode`)

interface RefVocab {
  pieces: string[]; // as stored: spaces are " ", ids 1 and 2 are "\n<s>\n", "\n</s>\n"
  scores: number[];
  lookup: Map<string, number>;
}

async function refVocab(): Promise<RefVocab> {
  const bytes = await Deno.readFile(TOK);
  const view = new DataView(bytes.buffer);
  const pieces: string[] = [];
  const scores: number[] = [];
  let off = 4; // skip max_token_length
  while (off < bytes.length) {
    scores.push(view.getFloat32(off, true));
    const len = view.getInt32(off + 4, true);
    pieces.push(new TextDecoder().decode(bytes.subarray(off + 8, off + 8 + len)));
    off += 8 + len;
  }
  const lookup = new Map<string, number>();
  pieces.forEach((p, i) => lookup.has(p) || lookup.set(p, i));
  return { pieces, scores, lookup };
}

/** llama2.c `encode(t, text, bos=0, eos=0)`: dummy prefix, per-char lookup with byte fallback, best-score merges. */
function refEncode(v: RefVocab, text: string): number[] {
  const tokens: number[] = [];
  // add_dummy_prefix: a " " token in front of any non-empty text.
  if (text.length > 0) tokens.push(v.lookup.get(" ")!);
  for (const ch of text) { // one UTF-8 code point at a time
    const id = v.lookup.get(ch);
    if (id !== undefined) tokens.push(id);
    else for (const b of new TextEncoder().encode(ch)) tokens.push(b + 3); // byte fallback: <0x00> is id 3
  }
  // Repeatedly merge the leftmost adjacent pair whose concatenation has the highest score.
  while (true) {
    let bestScore = -1e10, bestId = -1, bestIdx = -1;
    for (let i = 0; i < tokens.length - 1; i++) {
      const id = v.lookup.get(v.pieces[tokens[i]] + v.pieces[tokens[i + 1]]);
      if (id !== undefined && v.scores[id] > bestScore) {
        bestScore = v.scores[id];
        bestId = id;
        bestIdx = i;
      }
    }
    if (bestIdx === -1) break;
    tokens.splice(bestIdx, 2, bestId);
  }
  return tokens;
}

// ---------------------------------------------------------------------------------------------------
// Independent reference: the two RoPE conventions, as plain loops

/** llama2.c run.c: rotate pairs (x[2i], x[2i+1]) of each head by pos · 10000^(−2i/D). */
function ropeInterleaved(x: Float64Array, pos: number, headSize: number): Float64Array {
  const out = x.slice();
  for (let i = 0; i < x.length; i += 2) {
    const headDim = i % headSize;
    const freq = 1 / Math.pow(10000, headDim / headSize);
    const c = Math.cos(pos * freq), s = Math.sin(pos * freq);
    out[i] = x[i] * c - x[i + 1] * s;
    out[i + 1] = x[i] * s + x[i + 1] * c;
  }
  return out;
}

/** Hugging Face Llama: rotate (x[i], x[i + D/2]) of each head by pos · 10000^(−2i/D) ("rotate half"). */
function ropeRotateHalf(x: Float64Array, pos: number, headSize: number): Float64Array {
  const out = x.slice();
  const half = headSize / 2;
  for (let h = 0; h < x.length / headSize; h++) {
    for (let i = 0; i < half; i++) {
      const freq = 1 / Math.pow(10000, (2 * i) / headSize);
      const c = Math.cos(pos * freq), s = Math.sin(pos * freq);
      const a = x[h * headSize + i], b = x[h * headSize + i + half];
      out[h * headSize + i] = a * c - b * s;
      out[h * headSize + i + half] = b * c + a * s;
    }
  }
  return out;
}

/** y = W·x for row-major W (rows, x.length). */
function matVec(w: Float32Array, x: Float64Array): Float64Array {
  const rows = w.length / x.length;
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    for (let c = 0; c < x.length; c++) acc += w[r * x.length + c] * x[c];
    y[r] = acc;
  }
  return y;
}

/** Back from rotate-half order to interleaved order: per head, element j·D/2 + i goes to 2i + j. */
function unpermute(y: Float64Array, headSize: number): Float64Array {
  const out = new Float64Array(y.length);
  const half = headSize / 2;
  for (let h = 0; h < y.length / headSize; h++) {
    for (let j = 0; j < 2; j++) {
      for (let i = 0; i < half; i++) out[h * headSize + 2 * i + j] = y[h * headSize + j * half + i];
    }
  }
  return out;
}

/** Little-endian f32 block of the raw checkpoint, read independently of model/llama2c.ts. */
function rawF32(bytes: Uint8Array, floatOffset: number, count: number): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset + 28 + 4 * floatOffset, 4 * count);
  return Float32Array.from({ length: count }, (_, i) => view.getFloat32(4 * i, true));
}

// ---------------------------------------------------------------------------------------------------
// Checkpoint conversion

sharedTest([STORIES_FIXTURE], "convertLlama2c: stories260K directory, config and tensors", async () => {
  const out = await converted();
  const names = [...Deno.readDirSync(out)].map((e) => e.name).sort();
  assert.deepEqual(names, [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
  ]);
  const json = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
  assert.deepEqual(json.architectures, ["LlamaForCausalLM"]);
  assert.equal(json.model_type, "llama");
  assert.equal(json.hidden_size, C);
  assert.equal(json.intermediate_size, I);
  assert.equal(json.num_hidden_layers, L);
  assert.equal(json.num_attention_heads, H);
  assert.equal(json.num_key_value_heads, KVH);
  assert.equal(json.vocab_size, V);
  assert.equal(json.max_position_embeddings, T);
  assert.equal(json.rms_norm_eps, 1e-5);
  assert.equal(json.rope_theta, 10000);
  assert.equal(json.tie_word_embeddings, true);
  assert.equal(json.bos_token_id, 1);
  assert.equal(json.eos_token_id, 2);
  const cfg = parseLlamaConfig(json, "config.json"); // the project's own loader accepts it
  assert.equal(cfg.headDim, D);
  assert.deepEqual(JSON.parse(await Deno.readTextFile(`${out}/generation_config.json`)), {
    bos_token_id: 1,
    eos_token_id: 2,
  });

  const st = await openSafetensors(await fileSource(`${out}/model.safetensors`));
  assert.equal(st.tensors.size, 1 + 9 * L + 1); // embed, 9 per layer, final norm; tied: no lm_head
  assert.ok(!st.tensors.has("lm_head.weight"));
  assert.deepEqual(st.tensors.get("model.embed_tokens.weight")?.shape, [V, C]);
  assert.deepEqual(st.tensors.get("model.layers.4.self_attn.k_proj.weight")?.shape, [KVH * D, C]);
  assert.deepEqual(st.tensors.get("model.layers.0.mlp.down_proj.weight")?.shape, [C, I]);
  for (const info of st.tensors.values()) assert.equal(info.dtype, "F32");

  // Un-permuted tensors are copied bit for bit; spot-check against raw file offsets.
  const raw = await Deno.readFile(CKPT);
  const embed = await st.readTensor("model.embed_tokens.weight");
  assert.deepEqual(embed.data, rawF32(raw, 0, V * C));
  const kv = KVH * D;
  const woOffset = V * C + L * C + L * C * C + 2 * L * kv * C; // wo of layer 0
  assert.deepEqual(
    (await st.readTensor("model.layers.0.self_attn.o_proj.weight")).data,
    rawF32(raw, woOffset, C * C),
  );
  const w2Offset = woOffset + L * C * C + L * C + L * I * C + 2 * C * I; // w2 of layer 2
  assert.deepEqual(
    (await st.readTensor("model.layers.2.mlp.down_proj.weight")).data,
    rawF32(raw, w2Offset, C * I),
  );
  const finalNorm = (await st.readTensor("model.norm.weight")).data;
  assert.deepEqual(finalNorm, rawF32(raw, woOffset + L * C * C + L * C + 3 * L * I * C, C));
});

sharedTest(
  [STORIES_FIXTURE],
  "convertLlama2c: q/k permutation turns interleaved RoPE into rotate-half RoPE",
  async () => {
    const out = await converted();
    const st = await openSafetensors(await fileSource(`${out}/model.safetensors`));
    const raw = await Deno.readFile(CKPT);
    const kv = KVH * D;
    let seed = 7;
    const rand = () => ((seed = (seed * 16807) % 2147483647) / 2147483647) * 2 - 1;
    for (const layer of [0, 3]) {
      const wqOffset = V * C + L * C + layer * C * C;
      const wkOffset = V * C + L * C + L * C * C + layer * kv * C;
      const cases = [
        {
          raw: rawF32(raw, wqOffset, C * C),
          hf: (await st.readTensor(`model.layers.${layer}.self_attn.q_proj.weight`)).data,
        },
        {
          raw: rawF32(raw, wkOffset, kv * C),
          hf: (await st.readTensor(`model.layers.${layer}.self_attn.k_proj.weight`)).data,
        },
      ];
      for (const pos of [0, 1, 17, 511]) {
        const x = Float64Array.from({ length: C }, rand);
        for (const { raw: wRaw, hf: wHf } of cases) {
          const expected = ropeInterleaved(matVec(wRaw, x), pos, D);
          const actual = unpermute(ropeRotateHalf(matVec(wHf, x), pos, D), D);
          for (let i = 0; i < expected.length; i++) {
            assert.ok(
              Math.abs(actual[i] - expected[i]) <= 1e-9 + 1e-9 * Math.abs(expected[i]),
              `layer ${layer} pos ${pos} i ${i}`,
            );
          }
        }
      }
      // Attention scores are what must not change: q·k under each convention agree.
      const x = Float64Array.from({ length: C }, rand);
      const qRaw = ropeInterleaved(matVec(cases[0].raw, x), 5, D),
        kRaw = ropeInterleaved(matVec(cases[1].raw, x), 2, D);
      const qHf = ropeRotateHalf(matVec(cases[0].hf, x), 5, D),
        kHf = ropeRotateHalf(matVec(cases[1].hf, x), 2, D);
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / (H / KVH)); // grouped-query: head h reads kv head g
        let sRaw = 0, sHf = 0;
        for (let d = 0; d < D; d++) {
          sRaw += qRaw[h * D + d] * kRaw[g * D + d];
          sHf += qHf[h * D + d] * kHf[g * D + d];
        }
        assert.ok(Math.abs(sRaw - sHf) < 1e-9, `score of head ${h}`);
      }
    }
  },
);

sharedTest(
  [STORIES_FIXTURE],
  "parseLlama2cCheckpoint: untied classifier becomes lm_head.weight",
  async () => {
    // Same file with vocab_size negated and a classifier appended: the "not shared" layout.
    const raw = await Deno.readFile(CKPT);
    const bytes = new Uint8Array(raw.length + 4 * V * C);
    bytes.set(raw);
    const view = new DataView(bytes.buffer);
    view.setInt32(20, -V, true);
    for (let i = 0; i < V * C; i++) view.setFloat32(raw.length + 4 * i, i % 7, true);
    const { config, tensors } = parseLlama2cCheckpoint(bytes, "untied.bin");
    assert.equal(config.tieWordEmbeddings, false);
    assert.equal(config.vocabSize, V);
    const head = tensors.find((t) => t.name === "lm_head.weight");
    assert.deepEqual(head?.shape, [V, C]);
    assert.equal(head?.data[13], 13 % 7);
  },
);

// ---------------------------------------------------------------------------------------------------
// Tokenizer conversion

const SENTENCES = [
  "Once upon a time, there was a little girl named Lily.",
  "Hello world!",
  " leading space",
  "two  spaces   and three",
  'Tom said, "Wow!" and ran 42 times.',
  "The cat's toy was under the bed.\nThen it was gone.",
  "café ☕ 日本語 🦙 naïve",
  "€100 ™ ~[x]|<y>",
  "a",
  "",
];

sharedTest(
  [STORIES_FIXTURE],
  "llama2cTokenizerToHf: encodes exactly like llama2.c's encode() and decodes back",
  async () => {
    const tok = await convertedTokenizer();
    const ref = await refVocab();
    assert.equal(tok.vocabSize, V);
    assert.equal(tok.bosId, 1);
    assert.deepEqual(tok.eosIds, [2]);
    assert.equal(tok.addBosByDefault, true);
    for (const text of SENTENCES) {
      const expected = refEncode(ref, text);
      assert.deepEqual(tok.encode(text, { addBos: false }), expected, JSON.stringify(text));
      assert.deepEqual(tok.encode(text), text === "" ? [1] : [1, ...expected]);
      assert.equal(tok.decode(expected), text, `decode ${JSON.stringify(text)}`);
    }
  },
);

sharedTest(
  [STORIES_FIXTURE],
  "llama2cTokenizerToHf: golden.txt encodes like llama2.c; its first 20 tokens round-trip",
  async () => {
    const tok = await convertedTokenizer();
    const ref = await refVocab();
    const golden = await Deno.readTextFile(new URL("golden.txt", DIR));
    const ids = tok.encode(golden, { addBos: false });
    assert.deepEqual(ids, refEncode(ref, golden));
    assert.equal(tok.decode(ids), golden);
    const first = ids.slice(0, 20);
    const text = tok.decode(first);
    assert.ok(golden.startsWith(text) && text.length > 40, JSON.stringify(text));
    assert.deepEqual(tok.encode(text, { addBos: false }), first);
    // llama2.c prints a sequence that starts with BOS without the first piece's leading space; so do we.
    assert.equal(tok.decode([1, ...first]), text);
    assert.ok(text.startsWith("Once upon a time"));
    // Streaming gives the same text.
    const s = tok.createStreamDecoder();
    assert.equal([1, ...ids].map((id) => s.push(id)).join("") + s.flush(), golden);
  },
);

sharedTest([STORIES_FIXTURE], "llama2cTokenizerToHf: vocabulary layout and merges", async () => {
  const { tokenizerJson, tokenizerConfigJson } = llama2cTokenizerToHf(
    await Deno.readFile(TOK),
    "tok512.bin",
    V,
  );
  const model = tokenizerJson.model as {
    vocab: Record<string, number>;
    merges: string[];
    byte_fallback: boolean;
  };
  assert.equal(model.byte_fallback, true);
  assert.equal(Object.keys(model.vocab).length, V);
  assert.equal(model.vocab["<unk>"], 0);
  assert.equal(model.vocab["<s>"], 1);
  assert.equal(model.vocab["</s>"], 2);
  assert.equal(model.vocab["<0x00>"], 3);
  assert.equal(model.vocab["<0xFF>"], 258);
  assert.equal(model.vocab["▁t"], 259);
  // The best-scored token (" t", id 259, score 0) gives the first merge.
  assert.equal(model.merges[0], "▁ t");
  assert.ok(model.merges.every((m) => m.split(" ").length === 2));
  assert.deepEqual(
    (tokenizerJson.added_tokens as { id: number; content: string; special: boolean }[]).map((
      t,
    ) => [t.id, t.content, t.special]),
    [[0, "<unk>", true], [1, "<s>", true], [2, "</s>", true]],
  );
  assert.equal(tokenizerConfigJson.add_bos_token, true);
  assert.equal(tokenizerConfigJson.bos_token, "<s>");
  assert.equal(tokenizerConfigJson.eos_token, "</s>");
  assert.equal(tokenizerConfigJson.legacy, false);
});

// ---------------------------------------------------------------------------------------------------
// Bad input

function isFormatError(file: string, pattern: RegExp): (e: unknown) => boolean {
  return (e: unknown) => e instanceof FormatError && e.file === file && pattern.test(e.message);
}

sharedTest(
  [STORIES_FIXTURE],
  "parseLlama2cCheckpoint: truncated, zero dims, wrong size, newer format",
  async () => {
    const raw = await Deno.readFile(CKPT);
    assert.throws(
      () => parseLlama2cCheckpoint(raw.slice(0, 20), "a.bin"),
      isFormatError("a.bin", /20 bytes.*28-byte/),
    );
    assert.throws(
      () => parseLlama2cCheckpoint(raw.slice(0, raw.length - 4), "a.bin"),
      isFormatError("a.bin", /1056536 bytes.*needs 1056540.*truncated/),
    );
    assert.throws(
      () => parseLlama2cCheckpoint(new Uint8Array([...raw, 0, 0, 0, 0]), "a.bin"),
      isFormatError("a.bin", /needs 1056540/),
    );
    const withField = (index: number, value: number) => {
      const b = raw.slice();
      new DataView(b.buffer).setInt32(4 * index, value, true);
      return b;
    };
    assert.throws(
      () => parseLlama2cCheckpoint(withField(0, 0), "a.bin"),
      isFormatError("a.bin", /"dim" is 0/),
    );
    assert.throws(
      () => parseLlama2cCheckpoint(withField(2, -3), "a.bin"),
      isFormatError("a.bin", /"n_layers" is -3/),
    );
    assert.throws(
      () => parseLlama2cCheckpoint(withField(5, 0), "a.bin"),
      isFormatError("a.bin", /"vocab_size" is 0/),
    );
    assert.throws(
      () => parseLlama2cCheckpoint(withField(4, 3), "a.bin"),
      isFormatError("a.bin", /multiple of n_kv_heads/),
    );
    assert.throws(
      () => parseLlama2cCheckpoint(withField(3, 7), "a.bin"),
      isFormatError("a.bin", /head size/),
    );
    assert.throws(
      () => parseLlama2cCheckpoint(withField(0, 0x616b3432), "a.bin"),
      isFormatError("a.bin", /--version 0/),
    );
  },
);

sharedTest(
  [STORIES_FIXTURE],
  "llama2cTokenizerToHf: truncated file, length overflow, wrong layout, vocab mismatch",
  async () => {
    const raw = await Deno.readFile(TOK);
    assert.throws(() => llama2cTokenizerToHf(raw.slice(0, 2), "t.bin"), isFormatError("t.bin", /too short/));
    assert.throws(
      () => llama2cTokenizerToHf(raw.slice(0, raw.length - 1), "t.bin"),
      isFormatError("t.bin", /token 511 needs/),
    );
    assert.throws(
      () => llama2cTokenizerToHf(raw.slice(0, 4 + 5), "t.bin"),
      isFormatError("t.bin", /token 0.*ends inside/),
    );
    // Token 0 ("<unk>", 5 bytes) claims 9 bytes, more than max_token_length 7.
    const long = raw.slice();
    new DataView(long.buffer).setInt32(8, 9, true);
    assert.throws(
      () => llama2cTokenizerToHf(long, "t.bin"),
      isFormatError("t.bin", /token 0 has length 9, outside 0\.\.max_token_length \(7\)/),
    );
    const negMax = raw.slice();
    new DataView(negMax.buffer).setInt32(0, 0, true);
    assert.throws(
      () => llama2cTokenizerToHf(negMax, "t.bin"),
      isFormatError("t.bin", /max_token_length is 0/),
    );
    assert.throws(
      () => llama2cTokenizerToHf(raw, "t.bin", 32000),
      isFormatError("t.bin", /512 tokens.*32000/),
    );
    // Cut after token 100: too few tokens for the byte-fallback layout.
    let off = 4;
    for (let i = 0; i < 100; i++) off += 8 + new DataView(raw.buffer).getInt32(off + 4, true);
    assert.throws(
      () => llama2cTokenizerToHf(raw.slice(0, off), "t.bin"),
      isFormatError("t.bin", /100 tokens, fewer than/),
    );
  },
);

sharedTest(
  [STORIES_FIXTURE],
  "convertLlama2c: refuses a non-empty output unless forced, writes nothing on bad input",
  async () => {
    const root = await Deno.makeTempDir({ prefix: "llama2c_out_" });
    try {
      const out = `${root}/m`;
      await Deno.mkdir(out);
      await Deno.writeTextFile(`${out}/keep.txt`, "x");
      await assert.rejects(
        convertLlama2c({ checkpoint: CKPT, tokenizer: TOK, out }),
        (e: unknown) => e instanceof Deno.errors.AlreadyExists && /force/.test((e as Error).message),
      );
      assert.deepEqual([...Deno.readDirSync(out)].map((e) => e.name), ["keep.txt"]);
      await convertLlama2c({ checkpoint: CKPT, tokenizer: TOK, out, force: true });
      assert.ok(!(await Array.fromAsync(Deno.readDir(out))).some((e) => e.name === "keep.txt"));
      assert.ok((await Deno.stat(`${out}/model.safetensors`)).isFile);

      // An existing empty directory is fine.
      const empty = `${root}/empty/`;
      await Deno.mkdir(empty);
      await convertLlama2c({ checkpoint: CKPT, tokenizer: TOK, out: empty });
      assert.ok((await Deno.stat(`${empty}config.json`)).isFile);

      // Bad tokenizer: FormatError, and neither the output nor a temporary directory is left behind.
      const badTok = `${root}/bad_tok.bin`;
      await Deno.writeFile(badTok, (await Deno.readFile(TOK)).slice(0, 100));
      await assert.rejects(
        convertLlama2c({ checkpoint: CKPT, tokenizer: badTok, out: `${root}/never` }),
        isFormatError(badTok, /./),
      );
      const left = [...Deno.readDirSync(root)].map((e) => e.name).sort();
      assert.deepEqual(left, ["bad_tok.bin", "empty", "m"]);
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
);

sharedTest([STORIES_FIXTURE], "cleanup: remove the shared conversion directory", async () => {
  if (_converted) {
    const out = await _converted;
    await Deno.remove(out.slice(0, out.lastIndexOf("/")), { recursive: true });
  }
});
