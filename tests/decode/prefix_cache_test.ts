import assert from "node:assert/strict";
import { decode } from "../../decode/decode.ts";
import type { Decoder } from "../../decode/decoder.ts";
import { PrefixCache, runToEnd } from "../../decode/generation.ts";
import { directoryFiles, formatPrompt, loadPretrained } from "../../model/mod.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

const MODEL_DIR = new URL("../../demo/models/gsm-tiny-cllm", import.meta.url).pathname;

Deno.test(
  "a prefix cache across turns gives every decoder the same tokens as prefilling everything",
  gpuTest,
  async () => {
    const p = await loadPretrained(await testGpu(), directoryFiles(MODEL_DIR));
    const encode = (q: string) =>
      p.tokenizer.encode(formatPrompt("gsm8k", { question: q }), { addBos: false });
    const turn1 = [1, ...encode("Rose buys 4 balls for 8 dollars each. How many dollars does she spend?")];
    const more = encode("Sam has 9 pens and buys 3 more. How many pens does Sam have?");
    const decoders: Decoder[] = [
      { kind: "ar" },
      { kind: "jacobi", blockSize: 16 },
      { kind: "jacobi", blockSize: 8, sliding: true },
      { kind: "lookahead" },
      { kind: "ar", sampling: { temperature: 0.8, topP: 0.9 } },
    ];
    try {
      for (const d of decoders) {
        const o = { maxNewTokens: 40, eosIds: p.eosIds, seed: 3 };
        const prefix = new PrefixCache();
        const first =
          (await runToEnd(decode(p.model, turn1, d, { ...o, prefixCache: prefix }))).result.tokens;
        const fresh1 = (await runToEnd(decode(p.model, turn1, d, o))).result.tokens;
        assert.deepEqual(first, fresh1, `${d.kind}: turn 1`);
        assert.equal(prefix.tokens.length, turn1.length + first.length - 1, `${d.kind}: rows kept`);
        // Turn 2 extends turn 1 and its reply: only the new part is prefilled.
        const turn2 = [...turn1, ...first, 1, ...more]; // (the reply ends in EOS; a new document starts)
        const second = (await runToEnd(decode(p.model, turn2, d, { ...o, prefixCache: prefix }))).result;
        assert.equal(prefix.reused, turn1.length + first.length - 1, `${d.kind}: rows reused`);
        const fresh2 = (await runToEnd(decode(p.model, turn2, d, o))).result;
        assert.deepEqual(second.tokens, fresh2.tokens, `${d.kind}: turn 2`);
        assert.ok(second.tokens.length > 5, `${d.kind}: turn 2 generated`);
        // A prompt that diverges early reuses only the common part.
        const other = [...turn1.slice(0, 5), ...more];
        const third =
          (await runToEnd(decode(p.model, other, d, { ...o, prefixCache: prefix }))).result.tokens;
        assert.equal(prefix.reused, 5, `${d.kind}: common prefix`);
        assert.deepEqual(
          third,
          (await runToEnd(decode(p.model, other, d, o))).result.tokens,
          `${d.kind}: turn 3`,
        );
        // A generation stopped early leaves nothing to reuse.
        const gen = decode(p.model, turn2, d, { ...o, prefixCache: prefix });
        await gen.next();
        await gen.return(undefined as never);
        await runToEnd(decode(p.model, turn2, d, { ...o, prefixCache: prefix }));
        assert.equal(prefix.reused, 0, `${d.kind}: after a cancelled generation`);
        prefix.destroy();
      }
    } finally {
      p.model.destroy();
    }
  },
);
