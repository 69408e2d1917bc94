import assert from "node:assert/strict";
import { GSM8K_TEST_FIXTURE, sharedPath, sharedTest } from "../_fixtures.ts";
import { evalCommand } from "../../cli/eval.ts";
import { FormatError } from "../../model/format_error.ts";
import { directoryFiles, loadPretrained } from "../../model/mod.ts";
import { trainBpe, writeTokenizer } from "../../demo/bpe.ts";
import {
  answersEqual,
  type EvalItemResult,
  evaluateGsm8k,
  parseGsm8k,
  predictedAnswer,
  readGsm8k,
  scoreGeneration,
  summarizeEval,
} from "../../train/gsm8k_eval.ts";
import { corpus, generateProblems, problemsToJsonl } from "../../demo/gsm_synth.ts";
import { gpuTest, testGpu } from "../_gpu.ts";
import { writeTinyModel } from "../_tiny_model.ts";

Deno.test("predictedAnswer: cut at Question, then the number after the last ####", () => {
  assert.equal(predictedAnswer("3 * 4 = <<3*4=12>>12\n#### 12"), 12);
  assert.equal(predictedAnswer("#### 12\nQuestion:\nWhat?\nAnswer:\n#### 99"), 12);
  assert.equal(predictedAnswer("#### 12\n#### 13"), 13);
  assert.equal(predictedAnswer("So the answer is 12."), null);
  assert.equal(predictedAnswer("Question: #### 5"), null);
  assert.equal(predictedAnswer("#### $1,000.00"), 1000);
  assert.equal(predictedAnswer(""), null);
});

Deno.test("answersEqual and scoreGeneration: numeric comparison", () => {
  assert.ok(answersEqual(1000, 1000));
  assert.ok(answersEqual(0.5, 0.5));
  assert.ok(!answersEqual(999, 1000));
  assert.ok(!answersEqual(null, 3));
  assert.ok(!answersEqual(3, null));
  assert.ok(!answersEqual(null, null));
  const gold = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n#### 1,800";
  const cases: [string, boolean][] = [
    ["#### 1800", true],
    ["#### 1,800", true],
    ["#### $1800.0", true],
    ["The answer is\n#### 1800 dollars\nQuestion: next\n#### 5", true],
    ["#### 180", false],
    ["#### 1800\nQuestion\n", true],
    ["1800", false], // no #### marker
    ["#### 1799\n#### 1800", true], // the last one counts
  ];
  for (const [gen, ok] of cases) {
    const s = scoreGeneration(gen, gold);
    assert.equal(s.gold, 1800);
    assert.equal(s.correct, ok, JSON.stringify(gen));
  }
  assert.deepEqual(scoreGeneration("#### 3", "no gold here"), { gold: null, predicted: 3, correct: false });
});

sharedTest([GSM8K_TEST_FIXTURE], "parseGsm8k: the real test set; line numbers in errors", async () => {
  const items = await readGsm8k(sharedPath(GSM8K_TEST_FIXTURE));
  assert.equal(items.length, 1319);
  assert.deepEqual(Object.keys(items[0]), ["question", "answer"]);
  assert.throws(() => parseGsm8k('{"question": "a", "answer": "#### 1"}\n{oops\n', "d.jsonl"), (e: Error) => {
    assert.ok(e instanceof FormatError);
    assert.match(e.message, /d\.jsonl.*line 2/);
    return true;
  });
  assert.throws(
    () => parseGsm8k('\n{"question": "a"}\n', "d.jsonl"),
    /line 2 lacks a string "question" or "answer"/,
  );
  assert.throws(() => parseGsm8k("\n\n", "d.jsonl"), /no items/);
});

Deno.test("summarizeEval: totals and ratios", () => {
  const r = (correct: boolean, tokens: number, forwards: number, seconds: number): EvalItemResult => ({
    id: 0,
    question: "q",
    gold: 1,
    predicted: correct ? 1 : null,
    correct,
    tokens,
    forwards,
    tokensPerForward: tokens / forwards,
    seconds,
    stopReason: "eos",
    output: "",
  });
  const s = summarizeEval([r(true, 10, 5, 1), r(false, 30, 10, 3)], "jacobi n=8");
  assert.equal(s.correct, 1);
  assert.equal(s.accuracy, 0.5);
  assert.equal(s.missingPrediction, 1);
  assert.equal(s.tokensPerForward, 40 / 15);
  assert.equal(s.meanItemTokensPerForward, (2 + 3) / 2);
  assert.equal(s.tokensPerSecond, 10);
  assert.equal(summarizeEval([], "ar").accuracy, 0);
});

Deno.test({
  name: "eval gsm8k end to end: a tiny random model with a trained tokenizer; AR and Jacobi agree",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      // Tokenizer trained on synthetic problems, model sized to its vocabulary.
      const files = trainBpe(corpus(generateProblems({ seed: 1, count: 300 })), { vocabSize: 512 });
      await writeTinyModel(`${dir}/m`, {
        vocabSize: files.stats.vocabSize,
        maxPositionEmbeddings: 256,
        scale: 4,
      });
      await writeTokenizer(`${dir}/m`, files);
      const problems = generateProblems({ seed: 2, count: 3, split: "heldout" });
      const long = { question: "word ".repeat(400).trim() + "?", answer: "#### 1" };
      await Deno.writeTextFile(`${dir}/data.jsonl`, problemsToJsonl([...problems, long]));

      // The library call: greedy AR and Jacobi give the same generations.
      const gpu = await testGpu();
      const p = await loadPretrained(gpu, directoryFiles(`${dir}/m`));
      try {
        const items = [...problems, long];
        const common = { maxNewTokens: 12, contextReserve: 4 };
        const ar = await evaluateGsm8k(p, items, { ...common, decoder: { kind: "ar" } });
        const jac = await evaluateGsm8k(p, items, { ...common, decoder: { kind: "jacobi", blockSize: 4 } });
        assert.deepEqual(jac.results.map((r) => r.output), ar.results.map((r) => r.output));
        const sliding = await evaluateGsm8k(p, items, {
          ...common,
          decoder: { kind: "jacobi", blockSize: 4, sliding: true },
        });
        assert.deepEqual(sliding.results.map((r) => r.output), ar.results.map((r) => r.output));
        assert.equal(sliding.summary.decoder, "jacobi sliding n=4");
        assert.equal(ar.summary.items, 4);
        assert.deepEqual(ar.results.map((r) => r.gold), [
          ...problems.map((q) => Number(q.answer.split("#### ")[1])),
          1,
        ]);
        assert.equal(ar.results[3].stopReason, "context", "a prompt longer than the context is skipped");
        for (const r of ar.results.slice(0, 3)) {
          assert.ok(r.tokens >= 1 && r.tokens <= 12);
          assert.equal(r.forwards, r.tokens, "AR: one token per forward");
        }
        for (const r of jac.results.slice(0, 3)) {
          assert.ok(r.forwards >= 1);
          assert.equal(r.tokensPerForward, r.tokens / r.forwards);
        }
      } finally {
        p.model.destroy();
      }

      // The command: prints accuracy and writes the log.
      const log = `${dir}/log.jsonl`;
      const printed: string[] = [];
      const orig = console.log;
      console.log = (...a: unknown[]) => printed.push(a.join(" "));
      try {
        await evalCommand([
          "gsm8k",
          ...["--model", `${dir}/m`, "--data", `${dir}/data.jsonl`, "--decoder", "jacobi", "--block", "4"],
          ...["--limit", "2", "--max-new-tokens", "6", "--log", log],
        ]);
      } finally {
        console.log = orig;
      }
      const text = printed.join("\n");
      assert.match(text, /accuracy: \d\/2 correct/);
      assert.match(text, /decoder jacobi n=4: \d+ tokens in .* tokens\/s, .* tokens per forward/);
      const lines = (await Deno.readTextFile(log)).trimEnd().split("\n").map((l) => JSON.parse(l));
      assert.equal(lines.length, 2);
      assert.deepEqual(Object.keys(lines[0]), [
        "id",
        "question",
        "gold",
        "predicted",
        "correct",
        "tokens",
        "forwards",
        "tokensPerForward",
        "seconds",
        "stopReason",
        "output",
      ]);
      assert.equal(lines[1].id, 1);
      assert.equal(lines[0].question, problems[0].question);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("eval: usage errors", async () => {
  await assert.rejects(() => evalCommand(["mmlu"]), /unknown benchmark "mmlu"/);
  await assert.rejects(() => evalCommand(["gsm8k", "--data", "x"]), /--model is required/);
  await assert.rejects(
    () => evalCommand(["gsm8k", "--model", "m", "--data", "x", "--decoder", "beam"]),
    /Unknown decoder "beam"/,
  );
});
