/**
 * The resumable trajectory writer: collects Jacobi trajectories (train/collect.ts) into a JSON
 * Lines file, one record per n-token block (train/trajectory_file.ts), and picks up where an
 * earlier run stopped.
 *
 * An existing output is read first; prompts whose records are all there are skipped. A
 * half-written tail (an unterminated line, or an unfinished last prompt) is truncated away before
 * appending. Each prompt's records are appended as complete lines with one write, then synced, so
 * a kill loses at most the prompt in flight. Prompts that give no record at all (too long for the
 * context, or every block filtered) are listed in `<out>.empty.jsonl`, so a resumed run skips them
 * too instead of decoding them again.
 *
 * @module
 */

import { FormatError } from "../model/format_error.ts";
import type { Pretrained } from "../model/pretrained.ts";
import type { TextTokenizer } from "../model/tokenizer.ts";
import {
  type CollectPrompt,
  type CollectSummary,
  collectTrajectories,
  expectedItrs,
  promptTokens,
} from "./collect.ts";
import {
  formatTrajectoryRecord,
  parseTrajectoryLine,
  TrajectoryFormatError,
  type TrajectorySample,
} from "./trajectory_file.ts";

/** Options of {@linkcode collectTrajectoryFile}. */
export interface TrajectoryFileOptions {
  /** The model (target of consistency training). */
  model: Pretrained;
  /** The prompts to collect, with their global ids (a shard may hold every k-th). */
  prompts: CollectPrompt[];
  /** Every prompt's text by global id (what resuming checks the file against). */
  texts: readonly string[];
  /** Output JSONL file; appended to after dropping an unfinished tail. */
  out: string;
  /** Block size n. */
  blockSize: number;
  /** Generation budget per prompt. */
  maxNewTokens: number;
  /** The reference's state augmentation. */
  augment?: boolean;
  /** Store labels (prompt + each prompt's `label`). */
  labels?: boolean;
  /** Seed of the guesses and the augmentation. */
  seed?: number;
  /** A built-in prompt format (model/chat_template.ts PROMPT_FORMATS). */
  format?: string;
  /** Told when an unfinished tail was dropped, and when prompts are skipped. */
  onNote?: (message: string) => void;
  /** After each prompt: prompts finished in this run, of how many, and records written. */
  onProgress?: (finished: number, total: number, records: number) => void;
}

/** What {@linkcode collectTrajectoryFile} did. */
export interface TrajectoryFileResult {
  /** This run's collection summary. */
  summary: CollectSummary;
  /** Prompts already in the file (or listed as giving no record) before this run. */
  already: number;
  /** Records already in the file before this run. */
  existingRecords: number;
}

/**
 * Collects trajectories of `prompts` into `out`, resuming what an earlier run left there.
 *
 * @throws {FormatError} naming `out` when its records do not match these prompts or settings
 *
 * @example
 * ```ts ignore
 * const { summary } = await collectTrajectoryFile({ model, prompts, texts, out: "t.jsonl", blockSize: 16, maxNewTokens: 256 });
 * ```
 */
export async function collectTrajectoryFile(options: TrajectoryFileOptions): Promise<TrajectoryFileResult> {
  const { model: p, prompts, texts, out, blockSize } = options;
  const labels = options.labels === true;
  const existing = await _scanExisting(out, {
    vocabSize: p.model.config.vocabSize,
    blockSize,
    eosIds: p.eosIds,
  });
  _checkDone(existing.done, texts, p.tokenizer, options.format, labels, out);
  if (existing.keepBytes < existing.size) {
    await Deno.truncate(out, existing.keepBytes);
    options.onNote?.(`dropped ${existing.dropped.join(" and ")} from "${out}"`);
  }
  const outExists = await Deno.stat(out).then(() => true, () => false);
  const empty = await _readEmpty(out, outExists, texts);
  const todo = prompts.filter((q) => !existing.done.has(q.id) && !empty.has(q.id));
  const already = prompts.length - todo.length;
  if (already > 0) {
    options.onNote?.(
      `resuming "${out}": ${already} of ${prompts.length} prompts are already there` +
        (empty.size > 0 ? ` (${empty.size} gave no record; ${_emptyPath(out)})` : ""),
    );
  }
  const file = await Deno.open(out, { write: true, append: true, create: true });
  const emptyFile = await Deno.open(_emptyPath(out), { write: true, append: true, create: true });
  const encoder = new TextEncoder();
  let finished = 0;
  let written = 0;
  try {
    const summary = await collectTrajectories(
      {
        model: p,
        prompts: todo,
        blockSize,
        maxNewTokens: options.maxNewTokens,
        augment: options.augment === true,
        labels,
        seed: options.seed ?? 0,
        format: options.format,
        onSkip: (m) => options.onNote?.(m),
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
        options.onProgress?.(++finished, todo.length, written);
      },
    );
    return { summary, already, existingRecords: existing.records };
  } finally {
    file.close();
    emptyFile.close();
  }
}

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
    new FormatError(
      path,
      what,
      "it was not written by this collector with these settings, or it is damaged: move it aside or choose " +
        "another output file",
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
      throw damaged(`was written with block size ${n} (line ${lineNo}), not ${opts.blockSize}`);
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
      throw new FormatError(
        out,
        `was collected ${labels ? "without" : "with"} labels (data_${id})`,
        "resume with the same options, or choose another output file",
      );
    }
    const ids = id < texts.length ? promptTokens(tokenizer, texts[id], format).ids : null;
    if (ids === null || !_sameIds(ids, sample.context.slice(0, sample.promptLength))) {
      throw new FormatError(
        out,
        `holds data_${id}, made from ${
          ids === null ? "a prompt the prompts given lack" : "a different prompt"
        }`,
        "use the same prompts, format and limit as before, or another output file",
      );
    }
  }
}

async function _writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  // One write call in practice; the loop only covers a short write.
  let off = 0;
  while (off < bytes.length) off += await file.write(bytes.subarray(off));
}
