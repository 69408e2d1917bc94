/**
 * Jacobi trajectory files (docs/method.md §3): the record schema of CLLM's
 * `data/generate_trajectory.py`, a validating reader, the writer, the repetition filter and the
 * state augmentation.
 *
 * One record is one n-token block of one prompt:
 *
 * | field | shape | meaning |
 * |---|---|---|
 * | `data_id` | `"data_<i>"` | prompt index |
 * | `jacobian_itr_id` | `"itr_<k>"` | block index k (0-based) |
 * | `prompt_ids_len` | `[P]` | ORIGINAL prompt length (not updated per block) |
 * | `prompt_ids` | `[[...L_k ids]]` | context before this block: prompt ⊕ earlier fixed points |
 * | `answer_trajectory_ids` | `[[...n ids] × T]` | the block's Jacobi states; the last is the fixed point |
 * | `labels_ids` | `[[...]]` (optional) | tokenized prompt + dataset answer |
 * | `teacher_output_ids` | `[[...L_k + n ids]]` | context ⊕ fixed point |
 * | `complete_teacher_output_ids` | `[...]` | the prompt's full final sequence (prompt ⊕ response) |
 *
 * We write JSON Lines (one record per line). The reader also takes the reference's single JSON list
 * file, and its nesting quirks (`prompt_ids` is `[[[...]]]` for GSM8K's `itr_0`; docs/method.md §7.10).
 *
 * Reading policy: every field is validated (types, token ids in the vocabulary, lengths that must
 * agree). A bad record is reported through `onSkip` with the file, its 1-based line and the field,
 * and skipped: it is never trained on. With `strict`, the first bad record throws a
 * {@linkcode TrajectoryFormatError} (a `FormatError`) instead. An unterminated last line that does
 * not parse is an interrupted write: it is reported and skipped in both modes.
 *
 * Everything above the "Files" banner is plain TypeScript; only the file helpers there use Deno.
 *
 * @module
 */

import { FormatError } from "../model/format_error.ts";

// ---------------------------------------------------------------------------------------------------
// Types

/**
 * One record as stored in the file, with the reference's field names.
 *
 * @example A two-state block of an 3-token prompt
 * ```ts
 * import type { TrajectoryRecord } from "./trajectory_file.ts";
 * const r: TrajectoryRecord = {
 *   data_id: "data_0",
 *   jacobian_itr_id: "itr_0",
 *   prompt_ids_len: [3],
 *   prompt_ids: [[1, 5, 6]],
 *   answer_trajectory_ids: [[7, 5, 5], [7, 8, 9]],
 *   teacher_output_ids: [[1, 5, 6, 7, 8, 9]],
 *   complete_teacher_output_ids: [1, 5, 6, 7, 8, 9],
 * };
 * ```
 */
export interface TrajectoryRecord {
  /** `"data_<i>"`: the prompt's index in the prompt set. */
  data_id: string;
  /** `"itr_<k>"`: the block index within the prompt's generation. */
  jacobian_itr_id: string;
  /** One int: the ORIGINAL prompt length P. */
  prompt_ids_len: number[];
  /** `[[context]]`: prompt ⊕ fixed points of blocks 0..k−1 (L_k = P + k·n ids). */
  prompt_ids: number[][];
  /** The block's states, n ids each, in order; the last is the fixed point. */
  answer_trajectory_ids: number[][];
  /** `[[prompt ⊕ answer]]` tokens, when collected with labels. */
  labels_ids?: number[][];
  /** `[[context ⊕ fixed point]]`. */
  teacher_output_ids: number[][];
  /** Prompt ⊕ the full response: the teacher of the prompt's last block. */
  complete_teacher_output_ids: number[];
}

/**
 * One record normalised for the trainer: flat id lists, the itr as a number.
 *
 * @example The sample of the record above
 * ```ts
 * import type { TrajectorySample } from "./trajectory_file.ts";
 * const s: TrajectorySample = {
 *   dataId: "data_0",
 *   itr: 0,
 *   promptLength: 3,
 *   context: [1, 5, 6],
 *   states: [[7, 5, 5], [7, 8, 9]],
 *   fixedPoint: [7, 8, 9],
 *   complete: [1, 5, 6, 7, 8, 9],
 * };
 * ```
 */
export interface TrajectorySample {
  /** `"data_<i>"`. */
  dataId: string;
  /** Block index k. */
  itr: number;
  /** Original prompt length P (≤ context length). */
  promptLength: number;
  /** Context before the block (flat). */
  context: number[];
  /** All states of the block, n ids each, the fixed point last (so `states.length ≥ 1`). */
  states: number[][];
  /** The fixed point: `states[states.length - 1]`. */
  fixedPoint: number[];
  /** Ground-truth labels (prompt ⊕ answer), flat, when the record has them. */
  labels?: number[];
  /** `complete_teacher_output_ids`, when the record has it. */
  complete?: number[];
}

/**
 * Where a record comes from, for error messages, and the vocabulary its ids must fit.
 *
 * @example
 * ```ts
 * import type { TrajectorySource } from "./trajectory_file.ts";
 * const src: TrajectorySource = { vocabSize: 32000, file: "gsm8k_traj.jsonl" };
 * ```
 */
export type TrajectorySource = Pick<ReadTrajectoryOptions, "vocabSize" | "file">;

/**
 * Options of {@linkcode readTrajectories}.
 *
 * @example Counting skipped lines
 * ```ts
 * import type { ReadTrajectoryOptions } from "./trajectory_file.ts";
 * let skipped = 0;
 * const opts: ReadTrajectoryOptions = { vocabSize: 512, file: "t.jsonl", onSkip: () => skipped++ };
 * ```
 */
export interface ReadTrajectoryOptions {
  /** Number of token ids; every id must be an integer in 0..vocabSize−1. */
  vocabSize: number;
  /** File name used in messages. */
  file: string;
  /**
   * Called once per skipped record with a one-line message (file, line, field, problem). Default:
   * `console.warn`, so nothing is dropped silently.
   */
  onSkip?: (message: string, error: FormatError) => void;
  /** Throw on the first bad record instead of skipping it (default false). */
  strict?: boolean;
}

/**
 * A bad trajectory record: a {@linkcode FormatError} that also carries the line and field.
 *
 * @example Catching one
 * ```ts
 * import { parseTrajectoryLine, TrajectoryFormatError } from "./trajectory_file.ts";
 * try {
 *   parseTrajectoryLine("{}", 4, { vocabSize: 10, file: "t.jsonl" });
 * } catch (e) {
 *   if (e instanceof TrajectoryFormatError) console.log(e.line, e.field); // 4 "data_id"
 * }
 * ```
 */
export class TrajectoryFormatError extends FormatError {
  /** 1-based line of the record (for a JSON list file: the line where the element starts). */
  readonly line: number;
  /** The offending field, or `undefined` for the record as a whole (bad JSON, not an object). */
  readonly field: string | undefined;
  /** The problem alone, without the file and line. */
  readonly problem: string;

  /**
   * Creates the error; the message reads `Cannot load "<file>": line <n>, field "<f>": <problem>; <fix>`.
   *
   * @param file file name
   * @param line 1-based line
   * @param field offending field, if any
   * @param problem what is wrong, values quoted
   */
  constructor(file: string, line: number, field: string | undefined, problem: string) {
    const where = field === undefined ? `line ${line}` : `line ${line}, field "${field}"`;
    super(file, `${where}: ${problem}`, "fix or delete the record, or regenerate the trajectories");
    this.name = "TrajectoryFormatError";
    this.line = line;
    this.field = field;
    this.problem = problem;
  }
}

// ---------------------------------------------------------------------------------------------------
// Validation

/** A bad field: caught by the record parser and turned into a TrajectoryFormatError. */
class _FieldError extends Error {
  constructor(readonly field: string | undefined, message: string) {
    super(message);
  }
}

function _describe(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === "string") return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}`;
  if (typeof v === "object") return "an object";
  return `${typeof v} ${String(v)}`;
}

/** Checks that every element is a token id in 0..V−1; returns the list. */
function _ids(v: unknown[], field: string, vocabSize: number, where = ""): number[] {
  for (let i = 0; i < v.length; i++) {
    const id = v[i];
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= vocabSize) {
      throw new _FieldError(
        field,
        `${where}element ${i} is ${typeof id === "number" ? id : _describe(id)}; ` +
          `token ids must be integers in 0..${vocabSize - 1}`,
      );
    }
  }
  return v as number[];
}

/**
 * A flat id list from a value the reference may nest in singleton lists (`[...]`, `[[...]]`,
 * `[[[...]]]`: batch size 1 and the GSM8K itr_0 quirk).
 */
function _flatIds(v: unknown, field: string, vocabSize: number): number[] {
  if (!Array.isArray(v)) throw new _FieldError(field, `expected a list of token ids, got ${_describe(v)}`);
  let x: unknown[] = v;
  while (x.length === 1 && Array.isArray(x[0])) x = x[0] as unknown[];
  if (x.length > 0 && Array.isArray(x[0])) {
    throw new _FieldError(
      field,
      `holds ${x.length} sequences; trajectory records have batch size 1 (one sequence per record)`,
    );
  }
  return _ids(x, field, vocabSize);
}

function _indexed(v: unknown, field: string, prefix: string): number {
  const m = typeof v === "string" ? new RegExp(`^${prefix}_(\\d+)$`).exec(v) : null;
  if (m === null) {
    throw new _FieldError(field, `expected "${prefix}_<index>", got ${_describe(v)}`);
  }
  return Number(m[1]);
}

function _firstDifference(a: readonly number[], b: readonly number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

/** Validates one parsed record (see the module doc); throws _FieldError. */
function _sample(obj: unknown, vocabSize: number): TrajectorySample {
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    throw new _FieldError(undefined, `expected a JSON object (one record), got ${_describe(obj)}`);
  }
  const r = obj as Record<string, unknown>;
  const dataId = r.data_id;
  _indexed(dataId, "data_id", "data");
  const itr = _indexed(r.jacobian_itr_id, "jacobian_itr_id", "itr");

  // [P] as written; a bare P or [[P]] is accepted too.
  const lenField = r.prompt_ids_len;
  let len: unknown = lenField;
  while (Array.isArray(len) && len.length === 1) len = len[0];
  if (typeof len !== "number" || !Number.isInteger(len) || len < 0) {
    throw new _FieldError(
      "prompt_ids_len",
      `expected one non-negative integer as [P], got ${_describe(lenField)}`,
    );
  }
  const promptLength = len;
  const context = _flatIds(r.prompt_ids, "prompt_ids", vocabSize);
  if (promptLength > context.length) {
    throw new _FieldError(
      "prompt_ids_len",
      `is ${promptLength} but "prompt_ids" holds only ${context.length} ids; the original prompt cannot be ` +
        "longer than the context",
    );
  }

  const rawStates = r.answer_trajectory_ids;
  if (!Array.isArray(rawStates) || rawStates.length === 0) {
    throw new _FieldError(
      "answer_trajectory_ids",
      `expected a non-empty list of states, got ${_describe(rawStates)}`,
    );
  }
  const states: number[][] = [];
  let n = -1;
  for (let j = 0; j < rawStates.length; j++) {
    const s = rawStates[j];
    if (!Array.isArray(s)) {
      throw new _FieldError(
        "answer_trajectory_ids",
        `state ${j} is ${_describe(s)}, not a list of token ids`,
      );
    }
    const ids = _ids(s, "answer_trajectory_ids", vocabSize, `state ${j} `);
    if (j === 0) {
      n = ids.length;
      if (n === 0) {
        throw new _FieldError("answer_trajectory_ids", "state 0 is empty; blocks hold n ≥ 1 tokens");
      }
    } else if (ids.length !== n) {
      throw new _FieldError(
        "answer_trajectory_ids",
        `state ${j} has ${ids.length} ids but state 0 has ${n}; every state of a block has the same length n`,
      );
    }
    states.push(ids);
  }
  const fixedPoint = states[states.length - 1];

  const teacher = _flatIds(r.teacher_output_ids, "teacher_output_ids", vocabSize);
  if (teacher.length !== context.length + n) {
    throw new _FieldError(
      "teacher_output_ids",
      `has ${teacher.length} ids but "prompt_ids" (${context.length}) plus the block (${n}) make ` +
        `${context.length + n}`,
    );
  }
  const d = _firstDifference(teacher, context);
  if (d < context.length) {
    throw new _FieldError(
      "teacher_output_ids",
      `differs from "prompt_ids" at index ${d} (${teacher[d]} vs ${
        context[d]
      }); it must be context ⊕ fixed point`,
    );
  }
  const tail = teacher.slice(context.length);
  const e = _firstDifference(tail, fixedPoint);
  if (e < n) {
    throw new _FieldError(
      "teacher_output_ids",
      `the last ${n} ids differ from the last state of "answer_trajectory_ids" at block position ${e} ` +
        `(${tail[e]} vs ${fixedPoint[e]}); the last state must be the fixed point`,
    );
  }

  const sample: TrajectorySample = {
    dataId: dataId as string,
    itr,
    promptLength,
    context,
    states,
    fixedPoint,
  };
  if (r.labels_ids !== undefined && r.labels_ids !== null) {
    sample.labels = _flatIds(r.labels_ids, "labels_ids", vocabSize);
  }
  if (r.complete_teacher_output_ids !== undefined && r.complete_teacher_output_ids !== null) {
    const complete = _flatIds(r.complete_teacher_output_ids, "complete_teacher_output_ids", vocabSize);
    const c = _firstDifference(complete, teacher);
    if (c < teacher.length) {
      throw new _FieldError(
        "complete_teacher_output_ids",
        c === complete.length
          ? `has ${complete.length} ids, fewer than "teacher_output_ids" (${teacher.length}); it must extend it`
          : `differs from "teacher_output_ids" at index ${c} (${complete[c]} vs ${
            teacher[c]
          }); it must extend it`,
      );
    }
    sample.complete = complete;
  }
  return sample;
}

function _checkVocab(vocabSize: number): void {
  if (!Number.isInteger(vocabSize) || vocabSize < 1) {
    throw new RangeError(`The vocabulary size must be a positive integer, not ${vocabSize}`);
  }
}

/** Validates a parsed JSON value as a record at `line`; throws TrajectoryFormatError. */
function _sampleAt(obj: unknown, line: number, src: TrajectorySource): TrajectorySample {
  try {
    return _sample(obj, src.vocabSize);
  } catch (e) {
    if (e instanceof _FieldError) throw new TrajectoryFormatError(src.file, line, e.field, e.message);
    throw e;
  }
}

function _parseJson(text: string, line: number, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new TrajectoryFormatError(file, line, undefined, `malformed JSON (${(e as Error).message})`);
  }
}

// ---------------------------------------------------------------------------------------------------
// Reading

/**
 * Parses and validates one JSON Lines record.
 *
 * @param line the line's text
 * @param lineNo its 1-based line number (for messages)
 * @param source vocabulary size and file name
 * @returns the normalised sample
 * @throws {TrajectoryFormatError} (a `FormatError`) naming the file, line and field
 *
 * @example
 * ```ts
 * import { parseTrajectoryLine } from "./trajectory_file.ts";
 * const s = parseTrajectoryLine(
 *   '{"data_id":"data_0","jacobian_itr_id":"itr_0","prompt_ids_len":[1],"prompt_ids":[[1]],' +
 *     '"answer_trajectory_ids":[[4,4],[4,5]],"teacher_output_ids":[[1,4,5]]}',
 *   1,
 *   { vocabSize: 8, file: "t.jsonl" },
 * );
 * console.log(s.fixedPoint); // [4, 5]
 * ```
 */
export function parseTrajectoryLine(
  line: string,
  lineNo: number,
  source: TrajectorySource,
): TrajectorySample {
  _checkVocab(source.vocabSize);
  return _sampleAt(_parseJson(line, lineNo, source.file), lineNo, source);
}

/** One element of a top-level JSON array: its text and the line it starts on. */
interface _Element {
  text: string;
  line: number;
}

/**
 * Splits a top-level JSON array into its elements' texts without parsing them, so each element
 * can be validated (and skipped) on its own and reported with its line. Tracks strings and
 * nesting only.
 */
function _splitJsonArray(text: string, file: string): _Element[] {
  let i = text.indexOf("[");
  let line = 1;
  for (let j = 0; j < i; j++) if (text.charCodeAt(j) === 10) line++;
  const out: _Element[] = [];
  let depth = 0;
  let inString = false;
  let escaped = false;
  let start = -1;
  let startLine = 0;
  let commas = 0;
  const push = (end: number, atLine: number) => {
    if (start < 0) {
      out.push({ text: "", line: atLine });
    } else {
      out.push({ text: text.slice(start, end), line: startLine });
    }
    start = -1;
  };
  for (i = i + 1; i < text.length; i++) {
    const c = text[i];
    if (c === "\n") line++;
    if (inString) {
      if (escaped) escaped = false;
      else if (c === "\\") escaped = true;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === " " || c === "\t" || c === "\r" || c === "\n") continue;
    if (c === "," && depth === 0) {
      commas++;
      push(i, line);
      continue;
    }
    if (c === "]" && depth === 0) {
      if (start >= 0 || commas > 0) push(i, line);
      const rest = text.slice(i + 1).trim();
      if (rest !== "") {
        throw new TrajectoryFormatError(
          file,
          line,
          undefined,
          'text follows the closing "]" of the JSON list',
        );
      }
      return out;
    }
    if (start < 0) {
      start = i;
      startLine = line;
    }
    if (c === '"') inString = true;
    else if (c === "{" || c === "[") depth++;
    else if (c === "}" || c === "]") depth--;
  }
  throw new TrajectoryFormatError(
    file,
    line,
    undefined,
    'the JSON list is not closed (no final "]"); is the file truncated?',
  );
}

/**
 * Reads a trajectory file's text: JSON Lines (one record per line) or the reference's single JSON
 * list. Bad records are reported and skipped (or thrown with `strict`); see the module doc.
 *
 * @param text the file's contents
 * @param options vocabulary size, file name, skip policy
 * @returns the valid records, in file order
 * @throws {TrajectoryFormatError} in strict mode, or for a JSON list whose brackets are not closed
 *
 * @example Reading with a skip counter
 * ```ts
 * import { readTrajectories } from "./trajectory_file.ts";
 * const messages: string[] = [];
 * const samples = readTrajectories('{"data_id": 3}\n', {
 *   vocabSize: 512,
 *   file: "t.jsonl",
 *   onSkip: (m) => messages.push(m),
 * });
 * console.log(samples.length); // 0
 * console.log(messages[0]); // Skipped line 1 of "t.jsonl", field "data_id": ...
 * ```
 */
export function readTrajectories(text: string, options: ReadTrajectoryOptions): TrajectorySample[] {
  _checkVocab(options.vocabSize);
  const onSkip = options.onSkip ?? ((m: string) => console.warn(m));
  const samples: TrajectorySample[] = [];
  const seen = new Set<string>();
  const skip = (e: TrajectoryFormatError, forced = false) => {
    if (options.strict && !forced) throw e;
    onSkip(`Skipped line ${e.line} of "${e.file}"${e.field ? `, field "${e.field}"` : ""}: ${e.problem}`, e);
  };
  const accept = (value: unknown, line: number) => {
    let s: TrajectorySample;
    try {
      s = _sampleAt(value, line, options);
    } catch (e) {
      if (e instanceof TrajectoryFormatError) return skip(e);
      throw e;
    }
    const key = `${s.dataId}/${s.itr}`;
    if (seen.has(key)) {
      return skip(
        new TrajectoryFormatError(
          options.file,
          line,
          "jacobian_itr_id",
          `"${s.dataId}" block itr_${s.itr} appears a second time; the earlier record is kept`,
        ),
      );
    }
    seen.add(key);
    samples.push(s);
  };

  if (/^\s*\[/.test(text)) {
    for (const el of _splitJsonArray(text, options.file)) {
      if (el.text === "") {
        skip(
          new TrajectoryFormatError(options.file, el.line, undefined, "empty list element (a stray comma?)"),
        );
        continue;
      }
      let value: unknown;
      try {
        value = _parseJson(el.text, el.line, options.file);
      } catch (e) {
        skip(e as TrajectoryFormatError);
        continue;
      }
      accept(value, el.line);
    }
    return samples;
  }

  const lines = text.split("\n");
  // With a trailing newline the last split piece is "": every line is terminated.
  const lastTerminated = lines.length - 2;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i].trim();
    if (raw === "") continue;
    let value: unknown;
    try {
      value = _parseJson(raw, i + 1, options.file);
    } catch (e) {
      const err = e as TrajectoryFormatError;
      if (i > lastTerminated) {
        // An unterminated last line that does not parse: an interrupted write, never an error.
        skip(
          new TrajectoryFormatError(
            options.file,
            i + 1,
            undefined,
            "the last line is unterminated and does not parse; an interrupted write?",
          ),
          true,
        );
      } else {
        skip(err);
      }
      continue;
    }
    accept(value, i + 1);
  }
  return samples;
}

// ---------------------------------------------------------------------------------------------------
// Writing

/**
 * The file record of a normalised sample (the inverse of reading, in the reference's nesting:
 * `prompt_ids`, `teacher_output_ids` and `labels_ids` as one-sequence batches).
 *
 * @param sample the sample; `complete` is required in a written record
 * @returns the record
 * @throws {TypeError} when `sample.complete` is missing
 *
 * @example
 * ```ts
 * import { trajectoryRecord } from "./trajectory_file.ts";
 * const r = trajectoryRecord({
 *   dataId: "data_0", itr: 0, promptLength: 1, context: [1],
 *   states: [[4, 5]], fixedPoint: [4, 5], complete: [1, 4, 5],
 * });
 * console.log(r.teacher_output_ids); // [[1, 4, 5]]
 * ```
 */
export function trajectoryRecord(sample: TrajectorySample): TrajectoryRecord {
  if (sample.complete === undefined) {
    throw new TypeError(`Sample ${sample.dataId} itr_${sample.itr} has no "complete" sequence to write`);
  }
  const fixed = sample.states[sample.states.length - 1];
  const record: TrajectoryRecord = {
    data_id: sample.dataId,
    jacobian_itr_id: `itr_${sample.itr}`,
    prompt_ids_len: [sample.promptLength],
    prompt_ids: [sample.context],
    answer_trajectory_ids: sample.states,
    teacher_output_ids: [[...sample.context, ...fixed]],
    complete_teacher_output_ids: sample.complete,
  };
  if (sample.labels !== undefined) record.labels_ids = [sample.labels];
  return record;
}

/**
 * One record as one JSON line (no trailing newline), fields in the reference's order.
 *
 * @example
 * ```ts
 * import { formatTrajectoryRecord, trajectoryRecord } from "./trajectory_file.ts";
 * const line = formatTrajectoryRecord(trajectoryRecord({
 *   dataId: "data_0", itr: 0, promptLength: 1, context: [1],
 *   states: [[4, 5]], fixedPoint: [4, 5], complete: [1, 4, 5],
 * }));
 * // '{"data_id":"data_0","jacobian_itr_id":"itr_0","prompt_ids_len":[1],...}'
 * ```
 */
export function formatTrajectoryRecord(record: TrajectoryRecord): string {
  const ordered: Record<string, unknown> = {
    data_id: record.data_id,
    jacobian_itr_id: record.jacobian_itr_id,
    prompt_ids_len: record.prompt_ids_len,
    prompt_ids: record.prompt_ids,
    answer_trajectory_ids: record.answer_trajectory_ids,
  };
  if (record.labels_ids !== undefined) ordered.labels_ids = record.labels_ids;
  ordered.teacher_output_ids = record.teacher_output_ids;
  ordered.complete_teacher_output_ids = record.complete_teacher_output_ids;
  return JSON.stringify(ordered);
}

// ---------------------------------------------------------------------------------------------------
// Post-processing (cllm/utils.py: jacobian_generated_data_postprocessed)

/**
 * The reference's "repetitive n-gram" filter, which in fact detects a run of `run` or more
 * identical consecutive tokens before the first EOS. Applied to `teacher_output_ids` (PR #18).
 *
 * @param ids the sequence (prompt included, as the reference checks it)
 * @param eosIds ids that end the scan
 * @param run the run length that counts as repetition (default 10)
 * @returns true when the record should be dropped
 *
 * @example
 * ```ts
 * import { hasRepetition } from "./trajectory_file.ts";
 * hasRepetition([1, ...Array(10).fill(7), 2], [2]); // true
 * hasRepetition([1, ...Array(9).fill(7), 2, 7], [2]); // false: the 10th 7 is after EOS
 * ```
 */
export function hasRepetition(ids: readonly number[], eosIds: readonly number[], run = 10): boolean {
  let count = 0;
  for (let i = 0; i < ids.length; i++) {
    if (eosIds.includes(ids[i])) return false;
    count = i > 0 && ids[i] === ids[i - 1] ? count + 1 : 1;
    if (count >= run) return true;
  }
  return false;
}

/**
 * The reference's data augmentation (`--use_aug`, after PR #17), on a copy: for states
 * j = T−3 .. 0 (the last two, the fixed point included, stay as they are), let I be the positions
 * where state j differs from the fixed point; copy the fixed-point token into |I|//2 positions
 * drawn with replacement from I[1:]. The first wrong position is never fixed, so every augmented
 * state still needs a Jacobi step at the same place.
 *
 * @param states the block's states, fixed point last
 * @param rng uniform [0, 1) generator (seeded: `seededRandom` in decode/ar.ts)
 * @returns new states (the input is not modified)
 *
 * @example
 * ```ts
 * import { augmentStates } from "./trajectory_file.ts";
 * import { seededRandom } from "../core/random.ts";
 * const out = augmentStates([[9, 9, 9, 9], [5, 9, 9, 9], [5, 6, 9, 8], [5, 6, 7, 8]], seededRandom(1));
 * console.log(out[0][0]); // 9: state 0's first wrong position is kept wrong
 * ```
 */
export function augmentStates(states: readonly (readonly number[])[], rng: () => number): number[][] {
  const out = states.map((s) => [...s]);
  const fixed = out[out.length - 1];
  for (let j = out.length - 3; j >= 0; j--) {
    const wrong: number[] = [];
    for (let p = 0; p < fixed.length; p++) if (out[j][p] !== fixed[p]) wrong.push(p);
    const draws = Math.floor(wrong.length / 2);
    // random.choices(I[1:], k=|I|//2): with replacement, from the wrong positions after the first.
    for (let d = 0; d < draws; d++) {
      const p = wrong[1 + Math.floor(rng() * (wrong.length - 1))];
      out[j][p] = fixed[p];
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Files (Deno)

/**
 * Reads and validates a trajectory file (JSON Lines or the reference's JSON list).
 *
 * @param path the file
 * @param options vocabulary size and skip policy (`file` defaults to `path`)
 * @returns the valid records
 *
 * @example
 * ```ts ignore
 * import { readTrajectoryFile } from "./trajectory_file.ts";
 * const samples = await readTrajectoryFile("traj.jsonl", { vocabSize: 32000 });
 * ```
 */
export async function readTrajectoryFile(
  path: string,
  options: Omit<ReadTrajectoryOptions, "file"> & { file?: string },
): Promise<TrajectorySample[]> {
  const text = await Deno.readTextFile(path);
  return readTrajectories(text, { ...options, file: options.file ?? path });
}
