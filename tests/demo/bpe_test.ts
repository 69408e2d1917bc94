import assert from "node:assert/strict";
import { loadTokenizer, TextTokenizer } from "../../model/tokenizer.ts";
import { trainBpe, writeTokenizer } from "../../demo/bpe.ts";
import { corpus, generateProblems } from "../../demo/gsm_synth.ts";

const SPACE = "\u2581";

/** Words as the tokenizer pre-tokenizes them, by a character loop (independent of the trainer's regex). */
function referenceWords(text: string): Map<string, number> {
  const counts = new Map<string, number>();
  const add = (w: string) => w && counts.set(w, (counts.get(w) ?? 0) + 1);
  const normalized = SPACE + text.replaceAll(" ", SPACE);
  let cur = "";
  for (const ch of normalized) {
    const alone = (ch >= "0" && ch <= "9") || ch === "\n";
    if (alone) {
      add(cur);
      add(ch);
      cur = "";
    } else if (ch === SPACE) {
      add(cur);
      cur = ch;
    } else {
      cur += ch;
    }
  }
  add(cur);
  return counts;
}

/**
 * The slow, obvious BPE: recount every pair of every word before each merge. Same alphabet order
 * (frequency, then code point) and tie-break (smaller left id, then smaller right id) as the trainer.
 */
function referenceMerges(text: string, vocabSize: number): string[] {
  const counts = referenceWords(text);
  const charFreq = new Map<string, number>();
  for (const [w, f] of counts) for (const ch of w) charFreq.set(ch, (charFreq.get(ch) ?? 0) + f);
  const alphabet = [...charFreq].filter(([, f]) => f >= 2)
    .sort((a, b) => b[1] - a[1] || a[0].codePointAt(0)! - b[0].codePointAt(0)!).map(([c]) => c);
  const vocab = [...Array(259).keys()].map((i) => `#special${i}`).concat(alphabet);
  const id = new Map(vocab.map((t, i) => [t, i]));
  let words = [...counts].map(([w, f]) => ({ s: Array.from(w, (c) => id.get(c) ?? -1), f }));
  const merges: string[] = [];
  while (vocab.length < vocabSize) {
    const pairs = new Map<string, number>();
    for (const { s, f } of words) {
      for (let i = 0; i + 1 < s.length; i++) {
        if (s[i] >= 0 && s[i + 1] >= 0) {
          pairs.set(`${s[i]},${s[i + 1]}`, (pairs.get(`${s[i]},${s[i + 1]}`) ?? 0) + f);
        }
      }
    }
    let best: [number, number, number] | null = null; // count, a, b
    for (const [k, c] of pairs) {
      const [a, b] = k.split(",").map(Number);
      if (!best || c > best[0] || (c === best[0] && (a < best[1] || (a === best[1] && b < best[2])))) {
        best = [c, a, b];
      }
    }
    if (!best || best[0] < 2) break;
    const [, a, b] = best;
    const merged = vocab[a] + vocab[b];
    if (!id.has(merged)) {
      id.set(merged, vocab.length);
      vocab.push(merged);
    }
    const c = id.get(merged)!;
    merges.push(`${vocab[a]} ${vocab[b]}`);
    words = words.map(({ s, f }) => {
      const out: number[] = [];
      for (let i = 0; i < s.length; i++) {
        if (s[i] === a && s[i + 1] === b) {
          out.push(c);
          i++;
        } else out.push(s[i]);
      }
      return { s: out, f };
    });
  }
  return merges;
}

function load(files: { tokenizerJson: unknown; tokenizerConfigJson: unknown }): TextTokenizer {
  return TextTokenizer.fromJson(files.tokenizerJson, files.tokenizerConfigJson);
}

Deno.test("trainBpe: the same merges as the slow reference that recounts every pair", () => {
  const text = corpus(generateProblems({ seed: 11, count: 60 })).replaceAll(/<\/?s>/g, "\n") +
    " aaaa aaa aa a abab ba";
  const files = trainBpe(text, { vocabSize: 500 });
  const merges = (files.tokenizerJson.model as { merges: string[] }).merges;
  assert.ok(merges.length > 100, `${merges.length} merges`);
  assert.deepEqual(merges, referenceMerges(text, 500));
});

Deno.test("trainBpe: 2 MB of GSM-style text trains fast and compresses; stats match the tokenizer", () => {
  const problems = generateProblems({ seed: 1, count: 7200 });
  const text = corpus(problems);
  assert.ok(text.length > 2_000_000, `${text.length} chars`);
  const files = trainBpe(text, { vocabSize: 1024 });
  const { stats } = files;
  assert.equal(stats.vocabSize, 1024);
  assert.ok(stats.seconds < 30, `training took ${stats.seconds.toFixed(1)} s`);
  const tok = load(files);
  const ids = tok.encode(text, { addBos: false });
  // The trainer's own count of the corpus in tokens equals what the tokenizer produces: the
  // trainer's pre-tokenization and merge order are the tokenizer's.
  assert.equal(ids.filter((id) => id > 2).length, stats.tokens);
  assert.equal(ids.filter((id) => id === 1).length, problems.length);
  assert.equal(ids.filter((id) => id === 2).length, problems.length);
  const ratio = stats.tokens / stats.chars;
  assert.ok(ratio < 0.5, `${ratio.toFixed(3)} tokens per character`);
  console.log(
    `  2 MB corpus: ${stats.chars} chars, ${stats.words} word types, ${stats.merges} merges in ` +
      `${stats.seconds.toFixed(2)} s; ${ratio.toFixed(3)} tokens/char`,
  );
});

Deno.test("trainBpe: the tokenizer round-trips arbitrary text exactly", () => {
  const tok = load(trainBpe(corpus(generateProblems({ seed: 2, count: 300 })), { vocabSize: 600 }));
  const texts = [
    "",
    " ",
    "  two  spaces  ",
    "Question:\nWhat is 3 * 4?\nAnswer:\nLet's think step by step.\n",
    "She buys 3 * 4 = <<3*4=12>>12 apples.\n#### 12",
    "#### 1,000\n\n\n",
    "tabs\tand\r\nCRLF",
    "héllo wörld — 🦙 日本語 ﬁ Ω",
    "unseen chars: ~`^|\\{}[]",
    "0123456789 9876543210",
  ];
  for (const t of texts) {
    assert.equal(tok.decode(tok.encode(t)), t, JSON.stringify(t));
    assert.equal(tok.decode(tok.encode(t, { addBos: false })), t, JSON.stringify(t));
  }
  // Characters outside the vocabulary become UTF-8 byte tokens, not <unk>.
  const ids = tok.encode("🦙", { addBos: false });
  assert.ok(!ids.includes(0), "no <unk>");
  assert.deepEqual(ids.slice(-4).map((i) => tok.idToToken(i)), ["<0xF0>", "<0x9F>", "<0xA6>", "<0x99>"]);
});

Deno.test("trainBpe: digits are single tokens; merges stay inside words", () => {
  const files = trainBpe(corpus(generateProblems({ seed: 4, count: 1000 })), { vocabSize: 1024 });
  const tok = load(files);
  // By id (Object.keys would put the integer-like keys "0".."9" first).
  const vocab = Object.entries((files.tokenizerJson.model as { vocab: Record<string, number> }).vocab)
    .sort((x, y) => x[1] - y[1]).map(([t]) => t);
  assert.equal(vocab[259 + 1], "e", "the alphabet follows the byte tokens, most frequent first");
  for (const t of vocab.slice(259)) {
    if (t.length > 1) {
      assert.ok(!/[0-9]/.test(t), `token ${JSON.stringify(t)} holds a digit`);
      assert.ok(!t.includes("\n"), `token ${JSON.stringify(t)} holds a newline`);
      assert.ok(!t.slice(1).includes(SPACE), `token ${JSON.stringify(t)} crosses a word boundary`);
    }
  }
  const pieces = tok.encode("<<123*45=5535>>5535", { addBos: false }).map((i) => tok.idToToken(i));
  assert.deepEqual(pieces.filter((p) => /[0-9]/.test(p!)), [
    "1",
    "2",
    "3",
    "4",
    "5",
    "5",
    "5",
    "3",
    "5",
    "5",
    "5",
    "3",
    "5",
  ]);
});

Deno.test("trainBpe: Llama's special-token layout; </s> in text is EOS", () => {
  const files = trainBpe("a b c d e a b c d e", { vocabSize: 270 });
  const tok = load(files);
  assert.deepEqual([0, 1, 2, 3, 258].map((i) => tok.idToToken(i)), [
    "<unk>",
    "<s>",
    "</s>",
    "<0x00>",
    "<0xFF>",
  ]);
  assert.equal(tok.bosId, 1);
  assert.deepEqual(tok.eosIds, [2]);
  assert.equal(tok.addBosByDefault, true);
  assert.deepEqual(tok.encode("</s>", { addBos: false }), [2]);
  assert.deepEqual(tok.encode("<s>", { addBos: false }), [1]);
  assert.equal(tok.encode("a")[0], 1);
  assert.equal(files.tokenizerConfigJson.chat_template, undefined);
  assert.ok(tok.vocabSize <= 270);
});

Deno.test("trainBpe: deterministic, respects the vocabulary size, rejects bad options", () => {
  const text = corpus(generateProblems({ seed: 8, count: 400 }));
  assert.deepEqual(
    trainBpe(text, { vocabSize: 400 }).tokenizerJson,
    trainBpe(text, { vocabSize: 400 }).tokenizerJson,
  );
  for (const V of [300, 512, 777]) assert.equal(load(trainBpe(text, { vocabSize: V })).vocabSize, V);
  assert.throws(() => trainBpe(text, { vocabSize: 259 }), RangeError);
  assert.throws(() => trainBpe(text, { vocabSize: 70000 }), RangeError);
  assert.throws(() => trainBpe(text, { minFrequency: 0 }), RangeError);
  // A corpus without repeated pairs gives a vocabulary smaller than asked for.
  assert.ok(trainBpe("ab", { vocabSize: 1024 }).stats.vocabSize < 1024);
});

Deno.test("writeTokenizer: loadTokenizer reads the files back", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const files = trainBpe(corpus(generateProblems({ seed: 6, count: 200 })), {
      vocabSize: 400,
      modelMaxLength: 512,
    });
    await writeTokenizer(`${dir}/tok`, files);
    const tok = await loadTokenizer(async (name) => {
      try {
        return await Deno.readTextFile(`${dir}/tok/${name}`);
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return null;
        throw e;
      }
    }, `${dir}/tok`);
    const text = "Question:\nAnn has 3 pens.\n#### 3";
    assert.deepEqual(tok.encode(text), load(files).encode(text));
    const cfg = JSON.parse(await Deno.readTextFile(`${dir}/tok/tokenizer_config.json`));
    assert.equal(cfg.model_max_length, 512);
    assert.equal(cfg.add_bos_token, true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
