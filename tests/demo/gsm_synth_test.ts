import assert from "node:assert/strict";
import { GSM8K_TEST_FIXTURE, sharedPath, sharedTest } from "../_fixtures.ts";
import { TextTokenizer } from "../../model/tokenizer.ts";
import { trainBpe } from "../../demo/bpe.ts";
import { answerOf, encodeDocuments } from "../../train/gsm8k_eval.ts";
import {
  corpus,
  generateProblems,
  MAX_VALUE,
  type Problem,
  problemsToJsonl,
  splitOf,
  TEMPLATE_NAMES,
} from "../../demo/gsm_synth.ts";

const GSM8K_TEST = sharedPath(GSM8K_TEST_FIXTURE);

/**
 * An independent evaluator for calculator annotations (not the generator's): recursive descent over
 * + - * / and parentheses with the usual precedence.
 */
function evaluate(expr: string): number {
  const toks = expr.match(/\d+(?:\.\d+)?|[-+*/()]/g) ?? [];
  assert.equal(toks.join(""), expr.replace(/\s+/g, ""), `unexpected characters in ${JSON.stringify(expr)}`);
  let i = 0;
  const primary = (): number => {
    const t = toks[i++];
    if (t === "(") {
      const v = sum();
      assert.equal(toks[i++], ")", `unbalanced ${expr}`);
      return v;
    }
    assert.match(t, /^\d/, `expected a number in ${expr}`);
    return Number(t);
  };
  const product = (): number => {
    let v = primary();
    while (toks[i] === "*" || toks[i] === "/") v = toks[i++] === "*" ? v * primary() : v / primary();
    return v;
  };
  const sum = (): number => {
    let v = product();
    while (toks[i] === "+" || toks[i] === "-") v = toks[i++] === "+" ? v + product() : v - product();
    return v;
  };
  const v = sum();
  assert.equal(i, toks.length, `trailing tokens in ${expr}`);
  return v;
}

/** Checks one problem's answer: format, arithmetic, final number, ranges. */
function checkProblem(p: Problem, max = MAX_VALUE): void {
  const lines = p.answer.split("\n");
  const steps = lines.slice(0, -1);
  const final = lines[lines.length - 1];
  assert.ok(steps.length >= 2 && steps.length <= 4, `${steps.length} steps in ${p.answer}`);
  assert.match(final, /^#### \d+$/, `final line ${JSON.stringify(final)}`);
  let last = NaN;
  for (const line of steps) {
    // Exactly GSM8K's format: "<spaced expr> = <<expr=value>>value", once per line.
    const m = line.match(/^(.*?)(\d[\d +\-*/]*\d) = <<([^=<>]+)=(\d+)>>(\d+)(.*)$/);
    assert.ok(m, `step ${JSON.stringify(line)} lacks a calculator annotation`);
    const [, , spaced, compact, value, shown] = m;
    assert.equal(spaced.replaceAll(" ", ""), compact, `spaced and compact expressions differ: ${line}`);
    const v = evaluate(compact);
    assert.equal(v, Number(value), `${compact} = ${v}, not ${value}`);
    assert.equal(shown, value, `value after the annotation differs: ${line}`);
    assert.ok(Number.isInteger(v) && v >= 0 && v <= max, `value ${v} out of range: ${line}`);
    assert.equal(line.split("<<").length, 2, `one annotation per line: ${line}`);
    last = v;
  }
  assert.equal(answerOf(p.answer), last, `#### differs from the last computed value in ${p.answer}`);
  for (const n of p.question.match(/\d+/g) ?? []) assert.ok(Number(n) <= max, `${n} in ${p.question}`);
  assert.ok(p.question.endsWith("?"), p.question);
}

Deno.test("generateProblems: same seed, same problems; another seed, other problems", () => {
  const a = generateProblems({ seed: 42, count: 200 });
  const b = generateProblems({ seed: 42, count: 200 });
  const c = generateProblems({ seed: 43, count: 200 });
  assert.deepEqual(a, b);
  assert.notDeepEqual(a.map((p) => p.question), c.map((p) => p.question));
  assert.equal(a.length, 200);
  assert.equal(new Set(a.map((p) => p.question)).size, 200, "questions are unique");
});

Deno.test("generateProblems: every annotation is true, #### is the last value, 2-4 steps", () => {
  const problems = [
    ...generateProblems({ seed: 1, count: 3000, split: "train" }),
    ...generateProblems({ seed: 1, count: 500, split: "heldout" }),
  ];
  problems.forEach((p) => checkProblem(p));
  // Every template is used, with several distinct problems.
  const used = new Map<string, number>();
  for (const p of problems) used.set(p.template!, (used.get(p.template!) ?? 0) + 1);
  for (const name of TEMPLATE_NAMES) {
    assert.ok((used.get(name) ?? 0) >= 20, `template ${name} used ${used.get(name)}`);
  }
  assert.ok(TEMPLATE_NAMES.length >= 30, `${TEMPLATE_NAMES.length} templates`);
});

Deno.test("generateProblems with maxValue 100: every number at most 100, templates evenly used", () => {
  const problems = generateProblems({ seed: 3, count: 4000, maxValue: 100 });
  for (const p of problems) checkProblem(p, 100);
  const used = new Map<string, number>();
  for (const p of problems) used.set(p.template!, (used.get(p.template!) ?? 0) + 1);
  // Templates whose draws are often rejected keep their share: none falls far below the mean.
  const mean = problems.length / used.size;
  assert.ok(used.size >= 35, `${used.size} templates used`);
  for (const [name, k] of used) assert.ok(k > mean / 3, `template ${name} used ${k} times (mean ${mean})`);
  assert.throws(() => generateProblems({ seed: 1, count: 1, maxValue: 5 }), /at least 10/);
});

Deno.test("checkProblem (the test's own checker) rejects broken answers", () => {
  const q = "Ann has 3 bags. How many?";
  const good = "Ann has 3 * 4 = <<3*4=12>>12 apples.\nShe has 12 - 2 = <<12-2=10>>10 left.\n#### 10";
  checkProblem({ question: q, answer: good });
  for (
    const bad of [
      good.replace("<<3*4=12>>12", "<<3*4=13>>13"), // wrong arithmetic
      good.replace(">>12 apples", ">>11 apples"), // shown value differs
      good.replace("#### 10", "#### 11"), // final answer differs
      good.replace("3 * 4 =", "3 * 5 ="), // spaced expression differs
      "Ann has 3 * 4 = <<3*4=12>>12 apples.\n#### 12", // one step only
    ]
  ) assert.throws(() => checkProblem({ question: q, answer: bad }), bad);
});

Deno.test("generateProblems: each template alone gives valid problems", () => {
  for (const name of TEMPLATE_NAMES) {
    generateProblems({ seed: 5, count: 50, templates: [name] }).forEach((p) => checkProblem(p));
  }
});

Deno.test("generateProblems: train and held-out splits share no question, for any seeds", () => {
  const train = [1, 2].flatMap((seed) => generateProblems({ seed, count: 3000, split: "train" }));
  const heldout = [1, 3].flatMap((seed) => generateProblems({ seed, count: 400, split: "heldout" }));
  const trainQs = new Set(train.map((p) => p.question));
  for (const p of heldout) {
    assert.ok(!trainQs.has(p.question), `held-out question also in train: ${p.question}`);
    assert.equal(splitOf(p.question), "heldout");
  }
  for (const p of train) assert.equal(splitOf(p.question), "train");
  // Both splits are reachable from the same templates.
  const heldTemplates = new Set(heldout.map((p) => p.template));
  assert.ok(heldTemplates.size >= TEMPLATE_NAMES.length - 2, `${heldTemplates.size} templates in heldout`);
});

Deno.test("generateProblems: bad arguments are RangeErrors", () => {
  assert.throws(() => generateProblems({ seed: 1, count: -1 }), RangeError);
  assert.throws(() => generateProblems({ seed: 1, count: 1.5 }), RangeError);
  assert.throws(
    () => generateProblems({ seed: 1, count: 1, templates: ["nope"] }),
    /Unknown template "nope"/,
  );
  assert.deepEqual(generateProblems({ seed: 1, count: 0 }), []);
});

Deno.test("answerOf: the number after the last ####", () => {
  assert.equal(answerOf("a\n#### 48"), 48);
  assert.equal(answerOf("#### 1,000"), 1000);
  assert.equal(answerOf("#### $1,234,567."), 1234567);
  assert.equal(answerOf("#### -3"), -3);
  assert.equal(answerOf("#### 2.50"), 2.5);
  assert.equal(answerOf("#### 12\nmore\n#### 13"), 13);
  assert.equal(answerOf("#### 7 apples\nQuestion: 9"), 7);
  assert.equal(answerOf("#### 12, 13"), 12);
  assert.equal(answerOf("The answer is 12"), null);
  assert.equal(answerOf("#### \nfoo 5"), null);
  assert.equal(answerOf(""), null);
});

sharedTest([GSM8K_TEST_FIXTURE], "answerOf: real GSM8K test answers", async () => {
  const lines = (await Deno.readTextFile(GSM8K_TEST)).split("\n").filter((l) => l.trim());
  const items = lines.map((l) => JSON.parse(l) as { question: string; answer: string });
  assert.equal(items.length, 1319);
  // The first three items, as documented in the file.
  assert.deepEqual(items.slice(0, 3).map((it) => answerOf(it.answer)), [18, 3, 70000]);
  // Every answer's final line is "#### n" and answerOf reads n.
  for (const it of items) {
    const final = it.answer.split("\n").at(-1)!;
    assert.match(final, /^#### /);
    const expected = Number(final.slice(5).replaceAll(",", ""));
    assert.ok(Number.isFinite(expected), final);
    assert.equal(answerOf(it.answer), expected, final);
  }
});

Deno.test("corpus and encodeDocuments: BOS + prompt + answer + EOS per document, the same ids", () => {
  const problems = generateProblems({ seed: 3, count: 300 });
  const text = corpus(problems);
  assert.ok(text.startsWith("<s>Question:\n"));
  assert.equal(text.split("</s>").length - 1, problems.length);
  assert.ok(text.endsWith(problems.at(-1)!.answer + "</s>"));

  const { tokenizerJson, tokenizerConfigJson } = trainBpe(text, { vocabSize: 512 });
  const tok = TextTokenizer.fromJson(tokenizerJson, tokenizerConfigJson);
  const docs = encodeDocuments(tok, problems);
  assert.equal(docs.length, problems.length);
  for (const d of docs) {
    assert.equal(d[0], 1, "BOS first");
    assert.equal(d.at(-1), 2, "EOS last");
    assert.ok(!d.slice(1, -1).some((id) => id <= 2), "no special id inside a document");
  }
  // The literal "<s>"/"</s>" in the corpus become BOS/EOS, and each document tokenizes as alone.
  assert.deepEqual(tok.encode(text, { addBos: false }), docs.flat());
  // The prompt's ids are a prefix of the document's: generation continues exactly where training did.
  const prompt = tok.encode(`Question:\n${problems[0].question}\nAnswer:\nLet's think step by step.\n`);
  assert.deepEqual(docs[0].slice(0, prompt.length), prompt);
  assert.equal(tok.decode(docs[0]), text.slice(3, text.indexOf("</s>")));
});

Deno.test("problemsToJsonl: one GSM8K-style object per line", () => {
  const problems = generateProblems({ seed: 9, count: 3, split: "heldout" });
  const lines = problemsToJsonl(problems).trimEnd().split("\n");
  assert.equal(lines.length, 3);
  assert.deepEqual(lines.map((l) => JSON.parse(l)), problems);
  assert.equal(problemsToJsonl([]), "");
});
