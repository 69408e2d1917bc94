import assert from "node:assert/strict";
import { seededRandom } from "../../core/random.ts";
import { FormatError } from "../../model/format_error.ts";
import {
  augmentStates,
  formatTrajectoryRecord,
  hasRepetition,
  parseTrajectoryLine,
  readTrajectories,
  TrajectoryFormatError,
  type TrajectoryRecord,
  trajectoryRecord,
  type TrajectorySample,
} from "../../train/trajectory_file.ts";

const V = 100;
const FILE = "t.jsonl";

/** A valid record: prompt [1, 10, 11], block 1 (context has block 0's fixed point), n = 4. */
function validRecord(): TrajectoryRecord {
  const context = [1, 10, 11, 20, 21, 22, 23];
  const states = [[30, 10, 10, 11], [30, 31, 10, 33], [30, 31, 32, 33]];
  return {
    data_id: "data_5",
    jacobian_itr_id: "itr_1",
    prompt_ids_len: [3],
    prompt_ids: [context],
    answer_trajectory_ids: states,
    labels_ids: [[1, 10, 11, 40, 41]],
    teacher_output_ids: [[...context, 30, 31, 32, 33]],
    complete_teacher_output_ids: [...context, 30, 31, 32, 33, 34, 2],
  };
}

function read(
  text: string,
  strict = false,
): { samples: TrajectorySample[]; skipped: TrajectoryFormatError[] } {
  const skipped: TrajectoryFormatError[] = [];
  const messages: string[] = [];
  const samples = readTrajectories(text, {
    vocabSize: V,
    file: FILE,
    strict,
    onSkip: (m, e) => {
      messages.push(m);
      skipped.push(e as TrajectoryFormatError);
    },
  });
  for (let i = 0; i < messages.length; i++) {
    // Every message names the file and the line (and the field, when there is one).
    assert.match(messages[i], new RegExp(`line ${skipped[i].line} of "${FILE}"`));
    if (skipped[i].field) assert.ok(messages[i].includes(`field "${skipped[i].field}"`), messages[i]);
  }
  return { samples, skipped };
}

Deno.test("trajectory file: sample → record → JSON line → sample round trip", () => {
  const sample: TrajectorySample = {
    dataId: "data_5",
    itr: 1,
    promptLength: 3,
    context: [1, 10, 11, 20, 21, 22, 23],
    states: [[30, 10, 10, 11], [30, 31, 10, 33], [30, 31, 32, 33]],
    fixedPoint: [30, 31, 32, 33],
    labels: [1, 10, 11, 40, 41],
    complete: [1, 10, 11, 20, 21, 22, 23, 30, 31, 32, 33, 34, 2],
  };
  const record = trajectoryRecord(sample);
  assert.deepEqual(record, validRecord());
  const line = formatTrajectoryRecord(record);
  assert.ok(!line.includes("\n"));
  assert.deepEqual(Object.keys(JSON.parse(line)), [
    "data_id",
    "jacobian_itr_id",
    "prompt_ids_len",
    "prompt_ids",
    "answer_trajectory_ids",
    "labels_ids",
    "teacher_output_ids",
    "complete_teacher_output_ids",
  ]);
  assert.deepEqual(parseTrajectoryLine(line, 1, { vocabSize: V, file: FILE }), sample);
  // A file of lines, with blank lines and CRLF endings.
  const second = { ...sample, dataId: "data_6", itr: 0, labels: undefined };
  delete second.labels;
  const text = `${line}\r\n\n${formatTrajectoryRecord(trajectoryRecord(second))}\n`;
  const { samples, skipped } = read(text);
  assert.deepEqual(skipped, []);
  assert.deepEqual(samples, [sample, second]);
  assert.throws(() => trajectoryRecord({ ...sample, complete: undefined }), TypeError);
});

Deno.test("trajectory file: the reference's single JSON list with nested prompt_ids", () => {
  // itr_0 of GSM8K has prompt_ids (1,1,P) and teacher (1, P+n); raw files lack complete_teacher_output_ids.
  const itr0 = {
    data_id: "data_0",
    jacobian_itr_id: "itr_0",
    prompt_ids_len: [3],
    prompt_ids: [[[1, 5, 6]]],
    answer_trajectory_ids: [[5, 6, 5], [7, 6, 5], [7, 8, 9]],
    labels_ids: [[[1, 5, 6, 7, 8]]],
    teacher_output_ids: [[1, 5, 6, 7, 8, 9]],
  };
  const itr1 = {
    ...itr0,
    jacobian_itr_id: "itr_1",
    prompt_ids: [[1, 5, 6, 7, 8, 9]],
    answer_trajectory_ids: [[1, 1, 1], [4, 4, 2]],
    teacher_output_ids: [[1, 5, 6, 7, 8, 9, 4, 4, 2]],
    complete_teacher_output_ids: [1, 5, 6, 7, 8, 9, 4, 4, 2],
  };
  // Python's json.dump layout, "[" inside strings and all: one list, records spread over lines.
  const text = `[\n  ${JSON.stringify({ ...itr0, note: "a [ b ] , {" }, null, 2)},\n  ${
    JSON.stringify(itr1)
  }\n]\n`;
  const { samples, skipped } = read(text);
  assert.deepEqual(skipped, []);
  assert.equal(samples.length, 2);
  assert.deepEqual(samples[0].context, [1, 5, 6]);
  assert.deepEqual(samples[0].labels, [1, 5, 6, 7, 8]);
  assert.equal(samples[0].complete, undefined);
  assert.deepEqual(samples[0].fixedPoint, [7, 8, 9]);
  assert.equal(samples[1].itr, 1);
  assert.deepEqual(samples[1].context, [1, 5, 6, 7, 8, 9]);
  // A bad element in a list is reported at the line where it starts; the others are kept.
  const bad = `[\n${JSON.stringify(itr0)},\n${JSON.stringify({ ...itr1, prompt_ids_len: [99] })}\n]`;
  const r = read(bad);
  assert.equal(r.samples.length, 1);
  assert.equal(r.skipped[0].line, 3);
  assert.equal(r.skipped[0].field, "prompt_ids_len");
  // A list that never closes is a truncated file.
  assert.throws(() => read(`[\n${JSON.stringify(itr0)},\n{"data_id": "da`), /not closed/);
  assert.equal(read("[]").samples.length, 0);
});

Deno.test("trajectory file: every malformed record is reported with its line and field, and skipped", () => {
  const base = validRecord();
  type Case = [string, (r: Record<string, unknown>) => unknown, string | undefined, RegExp];
  const cases: Case[] = [
    ["data_id not a string", (r) => (r.data_id = 5), "data_id", /"data_<index>"/],
    ["data_id pattern", (r) => (r.data_id = "prompt_5"), "data_id", /"data_<index>"/],
    ["itr pattern", (r) => (r.jacobian_itr_id = "itr_x"), "jacobian_itr_id", /"itr_<index>"/],
    ["missing prompt_ids", (r) => delete r.prompt_ids, "prompt_ids", /list of token ids/],
    ["prompt_ids a string", (r) => (r.prompt_ids = "1 2 3"), "prompt_ids", /list of token ids/],
    ["prompt_ids batch of 2", (r) => (r.prompt_ids = [[1, 2], [3, 4]]), "prompt_ids", /batch size 1/],
    ["id ≥ vocab", (r) => (r.prompt_ids = [[1, 10, V, 20, 21, 22, 23]]), "prompt_ids", /element 2 is 100/],
    ["negative id", (r) => (r.labels_ids = [[1, -3]]), "labels_ids", /element 1 is -3/],
    ["fractional id", (r) => (r.complete_teacher_output_ids = [1.5]), "complete_teacher_output_ids", /1\.5/],
    [
      "string id",
      (r) => ((r.answer_trajectory_ids as unknown[][])[1][2] = "7"),
      "answer_trajectory_ids",
      /state 1 element 2/,
    ],
    ["prompt_ids_len two ints", (r) => (r.prompt_ids_len = [3, 4]), "prompt_ids_len", /one non-negative/],
    ["prompt_ids_len negative", (r) => (r.prompt_ids_len = [-1]), "prompt_ids_len", /one non-negative/],
    ["prompt_ids_len > context", (r) => (r.prompt_ids_len = [8]), "prompt_ids_len", /holds only 7/],
    ["no states", (r) => (r.answer_trajectory_ids = []), "answer_trajectory_ids", /non-empty/],
    ["state not a list", (r) => (r.answer_trajectory_ids = [5]), "answer_trajectory_ids", /state 0/],
    [
      "states disagree in length",
      (r) => ((r.answer_trajectory_ids as number[][])[1] = [30, 31, 10]),
      "answer_trajectory_ids",
      /state 1 has 3 ids but state 0 has 4/,
    ],
    [
      "teacher length",
      (r) => (r.teacher_output_ids = [[1, 10, 11, 20, 21, 22, 23, 30, 31, 32]]),
      "teacher_output_ids",
      /has 10 ids but "prompt_ids" \(7\) plus the block \(4\) make 11/,
    ],
    [
      "teacher's context differs",
      (r) => (r.teacher_output_ids = [[1, 10, 12, 20, 21, 22, 23, 30, 31, 32, 33]]),
      "teacher_output_ids",
      /differs from "prompt_ids" at index 2/,
    ],
    [
      "teacher's tail is not the last state",
      (r) => ((r.answer_trajectory_ids as number[][])[2] = [30, 31, 10, 33]),
      "teacher_output_ids",
      /block position 2/,
    ],
    [
      "complete does not extend the teacher",
      (r) => (r.complete_teacher_output_ids = [1, 10, 11, 20]),
      "complete_teacher_output_ids",
      /fewer than/,
    ],
    ["not an object", () => [1, 2, 3], undefined, /JSON object/],
  ];
  const lines: string[] = [];
  for (const [what, mutate] of cases) {
    const r = structuredClone(base) as unknown as Record<string, unknown>;
    const replaced = mutate(r);
    lines.push(JSON.stringify(what === "not an object" ? replaced : r));
    lines.push(formatTrajectoryRecord({ ...base, data_id: `data_${lines.length}` }));
  }
  lines.push('{"data_id": "data_1", broken json');
  lines.push(formatTrajectoryRecord({ ...base, data_id: "data_99" }));
  const { samples, skipped } = read(lines.join("\n") + "\n");
  // Every other line is valid.
  assert.equal(samples.length, cases.length + 1);
  assert.equal(skipped.length, cases.length + 1);
  cases.forEach(([what, , field, pattern], i) => {
    const e = skipped[i];
    assert.equal(e.line, 2 * i + 1, what);
    assert.equal(e.field, field, what);
    assert.match(e.problem, pattern, `${what}: ${e.problem}`);
    assert.ok(e instanceof FormatError);
    assert.ok(e.message.startsWith(`Cannot load "${FILE}": line ${2 * i + 1}`), e.message);
  });
  const json = skipped[cases.length];
  assert.equal(json.line, 2 * cases.length + 1);
  assert.match(json.problem, /malformed JSON/);

  // A repeated (data_id, itr) is reported and the first one kept.
  const dup = formatTrajectoryRecord(base);
  const d = read(`${dup}\n${dup}\n`);
  assert.equal(d.samples.length, 1);
  assert.equal(d.skipped[0].line, 2);
  assert.match(d.skipped[0].problem, /second time/);

  // Strict mode throws a FormatError at the first bad line instead.
  assert.throws(
    () => read(`${dup}\n${lines[0]}\n`, true),
    (e: unknown) => e instanceof TrajectoryFormatError && e instanceof FormatError && e.line === 2,
  );
  assert.throws(() => parseTrajectoryLine("{", 7, { vocabSize: V, file: FILE }), /line 7: malformed JSON/);
});

Deno.test("trajectory file: an unterminated last line is an interrupted write, skipped even when strict", () => {
  const a = formatTrajectoryRecord(validRecord());
  const b = formatTrajectoryRecord({ ...validRecord(), data_id: "data_6" });
  for (const strict of [false, true]) {
    const { samples, skipped } = read(`${a}\n${b.slice(0, 40)}`, strict);
    assert.equal(samples.length, 1);
    assert.equal(skipped.length, 1);
    assert.equal(skipped[0].line, 2);
    assert.match(skipped[0].problem, /unterminated/);
  }
  // A complete record that only lacks its newline is kept.
  assert.equal(read(`${a}\n${b}`).samples.length, 2);
  // A bad line that is terminated is an error in strict mode.
  assert.throws(() => read(`${a}\n${b.slice(0, 40)}\n`, true), FormatError);
});

Deno.test("repetition filter: 10 equal tokens in a row before EOS", () => {
  const eos = [2];
  assert.equal(hasRepetition([1, ...Array(10).fill(7)], eos), true);
  assert.equal(hasRepetition([1, ...Array(9).fill(7), 8, 7], eos), false);
  assert.equal(hasRepetition([1, ...Array(9).fill(7), 2, 7, 7], eos), false, "the run continues after EOS");
  assert.equal(hasRepetition([1, 2, ...Array(12).fill(7)], eos), false, "only tokens before EOS count");
  assert.equal(hasRepetition(Array(10).fill(7), eos), true, "a run at the start counts");
  assert.equal(hasRepetition([3, 3, 3, 4], eos, 3), true);
  assert.equal(hasRepetition([], eos), false);
});

Deno.test("augmentation: first wrong position never fixed, last two states untouched, seeded", () => {
  const rng0 = seededRandom(123);
  const n = 16;
  for (let trial = 0; trial < 200; trial++) {
    const fixed = Array.from({ length: n }, (_, i) => 50 + i);
    const T = 1 + Math.floor(rng0() * 6);
    const states = Array.from(
      { length: T },
      (_, j) => j === T - 1 ? [...fixed] : fixed.map((t) => (rng0() < 0.6 ? 1 + Math.floor(rng0() * 40) : t)),
    );
    const before = structuredClone(states);
    const out = augmentStates(states, seededRandom(trial));
    assert.deepEqual(states, before, "the input is not modified");
    assert.equal(out.length, T);
    assert.deepEqual(out.slice(-2), states.slice(-2), "the last two states are unchanged");
    for (let j = 0; j < T - 2; j++) {
      const wrong = states[j].map((t, p) => (t !== fixed[p] ? p : -1)).filter((p) => p >= 0);
      let changed = 0;
      for (let p = 0; p < n; p++) {
        if (out[j][p] === states[j][p]) continue;
        changed++;
        assert.equal(out[j][p], fixed[p], "a changed token becomes the fixed point's");
        assert.ok(wrong.includes(p) && p !== wrong[0], "only wrong positions after the first change");
      }
      if (wrong.length > 0) assert.notEqual(out[j][wrong[0]], fixed[wrong[0]], "the first wrong stays wrong");
      assert.ok(changed <= Math.floor(wrong.length / 2), "at most |I|//2 (draws with replacement)");
    }
    assert.deepEqual(augmentStates(states, seededRandom(trial)), out, "same seed, same result");
  }
  // Something does change for long wrong runs, and a different seed usually changes it differently.
  const fixed = Array.from({ length: n }, (_, i) => 50 + i);
  const states = [Array(n).fill(1), Array(n).fill(1), [...fixed].fill(1, 8), fixed];
  const a = augmentStates(states, seededRandom(1));
  const b = augmentStates(states, seededRandom(2));
  assert.ok(a[0].some((t, p) => t === fixed[p]));
  assert.ok(JSON.stringify(a) !== JSON.stringify(b));
});
