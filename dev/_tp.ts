import { requestGpu } from "../core/mod.ts";
import { directoryFiles, loadPretrained } from "../model/mod.ts";
import { encodeDocuments } from "../train/gsm_synth.ts";
import { train, type TrainItem } from "../train/trainer.ts";
const [W, B, steps] = Deno.args.map(Number);
const gpu = await requestGpu();
const p = await loadPretrained(gpu, directoryFiles(".make-models/init"), { maxRows: Math.max(W, 64) });
const probs = (await Deno.readTextFile(".make-models/train.jsonl")).trim().split("\n").slice(0, 3000).map((
  l,
) => JSON.parse(l));
const docs = encodeDocuments(p.tokenizer, probs);
const items: TrainItem[] = [];
if (W === 0) { for (const d of docs) items.push({ kind: "ar", tokens: d }); }
else {
  const all = docs.flat();
  for (let i = 0; i + W <= all.length; i += W) items.push({ kind: "ar", tokens: all.slice(i, i + W) });
}
await Deno.remove("/tmp/tp/out", { recursive: true }).catch(() => {});
const r = await train(p, items, {
  out: "/tmp/tp/out",
  modelDir: ".make-models/init",
  steps,
  lr: 2e-3,
  batch: B,
  labelSmoothing: 0,
  logEvery: Math.floor(steps / 2),
  checkpointEvery: 100000,
  eosIds: p.eosIds,
});
console.log(
  W,
  B,
  r.history.map((h) => `${h.tokensPerSecond.toFixed(0)} tok/s loss ${h.arLoss.toFixed(3)}`).join(" | "),
);
