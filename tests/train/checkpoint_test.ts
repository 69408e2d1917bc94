import assert from "node:assert/strict";
import { parseLlamaConfig } from "../../model/config.ts";
import {
  CHECKPOINT_WRITE_STEPS,
  type CheckpointContents,
  checkpointProblem,
  findLatestCheckpoint,
  readSideFiles,
  writeCheckpoint,
} from "../../train/checkpoint.ts";

const CONFIG = parseLlamaConfig({
  hidden_size: 8,
  intermediate_size: 16,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  num_key_value_heads: 2,
  vocab_size: 16,
  max_position_embeddings: 32,
}, "test config");

/** A small checkpoint whose values depend on the step, so two checkpoints never look alike. */
function contents(step: number): CheckpointContents {
  const tensor = (name: string, n: number) => ({
    name,
    shape: [n],
    data: Float32Array.from({ length: n }, (_, i) => step + i / 100),
  });
  return {
    weights: [tensor("model.norm.weight", 8), tensor("model.embed_tokens.weight", 128)],
    optimizer: [tensor("m.model.norm.weight", 8), tensor("v.model.norm.weight", 8)],
    config: CONFIG,
    sideFiles: new Map([
      ["tokenizer.json", new TextEncoder().encode('{"model": {}}')],
      ["tokenizer_config.json", new TextEncoder().encode("{}")],
    ]),
    state: { step, epoch: 0, index: step, rng: 7 * step, history: [] },
    lossChart: "<svg/>",
  };
}

async function copyDir(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isDirectory) await copyDir(`${from}/${e.name}`, `${to}/${e.name}`);
    else await Deno.copyFile(`${from}/${e.name}`, `${to}/${e.name}`);
  }
}

async function names(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

/** latest.json always names a complete checkpoint: the invariant every fault must keep. */
async function assertLatestComplete(out: string, what: string): Promise<number> {
  const latest = JSON.parse(await Deno.readTextFile(`${out}/latest.json`));
  const problem = await checkpointProblem(`${out}/${latest.checkpoint}`);
  assert.equal(
    problem,
    null,
    `${what}: latest.json names ${latest.checkpoint}, which is incomplete: ${problem}`,
  );
  const found = await findLatestCheckpoint(out);
  assert.ok(found, what);
  assert.equal(found.fellBack, false, `${what}: no fallback needed`);
  return found.state.step;
}

Deno.test("checkpoint writer: a fault at each of its steps leaves latest.json naming a complete checkpoint", async () => {
  const root = await Deno.makeTempDir({ prefix: "checkpoint_faults_" });
  try {
    const base = `${root}/base`;
    await writeCheckpoint(base, contents(10));
    assert.equal(await assertLatestComplete(base, "first write"), 10);
    assert.deepEqual(await names(base), ["checkpoint-10", "latest.json"]);
    for (const [i, failAt] of CHECKPOINT_WRITE_STEPS.entries()) {
      const out = `${root}/fault-${i}`;
      await copyDir(base, out);
      const steps: string[] = [];
      await assert.rejects(
        () =>
          writeCheckpoint(out, contents(20), {
            beforeStep: (s) => {
              steps.push(s);
              if (s === failAt) throw new Error(`injected fault before ${s}`);
            },
          }),
        /injected fault/,
      );
      assert.deepEqual(steps, CHECKPOINT_WRITE_STEPS.slice(0, i + 1), `steps run before ${failAt}`);
      // Until latest.json is replaced it names the old checkpoint; from then on the new one.
      const expected = i > CHECKPOINT_WRITE_STEPS.indexOf("point-latest") ? 20 : 10;
      assert.equal(await assertLatestComplete(out, `fault before ${failAt}`), expected, failAt);
      // The next write (a resumed run) succeeds and leaves only the new checkpoint behind.
      await writeCheckpoint(out, contents(30));
      assert.equal(await assertLatestComplete(out, `write after a fault before ${failAt}`), 30);
      assert.deepEqual(await names(out), ["checkpoint-30", "latest.json"], `leftovers after ${failAt}`);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("checkpoint writer: a file cut short inside the temporary directory is never named", async () => {
  const out = await Deno.makeTempDir({ prefix: "checkpoint_cut_" });
  try {
    await writeCheckpoint(out, contents(10));
    // A kill while the weights are being written: the temporary file holds part of them.
    await assert.rejects(() =>
      writeCheckpoint(out, contents(20), {
        beforeStep: async (s) => {
          if (s !== "write-optimizer") return;
          const f = `${out}/.checkpoint-20.tmp/model.safetensors`;
          const bytes = await Deno.readFile(f);
          await Deno.writeFile(f, bytes.subarray(0, bytes.length >> 1));
          throw new Error("killed");
        },
      })
    );
    assert.equal(await assertLatestComplete(out, "cut weights"), 10);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("findLatestCheckpoint: falls back to the newest complete checkpoint when latest.json is wrong", async () => {
  const out = await Deno.makeTempDir({ prefix: "checkpoint_fallback_" });
  try {
    assert.equal(await findLatestCheckpoint(out), null, "empty folder");
    assert.equal(await findLatestCheckpoint(`${out}/missing`), null, "no folder");
    // Three checkpoints side by side (as a copy of a run folder could hold), latest.json names 30.
    for (const step of [10, 20, 30]) {
      const dir = `${out}/step${step}`;
      await writeCheckpoint(dir, contents(step));
      await Deno.rename(`${dir}/checkpoint-${step}`, `${out}/checkpoint-${step}`);
      await Deno.remove(dir, { recursive: true });
    }
    await Deno.writeTextFile(`${out}/latest.json`, JSON.stringify({ checkpoint: "checkpoint-30", step: 30 }));
    assert.equal((await findLatestCheckpoint(out))?.state.step, 30);
    // Its tokenizer is gone (the incident this module was written for): fall back to 20.
    await Deno.remove(`${out}/checkpoint-30/tokenizer.json`);
    assert.match((await checkpointProblem(`${out}/checkpoint-30`))!, /tokenizer\.json is missing/);
    let found = await findLatestCheckpoint(out);
    assert.deepEqual([found?.state.step, found?.fellBack], [20, true]);
    // A truncated weights file in 20: fall back to 10.
    const w = `${out}/checkpoint-20/model.safetensors`;
    const bytes = await Deno.readFile(w);
    await Deno.writeFile(w, bytes.subarray(0, bytes.length - 4));
    assert.match((await checkpointProblem(`${out}/checkpoint-20`))!, /model\.safetensors/);
    found = await findLatestCheckpoint(out);
    assert.deepEqual([found?.state.step, found?.fellBack], [10, true]);
    // latest.json itself unreadable: the same fallback.
    await Deno.writeTextFile(`${out}/latest.json`, "{");
    assert.equal((await findLatestCheckpoint(out))?.state.step, 10);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("checkpoint writer: rewriting the step latest.json names keeps it until the new one is in place", async () => {
  const out = await Deno.makeTempDir({ prefix: "checkpoint_same_step_" });
  try {
    await writeCheckpoint(out, contents(10));
    // A resumed run that writes step 10 again: a fault at any step keeps a complete checkpoint named.
    for (const failAt of CHECKPOINT_WRITE_STEPS) {
      await assert.rejects(() =>
        writeCheckpoint(out, contents(10), {
          beforeStep: (s) => {
            if (s === failAt) throw new Error("fault");
          },
        })
      );
      assert.equal(await assertLatestComplete(out, `same step, fault before ${failAt}`), 10);
    }
    const dir = await writeCheckpoint(out, contents(10));
    assert.equal(await assertLatestComplete(out, "same step"), 10);
    assert.deepEqual(await names(out), [dir.slice(out.length + 1), "latest.json"]);
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});

Deno.test("readSideFiles: tokenizer.json is required, the others optional", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(() => readSideFiles(dir), /no tokenizer\.json/);
    await Deno.writeTextFile(`${dir}/tokenizer.json`, "{}");
    assert.deepEqual([...(await readSideFiles(dir)).keys()], ["tokenizer.json"]);
    await Deno.writeTextFile(`${dir}/generation_config.json`, "{}");
    assert.deepEqual([...(await readSideFiles(dir)).keys()], ["tokenizer.json", "generation_config.json"]);
    await assert.rejects(
      () => writeCheckpoint(`${dir}/out`, { ...contents(1), sideFiles: new Map() }),
      RangeError,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
