import assert from "node:assert/strict";
import { decode } from "../../decode/decode.ts";
import { runToEnd } from "../../decode/generation.ts";
import type { BlockTrajectory } from "../../decode/jacobi_stats.ts";
import { directoryFiles, formatPrompt, loadPretrained } from "../../model/mod.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

const MODEL_DIR = new URL("../../demo/models/gsm-tiny-cllm", import.meta.url).pathname;

Deno.test("Jacobi's live trajectory grows read by read and ends as the result's", gpuTest, async () => {
  const p = await loadPretrained(await testGpu(), directoryFiles(MODEL_DIR));
  const question =
    "Rose buys 4 balls for 8 dollars each and 2 notebooks for 4 dollars each. How many dollars?";
  const ids = p.tokenizer.encode(formatPrompt("gsm8k", { question }));
  const seen: BlockTrajectory[][] = [];
  const { result } = await runToEnd(decode(p.model, ids, { kind: "jacobi", blockSize: 16 }, {
    maxNewTokens: 80,
    eosIds: p.eosIds,
    iterationsPerReadback: 1,
    iterationsBehindReadback: 0,
    onTrajectory: (t) => seen.push(t),
  }));
  assert.ok("trajectory" in result);
  const forwards = (t: BlockTrajectory[]) => t.reduce((a, b) => a + b.states.length, 0);
  // One forward per read: every read shows one state more than the one before.
  assert.ok(seen.length >= 5, `${seen.length} reads`);
  for (let i = 1; i < seen.length; i++) {
    assert.equal(forwards(seen[i]), forwards(seen[i - 1]) + 1, `read ${i}`);
  }
  assert.deepEqual(seen.at(-1), result.trajectory);
  p.model.destroy();
});
