/**
 * `cllm trajectory`: collects Jacobi trajectories for consistency training (cllm-method.md §3) into
 * a JSON Lines file, one record per n-token block (train/collect.ts, train/trajectory_file.ts).
 *
 * Resumable: an existing --out is read first; prompts whose records are all there are skipped. A
 * half-written tail (an unterminated line, or an unfinished last prompt) is truncated away before
 * appending. Each prompt's records are appended as complete lines with one write, then synced, so
 * a kill loses at most the prompt in flight. Prompts that give no record at all (too long for the
 * context, or every block filtered) are listed in `<out>.empty.jsonl`, so a resumed run skips them
 * too instead of decoding them again.
 *
 * @module
 */

import { PROMPT_FORMATS } from "../model/chat_template.ts";
import type { TextTokenizer } from "../model/tokenizer.ts";
import {
  type CollectPrompt,
  type CollectSummary,
  collectTrajectories,
  expectedItrs,
  promptTokens,
} from "../train/collect.ts";
import {
  formatTrajectoryRecord,
  parseTrajectoryLine,
  TrajectoryFormatError,
  type TrajectorySample,
} from "../train/trajectory_file.ts";
import { CliError, numberOption, parse, required } from "./args.ts";
import { readPrompts } from "./files.ts";
import { loadModelDir } from "./load.ts";
import { Progress } from "./progress.ts";

const HELP = `Usage: deno task cllm trajectory --model DIR --prompts FILE --out FILE.jsonl [options]

Collects greedy Jacobi trajectories (one JSON line per n-token block, CLLM's record schema).
Re-running with the same --out resumes: finished prompts are skipped (those that gave no record
are listed in <out>.empty.jsonl).

Options:
  --model DIR            Hugging Face-layout model directory (the target model)
  --prompts FILE         JSONL ("question", "prompt" or "turns" field) or one prompt per line
  --out FILE.jsonl       output; appended to, after dropping an unfinished tail
  --block N              block size n (default 16)
  --max-new-tokens M     generation budget per prompt (default 512)
  --limit K              use the first K prompts of the file (default all)
  --shard I/N            only prompts whose index % N == I (data_id keeps the global index);
                         give each shard its own --out, and concatenate the files afterwards
  --augment              the reference's state augmentation (--use_aug)
  --labels               store labels_ids = prompt + the JSONL "answer" field (--use_labels)
  --format NAME          wrap prompts in a built-in format: ${Object.keys(PROMPT_FORMATS).join(", ")}
  --seed S               seed of the Jacobi guesses and the augmentation (default 0)`;

/** One prompt's contiguous records in an existing output file. */
interface _Group {
  id: number;
  startByte: number;
  itrs: number[];
  first: TrajectorySample;
  complete: number[] | undefined;
}

/** What an existing output file holds. */
interface _Existing {
  /** Prompt ids whose records are all present. */
  done: Map<number, TrajectorySample>;
  /** Bytes to keep (the rest is an unfinished tail). */
  keepBytes: number;
  /** Bytes in the file. */
  size: number;
  /** Why bytes are dropped, if they are. */
  dropped: string[];
  /** Records kept. */
  records: number;
}

/**
 * Reads an existing output file for resuming. Every terminated line must be a valid record of
 * this block size, each prompt's records contiguous; the last prompt is kept only if all the
 * records it should have (expectedItrs) are there.
 */
async function _scanExisting(
  path: string,
  opts: { vocabSize: number; blockSize: number; eosIds: readonly number[] },
): Promise<_Existing> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      return { done: new Map(), keepBytes: 0, size: 0, dropped: [], records: 0 };
    }
    throw e;
  }
  const decoder = new TextDecoder();
  const groups: _Group[] = [];
  const dropped: string[] = [];
  let start = 0;
  let lineNo = 0;
  let terminatedEnd = 0;
  const damaged = (what: string) =>
    new CliError(
      `trajectory: --out "${path}" ${what}; it was not written by this command with these settings, ` +
        "or it is damaged: move it aside or choose another --out",
    );
  while (start < bytes.length) {
    const nl = bytes.indexOf(10, start);
    if (nl < 0) {
      dropped.push(`an unterminated last line (${bytes.length - start} bytes)`);
      break;
    }
    lineNo++;
    const text = decoder.decode(bytes.subarray(start, nl)).trim();
    const lineStart = start;
    start = nl + 1;
    terminatedEnd = start;
    if (text === "") continue;
    let s: TrajectorySample;
    try {
      s = parseTrajectoryLine(text, lineNo, { vocabSize: opts.vocabSize, file: path });
    } catch (e) {
      if (e instanceof TrajectoryFormatError) {
        throw damaged(
          `has a bad record at line ${lineNo}${e.field ? ` (field "${e.field}")` : ""}: ${e.problem}`,
        );
      }
      throw e;
    }
    const n = s.states[0].length;
    if (n !== opts.blockSize) {
      throw damaged(`was written with block size ${n} (line ${lineNo}), not --block ${opts.blockSize}`);
    }
    const id = Number(s.dataId.slice(5));
    const last = groups[groups.length - 1];
    if (last && last.id === id) {
      last.itrs.push(s.itr);
    } else {
      if (groups.some((g) => g.id === id)) {
        throw damaged(`has records of ${s.dataId} in two places (line ${lineNo})`);
      }
      groups.push({ id, startByte: lineStart, itrs: [s.itr], first: s, complete: s.complete });
    }
  }
  let keepBytes = terminatedEnd;
  const done = new Map<number, TrajectorySample>();
  let records = 0;
  groups.forEach((g, i) => {
    if (g.complete === undefined) throw damaged(`has no complete_teacher_output_ids for data_${g.id}`);
    const expected = expectedItrs(g.complete, g.first.promptLength, opts.blockSize, opts.eosIds);
    const whole = expected.length === g.itrs.length && expected.every((k, j) => g.itrs[j] === k);
    if (whole) {
      done.set(g.id, g.first);
      records += g.itrs.length;
    } else if (i === groups.length - 1) {
      // The prompt being written when the previous run stopped: drop it and collect it again.
      dropped.push(`the unfinished records of data_${g.id} (${g.itrs.length} of ${expected.length})`);
      keepBytes = g.startByte;
    } else {
      throw damaged(`holds ${g.itrs.length} of the ${expected.length} records of data_${g.id}`);
    }
  });
  return { done, keepBytes, size: bytes.length, dropped, records };
}

/** The JSONL `answer` field of every prompt, aligned with readPrompts (blank lines skipped). */
async function _readAnswers(path: string): Promise<{ answer: string | undefined; line: number }[]> {
  const out: { answer: string | undefined; line: number }[] = [];
  (await Deno.readTextFile(path)).split("\n").forEach((line, i) => {
    const trimmed = line.trim();
    if (!trimmed) return;
    let answer: unknown;
    if (trimmed.startsWith("{")) answer = (JSON.parse(trimmed) as Record<string, unknown>).answer;
    out.push({ answer: typeof answer === "string" ? answer : undefined, line: i + 1 });
  });
  return out;
}

function _shard(raw: string | undefined): { index: number; count: number } {
  if (raw === undefined) return { index: 0, count: 1 };
  const m = /^(\d+)\/(\d+)$/.exec(raw);
  if (!m || Number(m[2]) < 1 || Number(m[1]) >= Number(m[2])) {
    throw new CliError(`trajectory: --shard must be I/N with 0 <= I < N (e.g. 0/4), not "${raw}"`);
  }
  return { index: Number(m[1]), count: Number(m[2]) };
}

/** The sidecar file listing the prompts that gave no record: one `{"id", "prompt"}` line each. */
function _emptyPath(out: string): string {
  return `${out}.empty.jsonl`;
}

/**
 * Prompt ids listed in the sidecar whose text is still the prompt of that id (a changed prompts
 * file invalidates the entry, so the prompt is collected again). A missing sidecar lists none; a
 * stale one (no --out) is removed.
 */
async function _readEmpty(out: string, outExists: boolean, texts: readonly string[]): Promise<Set<number>> {
  const path = _emptyPath(out);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return new Set();
    throw e;
  }
  if (!outExists) {
    await Deno.remove(path);
    return new Set();
  }
  const ids = new Set<number>();
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    let entry: { id?: unknown; prompt?: unknown };
    try {
      entry = JSON.parse(line);
    } catch {
      continue; // a line cut by a kill: that prompt is simply collected again
    }
    if (typeof entry.id === "number" && texts[entry.id] === entry.prompt) ids.add(entry.id);
  }
  return ids;
}

function _sameIds(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

/**
 * Checks that the prompts already in the file are the ones we would collect now, with the same
 * labels option. (Augmentation and the seed cannot be told from a record: resume with the same.)
 */
function _checkDone(
  done: Map<number, TrajectorySample>,
  texts: readonly string[],
  tokenizer: TextTokenizer,
  format: string | undefined,
  labels: boolean,
  out: string,
): void {
  for (const [id, sample] of done) {
    if ((sample.labels !== undefined) !== labels) {
      throw new CliError(
        `trajectory: --out "${out}" was collected ${labels ? "without" : "with"} --labels (data_${id}); ` +
          "resume with the same options, or choose another --out",
      );
    }
    const ids = id < texts.length ? promptTokens(tokenizer, texts[id], format).ids : null;
    if (ids === null || !_sameIds(ids, sample.context.slice(0, sample.promptLength))) {
      throw new CliError(
        `trajectory: --out "${out}" holds data_${id}, made from ${
          ids === null ? "a prompt this --prompts file lacks" : "a different prompt"
        }; use the same --prompts, --format and --limit as before, or another --out`,
      );
    }
  }
}

async function _writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  // One write call in practice; the loop only covers a short write.
  let off = 0;
  while (off < bytes.length) off += await file.write(bytes.subarray(off));
}

/** Runs `trajectory`. */
export async function trajectoryCommand(args: string[]): Promise<void> {
  const v = parse("trajectory", args, {
    model: { type: "string" },
    prompts: { type: "string" },
    out: { type: "string" },
    block: { type: "string" },
    "max-new-tokens": { type: "string" },
    limit: { type: "string" },
    shard: { type: "string" },
    augment: { type: "boolean" },
    labels: { type: "boolean" },
    format: { type: "string" },
    seed: { type: "string" },
  });
  if (v.help) return console.log(HELP);
  const dir = required(v, "model", "trajectory");
  const promptsPath = required(v, "prompts", "trajectory");
  const out = required(v, "out", "trajectory");
  const blockSize = numberOption(v, "block", 16, { integer: true, min: 1 });
  const maxNewTokens = numberOption(v, "max-new-tokens", 512, { integer: true, min: 1 });
  const limit = numberOption(v, "limit", Infinity, { integer: true, min: 1 });
  const seed = numberOption(v, "seed", 0, { integer: true, min: 0 });
  const shard = _shard(v.shard as string | undefined);
  const format = v.format as string | undefined;
  if (format !== undefined && !Object.hasOwn(PROMPT_FORMATS, format)) {
    throw new CliError(
      `trajectory: unknown --format "${format}"; choose one of ${Object.keys(PROMPT_FORMATS).join(", ")}`,
    );
  }
  const labels = v.labels === true;

  const texts = (await readPrompts(promptsPath)).slice(0, limit);
  const answers = labels ? (await _readAnswers(promptsPath)).slice(0, texts.length) : [];
  const prompts: CollectPrompt[] = [];
  for (let id = shard.index; id < texts.length; id += shard.count) {
    const prompt: CollectPrompt = { id, text: texts[id] };
    if (labels) {
      const a = answers[id];
      if (a?.answer === undefined) {
        throw new CliError(
          `trajectory: --labels needs a string "answer" field on every prompt; ${promptsPath}:${
            a?.line ?? "?"
          } has none`,
        );
      }
      prompt.label = a.answer;
    }
    prompts.push(prompt);
  }

  const p = await loadModelDir(dir);
  try {
    if (blockSize > p.model.maxRows) {
      throw new CliError(
        `trajectory: --block must be at most ${p.model.maxRows} for this model, not ${blockSize}`,
      );
    }
    if (maxNewTokens + blockSize + 2 > p.model.maxLength) {
      throw new CliError(
        `trajectory: --max-new-tokens ${maxNewTokens} with --block ${blockSize} leaves no room for a prompt in ` +
          `the model's context of ${p.model.maxLength}; lower it to at most ${
            p.model.maxLength - blockSize - 2
          }`,
      );
    }
    const existing = await _scanExisting(out, {
      vocabSize: p.model.config.vocabSize,
      blockSize,
      eosIds: p.eosIds,
    });
    _checkDone(existing.done, texts, p.tokenizer, format, labels, out);
    if (existing.keepBytes < existing.size) {
      await Deno.truncate(out, existing.keepBytes);
      console.error(`trajectory: dropped ${existing.dropped.join(" and ")} from "${out}"`);
    }
    const outExists = await Deno.stat(out).then(() => true, () => false);
    const empty = await _readEmpty(out, outExists, texts);
    const todo = prompts.filter((q) => !existing.done.has(q.id) && !empty.has(q.id));
    const already = prompts.length - todo.length;
    if (already > 0) {
      console.error(
        `trajectory: resuming "${out}": ${already} of ${prompts.length} prompts are already there` +
          (empty.size > 0 ? ` (${empty.size} gave no record; ${_emptyPath(out)})` : ""),
      );
    }

    const file = await Deno.open(out, { write: true, append: true, create: true });
    const emptyFile = await Deno.open(_emptyPath(out), { write: true, append: true, create: true });
    const encoder = new TextEncoder();
    const progress = new Progress("trajectory", todo.length, "prompts");
    const t0 = performance.now();
    let finished = 0;
    let written = 0;
    let summary: CollectSummary;
    try {
      summary = await collectTrajectories(
        {
          model: p,
          prompts: todo,
          blockSize,
          maxNewTokens,
          augment: v.augment === true,
          labels,
          seed,
          format,
          onSkip: (m) => console.error(`\ntrajectory: ${m}`),
        },
        async (records, info) => {
          if (records.length > 0) {
            const text = records.map(formatTrajectoryRecord).join("\n") + "\n";
            await _writeAll(file, encoder.encode(text));
            await file.sync();
            written += records.length;
          } else {
            const line = JSON.stringify({ id: info.prompt.id, prompt: texts[info.prompt.id] }) + "\n";
            await _writeAll(emptyFile, encoder.encode(line));
            await emptyFile.sync();
          }
          progress.update(++finished, `${written} records`);
        },
      );
    } finally {
      file.close();
      emptyFile.close();
    }
    if (todo.length > 0) progress.done();
    const seconds = (performance.now() - t0) / 1000;
    console.log(
      `trajectory: ${summary.records} records from ${summary.prompts} prompts appended to ${out}` +
        (already > 0 ? ` (${already} prompts, ${existing.records} records were already there)` : ""),
    );
    console.log(
      `filtered by repetition: ${summary.filtered} records; final blocks cut short by EOS or the budget: ` +
        `${summary.droppedPartial}; prompts too long: ${summary.skippedPrompts}`,
    );
    console.log(
      `mean tokens per forward: ${summary.tokensPerForward.toFixed(3)} (${summary.tokens} tokens, ` +
        `${summary.forwards} forwards); ${
          seconds > 0 ? (summary.prompts / seconds).toFixed(2) : "0"
        } prompts/s`,
    );
  } finally {
    p.model.destroy();
    p.gpu.destroy();
  }
}
