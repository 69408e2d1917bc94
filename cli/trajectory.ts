/**
 * `cllm trajectory`: collects Jacobi trajectories for consistency training (docs/method.md §3) into
 * a JSON Lines file, one record per n-token block, resuming an earlier run's file
 * (train/trajectory_writer.ts).
 *
 * @module
 */

import { PROMPT_FORMATS } from "../model/chat_template.ts";
import type { CollectPrompt } from "../train/collect.ts";
import { collectTrajectoryFile } from "../train/trajectory_writer.ts";
import { CliError, numberOption, parse, required } from "./args.ts";
import { readPrompts } from "./files.ts";
import { closeModel, loadModelDir } from "./load.ts";
import { Progress } from "./progress.ts";

const HELP = `Usage: deno task cllm trajectory --model DIR --prompts FILE --out FILE.jsonl [options]

Collects greedy Jacobi trajectories (one JSON line per n-token block, CLLM's record schema).
Re-running with the same --out resumes: finished prompts are skipped (those that gave no record
are listed in <out>.empty.jsonl).

Options:
  --model DIR|ORG/NAME[@REV]
                            Hugging Face-layout model directory (the target model), or a Hub model (fetched into the HF cache)
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
    const t0 = performance.now();
    let progress: Progress | null = null;
    const { summary, already, existingRecords } = await collectTrajectoryFile({
      model: p,
      prompts,
      texts,
      out,
      blockSize,
      maxNewTokens,
      augment: v.augment === true,
      labels,
      seed,
      format,
      onNote: (m) => console.error(`${progress ? "\n" : ""}trajectory: ${m}`),
      onProgress: (finished, total, written) => {
        progress ??= new Progress("trajectory", total, "prompts");
        progress.update(finished, `${written} records`);
      },
    });
    (progress as Progress | null)?.done();
    const seconds = (performance.now() - t0) / 1000;
    console.log(
      `trajectory: ${summary.records} records from ${summary.prompts} prompts appended to ${out}` +
        (already > 0 ? ` (${already} prompts, ${existingRecords} records were already there)` : ""),
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
    await closeModel(p);
  }
}
