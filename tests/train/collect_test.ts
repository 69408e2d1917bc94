import assert from "node:assert/strict";
import { sharedPath, sharedTest, STORIES_FIXTURE } from "../_fixtures.ts";
import { trajectoryCommand } from "../../cli/trajectory.ts";
import { generateGreedy } from "../../decode/ar.ts";
import { convertLlama2c, directoryFiles, loadPretrained, type Pretrained } from "../../model/mod.ts";
import {
  blockRecords,
  type CollectPrompt,
  collectTrajectories,
  expectedItrs,
  promptTokens,
} from "../../train/collect.ts";
import {
  readTrajectories,
  type TrajectoryRecord,
  type TrajectorySample,
} from "../../train/trajectory_file.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

const SHARED = sharedPath(STORIES_FIXTURE);

const PROMPTS: CollectPrompt[] = [
  { id: 0, text: "Once upon a time", label: " there was a cat." },
  { id: 1, text: "Tom and his sister went to the park.", label: " They played." },
  { id: 2, text: "Lily liked to play", label: " with her ball." },
];

/** Converts stories260K into a temporary directory; returns the model directory and a cleanup. */
async function convertModel(): Promise<{ model: string; remove: () => Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "collect_test_" });
  const model = `${dir}/stories260K`;
  await convertLlama2c({
    checkpoint: `${SHARED}stories260K.bin`,
    tokenizer: `${SHARED}tok512.bin`,
    out: model,
  });
  return { model, remove: () => Deno.remove(dir, { recursive: true }) };
}

async function greedy(p: Pretrained, ids: number[], maxNewTokens: number): Promise<number[]> {
  const gen = generateGreedy(p.model, ids, { maxNewTokens, eosIds: p.eosIds });
  let r = await gen.next();
  while (!r.done) r = await gen.next();
  return r.value.tokens;
}

function toSamples(records: TrajectoryRecord[], vocabSize: number): TrajectorySample[] {
  const text = records.map((r) => JSON.stringify(r)).join("\n") + "\n";
  return readTrajectories(text, { vocabSize, file: "records", strict: true });
}

Deno.test("blockRecords: a final block cut short is dropped, repetition filtered, expectedItrs agrees", () => {
  const prompt = { id: 4, text: "x" };
  const ids = [1, 5];
  // n = 3; EOS (2) at position 1 of block 2 ends the generation early.
  const tokens = [10, 11, 12, 13, 14, 15, 16, 2];
  const trajectory = [
    { block: 0, states: [[10, 5, 5], [10, 11, 5], [10, 11, 12]] },
    { block: 1, states: [[13, 1, 1], [13, 14, 15]] },
    { block: 2, states: [[16, 5, 1], [16, 2, 9]] },
  ];
  const r = blockRecords(prompt, ids, { tokens, trajectory }, { blockSize: 3, eosIds: [2] });
  assert.equal(r.records.length, 2);
  assert.equal(r.droppedPartial, 1);
  assert.equal(r.filtered, 0);
  assert.deepEqual(r.records[1].prompt_ids, [[1, 5, 10, 11, 12]]);
  assert.deepEqual(r.records[1].teacher_output_ids, [[1, 5, 10, 11, 12, 13, 14, 15]]);
  for (const rec of r.records) assert.deepEqual(rec.complete_teacher_output_ids, [1, 5, ...tokens]);
  assert.deepEqual(expectedItrs([1, 5, ...tokens], 2, 3, [2]), [0, 1]);
  // EOS as the block's last token: the block is a full fixed point and kept.
  const full = blockRecords(prompt, ids, {
    tokens: tokens.slice(0, 5).concat([2]),
    trajectory: [trajectory[0], { block: 1, states: [[13, 1, 1], [13, 14, 2]] }],
  }, { blockSize: 3, eosIds: [2] });
  assert.equal(full.records.length, 2);
  assert.equal(full.droppedPartial, 0);
  // A run of 4 equal tokens (run = 4) completing in block 1: blocks 1 and 2 are filtered.
  const rep = [10, 11, 7, 7, 7, 7, 8, 9, 6];
  const repR = blockRecords(prompt, ids, {
    tokens: rep,
    trajectory: [0, 1, 2].map((k) => ({ block: k, states: [rep.slice(3 * k, 3 * k + 3)] })),
  }, { blockSize: 3, eosIds: [2], repetitionRun: 4 });
  assert.deepEqual(repR.records.map((x) => x.jacobian_itr_id), ["itr_0"]);
  assert.equal(repR.filtered, 2);
  assert.deepEqual(expectedItrs([...ids, ...rep], 2, 3, [2], 4), [0]);
  // A non-final block whose last state is not what was committed is a decoder bug.
  assert.throws(() =>
    blockRecords(prompt, ids, {
      tokens,
      trajectory: [{ block: 0, states: [[10, 11, 99]] }, ...trajectory.slice(1)],
    }, { blockSize: 3, eosIds: [2] }), /decoder bug/);
});

sharedTest(
  [STORIES_FIXTURE],
  "collectTrajectories on stories260K: fixed points, teachers, chaining, greedy AR, labels, partial blocks",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const converted = await convertModel();
    const p = await loadPretrained(gpu, directoryFiles(converted.model), { maxLength: 512 });
    try {
      const V = p.model.config.vocabSize;
      const n = 8;
      const M = 32;
      const got: TrajectoryRecord[][] = [];
      const summary = await collectTrajectories(
        { model: p, prompts: PROMPTS, blockSize: n, maxNewTokens: M, labels: true, seed: 3 },
        (records, info) => {
          assert.equal(info.skipped, false);
          got.push(records);
        },
      );
      assert.equal(got.length, 3);
      assert.equal(summary.prompts, 3);
      assert.ok(
        summary.tokensPerForward > 0.9 && summary.tokensPerForward <= n,
        `${summary.tokensPerForward}`,
      );
      for (const [i, records] of got.entries()) {
        const ids = promptTokens(p.tokenizer, PROMPTS[i].text).ids;
        const ar = await greedy(p, ids, M);
        const samples = toSamples(records, V); // strict: every record is valid
        assert.ok(samples.length >= 1);
        const fixed: number[] = [];
        samples.forEach((s, k) => {
          assert.equal(s.dataId, `data_${i}`);
          assert.equal(s.itr, k);
          assert.equal(s.promptLength, ids.length);
          assert.deepEqual(s.fixedPoint, s.states.at(-1), "the last state is the fixed point");
          assert.ok(s.states.every((st) => st.length === n));
          const teacher = records[k].teacher_output_ids[0];
          assert.deepEqual(teacher, [...s.context, ...s.fixedPoint], "teacher = context ⊕ fixed point");
          if (k === 0) assert.deepEqual(s.context, ids);
          else assert.deepEqual(s.context, records[k - 1].teacher_output_ids[0], "blocks chain");
          assert.deepEqual(s.labels, [
            ...p.tokenizer.encode(PROMPTS[i].text + PROMPTS[i].label),
            ...p.eosIds.slice(0, 1),
          ], "labels = prompt ⊕ gold answer ⊕ EOS");
          assert.deepEqual(s.complete, [...ids, ...ar], "complete = prompt ⊕ the full response");
          // Our blocks start from the known next token (KV-cache Jacobi), unlike the reference's.
          assert.equal(s.states[0][0], s.fixedPoint[0]);
          fixed.push(...s.fixedPoint);
        });
        assert.deepEqual(fixed, ar.slice(0, fixed.length), "fixed points = greedy AR");
        assert.equal(fixed.length, Math.floor(ar.length / n) * n);
      }

      // Budget not a multiple of n: the final, cut-short block is dropped; complete keeps it.
      const one = [PROMPTS[0]];
      let partial: TrajectoryRecord[] = [];
      const s2 = await collectTrajectories(
        { model: p, prompts: one, blockSize: n, maxNewTokens: 20, seed: 3 },
        (records) => void (partial = records),
      );
      assert.equal(s2.droppedPartial, 1);
      assert.deepEqual(partial.map((r) => r.jacobian_itr_id), ["itr_0", "itr_1"]);
      assert.equal(partial[0].complete_teacher_output_ids.length, partial[0].prompt_ids_len[0] + 20);
      partial.forEach((r, k) => {
        assert.deepEqual(r.answer_trajectory_ids, got[0][k].answer_trajectory_ids);
        assert.deepEqual(r.teacher_output_ids, got[0][k].teacher_output_ids);
      });

      // EOS inside a block: pretend a token greedy AR emits mid-block 1 is EOS.
      const ids0 = promptTokens(p.tokenizer, PROMPTS[0].text).ids;
      const ar0 = await greedy(p, ids0, M);
      const at = [10, 11, 12, 13, 9, 14].find((j) => ar0.indexOf(ar0[j]) === j)!;
      assert.ok(at !== undefined);
      let eosRecords: TrajectoryRecord[] = [];
      const s3 = await collectTrajectories(
        { model: { ...p, eosIds: [ar0[at]] }, prompts: one, blockSize: n, maxNewTokens: M, seed: 3 },
        (records) => void (eosRecords = records),
      );
      assert.equal(s3.droppedPartial, 1);
      assert.deepEqual(eosRecords.map((r) => r.jacobian_itr_id), ["itr_0"]);
      assert.deepEqual(eosRecords[0].complete_teacher_output_ids, [...ids0, ...ar0.slice(0, at + 1)]);

      // Augmentation: same fixed points and last two states, seeded, the first wrong position kept.
      const aug: TrajectoryRecord[][] = [];
      for (let run = 0; run < 2; run++) {
        await collectTrajectories(
          { model: p, prompts: one, blockSize: n, maxNewTokens: M, seed: 3, augment: true },
          (records) => void aug.push(records),
        );
      }
      assert.deepEqual(aug[0], aug[1], "augmentation is seeded");
      aug[0].forEach((r, k) => {
        const plain = got[0][k].answer_trajectory_ids;
        const states = r.answer_trajectory_ids;
        assert.equal(states.length, plain.length);
        assert.deepEqual(states.slice(-2), plain.slice(-2));
        const fp = plain.at(-1)!;
        plain.slice(0, -2).forEach((st, j) => {
          const first = st.findIndex((t, q) => t !== fp[q]);
          if (first >= 0) assert.equal(states[j][first], st[first]);
        });
      });
    } finally {
      p.model.destroy();
      await converted.remove();
    }
  },
);

sharedTest(
  [STORIES_FIXTURE],
  "cllm trajectory: resumes after a kill to the same file; shards cover every prompt",
  gpuTest,
  async () => {
    const { model, remove } = await convertModel();
    const dir = await Deno.makeTempDir({ prefix: "trajectory_cli_" });
    // Keep the command's progress lines and summary out of the test output.
    const log = console.log;
    const error = console.error;
    const printed: string[] = [];
    console.log = (...a: unknown[]) => void printed.push(a.join(" "));
    console.error = (...a: unknown[]) => void printed.push(a.join(" "));
    try {
      const prompts = `${dir}/prompts.jsonl`;
      await Deno.writeTextFile(
        prompts,
        PROMPTS.map((q) => JSON.stringify({ prompt: q.text, answer: q.label })).join("\n") + "\n",
      );
      const run = (out: string, ...extra: string[]) =>
        trajectoryCommand([
          "--model",
          model,
          "--prompts",
          prompts,
          "--out",
          out,
          "--block",
          "8",
          "--max-new-tokens",
          "32",
          "--labels",
          "--seed",
          "5",
          ...extra,
        ]);
      const full = `${dir}/full.jsonl`;
      await run(full);
      const reference = await Deno.readTextFile(full);
      const lines = reference.trimEnd().split("\n");
      const ids = lines.map((l) => JSON.parse(l).data_id as string);
      assert.deepEqual([...new Set(ids)], ["data_0", "data_1", "data_2"]);
      assert.ok(printed.some((l) => /mean tokens per forward/.test(l)));
      const lastStart = ids.indexOf("data_2");
      const keys = (text: string) =>
        text.trimEnd().split("\n").map((l) => {
          const r = JSON.parse(l);
          return `${r.data_id}/${r.jacobian_itr_id}`;
        });

      const cases: [string, string][] = [
        ["cut mid-line", reference.slice(0, reference.length - Math.floor(lines.at(-1)!.length / 2))],
        ["last prompt deleted", lines.slice(0, lastStart).join("\n") + "\n"],
        ["last prompt's last line deleted", lines.slice(0, -1).join("\n") + "\n"],
        ["cut after a complete line without its newline", lines.slice(0, -1).join("\n")],
        ["nothing missing", reference],
      ];
      for (const [what, text] of cases) {
        const out = `${dir}/resume.jsonl`;
        await Deno.writeTextFile(out, text);
        await run(out);
        const after = await Deno.readTextFile(out);
        assert.equal(after, reference, what);
        const k = keys(after);
        assert.equal(new Set(k).size, k.length, `${what}: no duplicate records`);
      }

      // Shards: 0/2 takes data_0 and data_2, 1/2 takes data_1; together the same records.
      await run(`${dir}/s0.jsonl`, "--shard", "0/2");
      await run(`${dir}/s1.jsonl`, "--shard", "1/2");
      const s0 = (await Deno.readTextFile(`${dir}/s0.jsonl`)).trimEnd().split("\n");
      const s1 = (await Deno.readTextFile(`${dir}/s1.jsonl`)).trimEnd().split("\n");
      assert.deepEqual([...new Set(s0.map((l) => JSON.parse(l).data_id))], ["data_0", "data_2"]);
      assert.deepEqual([...new Set(s1.map((l) => JSON.parse(l).data_id))], ["data_1"]);
      assert.deepEqual([...s0, ...s1].sort(), [...lines].sort());

      // Resuming with other prompts, or another block size, is refused.
      await Deno.writeTextFile(
        prompts,
        [
          { prompt: "A different first prompt", answer: "x" },
          ...PROMPTS.slice(1).map((q) => ({ prompt: q.text, answer: q.label })),
        ]
          .map((o) => JSON.stringify(o)).join("\n") + "\n",
      );
      await assert.rejects(() => run(full, "--max-new-tokens", "32"), /different prompt/);
      await Deno.writeTextFile(
        prompts,
        PROMPTS.map((q) => JSON.stringify({ prompt: q.text, answer: q.label })).join("\n") + "\n",
      );
      await assert.rejects(() => run(full, "--block", "4"), /block size 8/);
      await assert.rejects(() => run(full, "--shard", "2/2"), /--shard must be I\/N/);
    } finally {
      console.log = log;
      console.error = error;
      await Deno.remove(dir, { recursive: true });
      await remove();
    }
  },
);
