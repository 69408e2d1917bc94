import { readTensors, Step, Tensor } from "/work/main/core/mod.ts";
import { testGpu } from "/work/main/tests/_gpu.ts";
import { withPeakedTinyLlama } from "/work/main/tests/_tiny_model.ts";
import { decode } from "/work/main/decode/decode.ts";
import { runToEnd } from "/work/main/decode/generation.ts";
const gpu = await testGpu();
await withPeakedTinyLlama(gpu, 5, { maxLength: 256, maxRows: 16 }, async (model) => {
  const prompt = [1, 9, 4, 33, 17];
  const out: number[][] = [];
  for (const path of ["separate", "fused"] as const) {
    model.forwardPath = path;
    out.push((await runToEnd(decode(model, prompt, { kind: "jacobi", blockSize: 4 }, { maxNewTokens: 20 }))).result.tokens);
  }
  console.log(out);
});
