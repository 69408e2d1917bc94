import assert from "node:assert/strict";
import { directoryCheckpointStore } from "../../train/checkpoint.ts";
import { requestGpu } from "../../core/mod.ts";
import { directoryFiles, loadPretrained, memoryFiles, type OpenByName } from "../../model/mod.ts";
import { memoryCheckpointStore } from "../../train/checkpoint_store.ts";
import { train, type TrainItem } from "../../train/trainer.ts";
import { rng } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";
import { writeTinyModel } from "../_tiny_model.ts";

/** CLLM-shaped samples over a repetitive "language" so there is something to learn. */
function samples(count: number, seed: number): TrainItem[] {
  const r = rng(seed);
  const items: TrainItem[] = [];
  for (let i = 0; i < count; i++) {
    const start = 3 + Math.floor(r() * 20);
    const seq = Array.from({ length: 14 }, (_, j) => 3 + ((start + 3 * j) % 40));
    const context = seq.slice(0, 6), fixedPoint = seq.slice(6);
    const noisy = fixedPoint.map((t, j) => (j > 0 && r() < 0.6 ? 3 + Math.floor(r() * 40) : t));
    const half = fixedPoint.map((t, j) => (j > 4 ? noisy[j] : t));
    items.push(
      i % 3 === 0
        ? { kind: "ar", tokens: seq }
        : { kind: "cllm", context, states: [noisy, half, fixedPoint], fixedPoint },
    );
  }
  return items;
}

Deno.test(
  "training: 30 steps lower the loss, and a resumed run reproduces the uninterrupted losses exactly",
  gpuTest,
  async () => {
    const dir = await Deno.makeTempDir();
    try {
      await writeTinyModel(`${dir}/base`, { vocabSize: 48, numHeads: 4, numKvHeads: 2, seed: 5 });
      const items = samples(40, 1);
      const run = async (out: string, stopAt: number | null, resume: boolean) => {
        // A fresh device per run, as separate processes would have.
        const gpu = await requestGpu();
        const from = resume ? JSON.parse(await Deno.readTextFile(`${out}/latest.json`)).checkpoint : null;
        const p = await loadPretrained(gpu, directoryFiles(from ? `${out}/${from}` : `${dir}/base`));
        const result = await train(p, items, {
          store: directoryCheckpointStore(out, `${dir}/base`),
          steps: 30,
          lr: 3e-3,
          batch: 2,
          eosIds: [2],
          seed: 9,
          logEvery: 5,
          checkpointEvery: 10,
          resume,
          shouldStop: (step) => step === stopAt,
        });
        p.model.destroy();
        gpu.destroy();
        return result;
      };
      const full = await run(`${dir}/full`, null, false);
      assert.equal(full.stopReason, "done");
      assert.equal(full.history.length, 6);
      const first = full.history[0], last = full.history.at(-1)!;
      assert.ok(last.arLoss < 0.8 * first.arLoss, `AR loss ${first.arLoss} -> ${last.arLoss}`);
      assert.ok(
        last.consistencyLoss < first.consistencyLoss,
        `consistency ${first.consistencyLoss} -> ${last.consistencyLoss}`,
      );

      const part = await run(`${dir}/part`, 15, false);
      assert.equal(part.stopReason, "interrupted");
      const resumed = await run(`${dir}/part`, null, true);
      assert.equal(resumed.steps, 30);
      const losses = (h: typeof full.history) => h.map((e) => [e.step, e.arLoss, e.consistencyLoss]);
      assert.deepEqual(losses(resumed.history), losses(full.history));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test("training: an AR sample's weight scales its loss", gpuTest, async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeTinyModel(`${dir}/base`, { vocabSize: 48, numHeads: 4, numKvHeads: 2, seed: 5 });
    const tokens = Array.from({ length: 12 }, (_, j) => 3 + ((5 + 3 * j) % 40));
    const loss = async (weight: number | undefined) => {
      // The shared device: lr 0 leaves nothing behind that a fresh device would clear.
      const p = await loadPretrained(await testGpu(), directoryFiles(`${dir}/base`));
      // lr 0: the weights never change, so the logged loss is the weighted loss of the same model.
      const result = await train(p, [{ kind: "ar", tokens, weight }], {
        store: directoryCheckpointStore(`${dir}/out-${weight}`, `${dir}/base`),
        steps: 1,
        lr: 0,
        batch: 1,
        labelSmoothing: 0,
        eosIds: [2],
        logEvery: 1,
      });
      p.model.destroy();
      return result.history[0].arLoss;
    };
    const plain = await loss(undefined), tripled = await loss(3);
    assert.ok(plain > 1, `loss ${plain}`);
    assert.ok(Math.abs(tripled / plain - 3) < 1e-4, `${plain} x3 -> ${tripled}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test(
  "training with a memory checkpoint store (as in a browser tab): resume gives the uninterrupted run's losses",
  gpuTest,
  async () => {
    const dir = await Deno.makeTempDir();
    try {
      await writeTinyModel(`${dir}/base`, { vocabSize: 48, numHeads: 4, numKvHeads: 2, seed: 5 });
      const items = samples(20, 2);
      const sideFiles = new Map([["tokenizer.json", await Deno.readFile(`${dir}/base/tokenizer.json`)]]);
      const saved: string[] = [];
      const store = memoryCheckpointStore(sideFiles, {
        onSave: (id, files) => saved.push(`${id}:${files.size}`),
      });
      const run = async (stopAt: number | null, resume: boolean, s = store) => {
        const gpu = await requestGpu();
        // A resumed run starts from the stored checkpoint's weights, as a page would reload them.
        const found = resume ? await s.latest() : null;
        const files = found
          ? memoryFiles("checkpoint", {
            "config.json": await readAll(found.open, "config.json"),
            "model.safetensors": await readAll(found.open, "model.safetensors"),
            "tokenizer.json": await readAll(found.open, "tokenizer.json"),
          })
          : directoryFiles(`${dir}/base`);
        const p = await loadPretrained(gpu, files);
        const result = await train(p, items, {
          store: s,
          steps: 12,
          lr: 3e-3,
          batch: 2,
          eosIds: [2],
          seed: 4,
          logEvery: 3,
          checkpointEvery: 6,
          resume,
          shouldStop: (step) => step === stopAt,
        });
        p.model.destroy();
        gpu.destroy();
        return result;
      };
      const full = await run(null, false, memoryCheckpointStore(sideFiles));
      const part = await run(6, false);
      assert.equal(part.stopReason, "interrupted");
      assert.equal(part.checkpoint, "checkpoint-6");
      const resumed = await run(null, true);
      assert.equal(resumed.steps, 12);
      const losses = (h: typeof full.history) => h.map((e) => [e.step, e.arLoss, e.consistencyLoss]);
      assert.deepEqual(losses(resumed.history), losses(full.history));
      // Every checkpoint: weights, optimizer, config, tokenizer, trainer state, loss chart.
      assert.deepEqual(saved, ["checkpoint-6:6", "checkpoint-12:6"]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

/** A stored checkpoint file's bytes. */
async function readAll(open: OpenByName, name: string): Promise<Uint8Array> {
  const source = (await open(name))!;
  return await source.read(0, source.size);
}
