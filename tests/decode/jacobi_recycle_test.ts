import assert from "node:assert/strict";
import { decode } from "../../decode/decode.ts";
import type { Decoder } from "../../decode/decoder.ts";
import { runToEnd } from "../../decode/generation.ts";
import { directoryFiles, formatPrompt, loadPretrained } from "../../model/mod.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

const MODEL_DIR = new URL("../../demo/models/gsm-tiny-cllm", import.meta.url).pathname;

const QUESTIONS = [
  "Rose buys 4 balls for 8 dollars each and 2 notebooks for 4 dollars each. How many dollars does she spend?",
  "A class has 23 students. 9 more students join. How many students does the class have now?",
  "Tom has 40 apples. He gives 12 to his friend. How many apples does Tom have left?",
];

Deno.test(
  "multiblock and recycling decoders on the embedded CLLM: greedy AR's text, and recycled branches do win",
  gpuTest,
  async () => {
    const p = await loadPretrained(await testGpu(), directoryFiles(MODEL_DIR), { maxRows: 64 });
    const settings: Decoder[] = [
      { kind: "jacobi", blockSize: 8, blocks: 2 },
      { kind: "jacobi", blockSize: 16, recycle: 2 },
      { kind: "jacobi", blockSize: 8, blocks: 2, recycle: 1, recycleLength: 8 },
    ];
    let recycled = 0;
    for (const question of QUESTIONS) {
      const ids = p.tokenizer.encode(formatPrompt("gsm8k", { question }));
      const options = { maxNewTokens: 96, eosIds: p.eosIds };
      const ar = await runToEnd(decode(p.model, ids, { kind: "ar" }, options));
      for (const d of settings) {
        const { result } = await runToEnd(decode(p.model, ids, d, options));
        assert.deepEqual(result.tokens, ar.result.tokens, `${JSON.stringify(d)} on "${question}"`);
        if ("recycledTokens" in result.stats) recycled += result.stats.recycledTokens;
      }
    }
    assert.ok(recycled > 0, "recycled branches committed tokens the window had not verified");
    // Settings that do not combine are refused before anything runs, saying why.
    const ids = p.tokenizer.encode(formatPrompt("gsm8k", { question: QUESTIONS[0] }));
    const run = (d: Decoder) => decode(p.model, ids, d, { maxNewTokens: 8, eosIds: p.eosIds });
    assert.throws(() => run({ kind: "jacobi", blockSize: 8, blocks: 2, sliding: true }), /do not combine/);
    assert.throws(
      () => run({ kind: "jacobi", blockSize: 8, recycle: 1, sampling: { temperature: 0.7 } }),
      /greedy-only/,
    );
    assert.throws(() => run({ kind: "jacobi", blockSize: 32, blocks: 2, recycle: 1 }), /maxRows/);
    p.model.destroy();
  },
);
