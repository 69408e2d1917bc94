// Per-kernel profile: one AR row vs an n-row Jacobi forward at the same position.
import { readTensors, requestGpu, Step, Tensor } from "../core/mod.ts";
import { prefill } from "../decode/generation.ts";
import { directoryFiles, loadPretrained } from "../model/mod.ts";
const gpu = await requestGpu();
const p = await loadPretrained(gpu, directoryFiles(Deno.args[0] ?? "models/gsm-tiny-cllm"), {
  maxLength: 512,
});
const m = p.model;
const prompt = p.tokenizer.encode(
  "Question: Ann has 3 bags of apples. Each bag has 4 apples. How many apples does Ann have?\nAnswer:",
);
const s = prefill(m, prompt, 300);
const P = prompt.length;
const V = m.config.vocabSize;
const pred = new Tensor(gpu, [64], "u32", "pred");
for (const rows of [1, 4, 8, 16, 32]) {
  const logits = new Tensor(gpu, [rows, V], "f32", "logits");
  const run = (k: number, timing: boolean) => {
    const step = new Step(gpu, "p", timing ? { timing: 200 } : {});
    for (let i = 0; i < k; i++) {
      m.forward(step, {
        tokens: s.tokens,
        tokenOffset: P,
        rows,
        position: s.cache.at(P),
        cache: s.cache,
        logits,
        lastOnly: rows === 1,
      });
      m.argmax(step, logits, pred, 0);
    }
    return step.submit();
  };
  run(3, false);
  await readTensors(gpu, [pred]);
  const t0 = performance.now();
  run(40, false);
  await readTensors(gpu, [pred]);
  const ms = (performance.now() - t0) / 40;
  const tp = run(1, true);
  await readTensors(gpu, [pred]);
  const t = await tp!;
  const agg: Record<string, number> = {};
  for (const k of t) {
    const name = k.label.replace(/\[.*$/, "");
    agg[name] = (agg[name] ?? 0) + k.ns / 1e6;
  }
  const total = Object.values(agg).reduce((a, b) => a + b, 0);
  console.log(
    `rows ${rows}: ${ms.toFixed(2)} ms/forward wall (40 per submit); timed sum ${
      total.toFixed(2)
    } ms, ${t.length} dispatches`,
  );
  console.log(
    "  " + Object.entries(agg).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", "),
  );
}
