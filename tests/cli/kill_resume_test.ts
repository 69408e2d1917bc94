/**
 * Crash safety of training, end to end: a real `cllm train` process is killed with SIGKILL at
 * random moments ten times and resumed each time; the final checkpoint must be complete, load as a
 * model directory, resume, and hold exactly the weights of an uninterrupted run.
 */
import assert from "node:assert/strict";
import { directoryFiles, loadPretrained } from "../../model/mod.ts";
import { checkpointProblem, findLatestCheckpoint } from "../../train/checkpoint.ts";
import { rng } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";
import { writeTinyModel } from "../_tiny_model.ts";

const MAIN = new URL("../../cli/main.ts", import.meta.url).pathname;

function cllm(args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

async function finish(child: Deno.ChildProcess): Promise<{ code: number; stderr: string }> {
  const out = await child.output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The step latest.json names, or null. */
async function latestStep(out: string): Promise<number | null> {
  try {
    return JSON.parse(await Deno.readTextFile(`${out}/latest.json`)).step;
  } catch {
    return null;
  }
}

/** Whether a checkpoint is being written (its temporary directory exists). */
async function writing(out: string): Promise<boolean> {
  try {
    for await (const e of Deno.readDir(out)) if (e.name.startsWith(".checkpoint-")) return true;
  } catch {
    // Not made yet.
  }
  return false;
}

async function same(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([Deno.readFile(a), Deno.readFile(b)]);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

Deno.test(
  "cllm train: killed 10 times at random moments and resumed, it ends where an uninterrupted run does",
  {
    ...gpuTest,
  },
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "kill_resume_" });
    try {
      await writeTinyModel(`${dir}/m`, {
        maxPositionEmbeddings: 64,
        vocabSize: 64,
        numHeads: 4,
        numKvHeads: 2,
      });
      await Deno.writeTextFile(
        `${dir}/p.txt`,
        "t5 t6 t7\nt9 t8 t3 t4\nt12 t13 t14\nt20 t21 t5 t6\nt7 t7 t8\nt30 t31 t32 t33\n",
      );
      const collect = await finish(cllm([
        ...["trajectory", "--model", `${dir}/m`, "--prompts", `${dir}/p.txt`, "--out", `${dir}/t.jsonl`],
        ...["--block", "4", "--max-new-tokens", "16"],
      ]));
      assert.equal(collect.code, 0, collect.stderr);
      // A checkpoint every 2 steps, so that many kills land while one is being written.
      const train = (out: string) =>
        cllm([
          ...["train", "--model", `${dir}/m`, "--trajectories", `${dir}/t.jsonl`, "--out", out],
          ...["--steps", "120", "--batch", "2", "--checkpoint-every", "2", "--log-every", "2"],
          ...["--lr", "1e-3", "--seed", "3", "--resume"],
        ]);

      const reference = await finish(train(`${dir}/ref`));
      assert.equal(reference.code, 0, reference.stderr);

      const random = rng(2024);
      const steps: number[] = [];
      let midWrite = 0;
      for (let kill = 0; kill < 10; kill++) {
        const child = train(`${dir}/run`);
        // Three kinds of moment: anywhere in start-up (before any step); the moment a checkpoint's
        // temporary directory appears (mid-write); or once this run has written a checkpoint of its
        // own, a random 0-300 ms later. Waiting for events (not fixed times) keeps it independent of
        // the machine's load.
        const mode = random();
        if (mode < 0.2) {
          await sleep(random() * 800);
        } else if (mode < 0.6) {
          // The moment a checkpoint's temporary directory appears: mid-write.
          const deadline = performance.now() + 60_000;
          while (!(await writing(`${dir}/run`)) && performance.now() < deadline) await sleep(0);
        } else {
          const before = steps.at(-1) ?? 0;
          const deadline = performance.now() + 60_000;
          while (((await latestStep(`${dir}/run`)) ?? 0) <= before && performance.now() < deadline) {
            await sleep(20);
          }
          await sleep(random() * 300);
        }
        try {
          child.kill("SIGKILL");
        } catch {
          // It had already finished: the kill came too late to land.
        }
        await child.output();
        const found = await findLatestCheckpoint(`${dir}/run`);
        if (found) {
          // What latest.json names is complete at every moment.
          const latest = JSON.parse(await Deno.readTextFile(`${dir}/run/latest.json`)).checkpoint;
          assert.equal(await checkpointProblem(`${dir}/run/${latest}`), null, `after kill ${kill + 1}`);
          assert.equal(found.fellBack, false, `after kill ${kill + 1}`);
        }
        steps.push(found?.state.step ?? 0);
        // A temporary checkpoint directory left behind: this kill landed while one was being written.
        try {
          for await (const e of Deno.readDir(`${dir}/run`)) if (e.name.endsWith(".tmp")) midWrite++;
        } catch {
          // Killed before the run made its folder.
        }
      }
      console.log(
        `steps reached at the 10 kills: ${
          steps.join(", ")
        } (of 120); ${midWrite} left a temporary checkpoint directory`,
      );
      assert.ok(
        steps.filter((s) => s > 0 && s < 120).length >= 5,
        "at least half the kills landed mid-training",
      );
      const last = await finish(train(`${dir}/run`));
      assert.equal(last.code, 0, last.stderr);

      // The final checkpoint: complete, bit for bit the uninterrupted run's, and a model directory.
      const ref = await findLatestCheckpoint(`${dir}/ref`);
      const run = await findLatestCheckpoint(`${dir}/run`);
      assert.ok(ref && run);
      assert.equal(run.state.step, 120);
      assert.equal(await checkpointProblem(run.dir), null);
      for (const f of ["model.safetensors", "optimizer.safetensors", "tokenizer.json", "config.json"]) {
        assert.ok(
          await same(`${ref.dir}/${f}`, `${run.dir}/${f}`),
          `${f} differs from the uninterrupted run's`,
        );
      }
      const p = await loadPretrained(await testGpu(), directoryFiles(run.dir));
      assert.equal(p.tokenizer.vocabSize, 64);
      p.model.destroy();
      // And it resumes: a further run with --resume finds nothing left to do and exits cleanly.
      const again = await finish(train(`${dir}/run`));
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stderr, /resuming from .*checkpoint-120/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
