import assert from "node:assert/strict";
import { sharedPath, sharedTest, STORIES_FIXTURE } from "../_fixtures.ts";
import { generateGreedy } from "../../decode/mod.ts";
import { convertLlama2c, directoryFiles, loadPretrained } from "../../model/mod.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

const SHARED = sharedPath(STORIES_FIXTURE);

sharedTest(
  [STORIES_FIXTURE],
  "stories260K converted from llama2.c reproduces golden.txt (greedy from BOS: llama2.c prints 200 new tokens)",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const dir = await Deno.makeTempDir();
    try {
      const out = `${dir}/stories260K`;
      await convertLlama2c({ checkpoint: `${SHARED}stories260K.bin`, tokenizer: `${SHARED}tok512.bin`, out });
      const p = await loadPretrained(gpu, directoryFiles(out), { maxLength: 512 });
      const gen = generateGreedy(p.model, [p.tokenizer.bosId!], { maxNewTokens: 200, eosIds: [] });
      let r = await gen.next();
      while (!r.done) r = await gen.next();
      const golden = await Deno.readTextFile(`${SHARED}golden.txt`);
      const text = p.tokenizer.decode(r.value.tokens);
      assert.equal(r.value.tokens.length, 200);
      assert.equal(text, golden);
      p.model.destroy();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
