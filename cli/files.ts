/**
 * Writing result files atomically: a temporary name in the same directory, then a rename, so a
 * crash never leaves a half-written file where a reader would find it.
 *
 * @module
 */

/** Writes `text` to `path` atomically. */
export async function writeTextAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${Deno.pid}-${Date.now()}`;
  try {
    await Deno.writeTextFile(tmp, text);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/**
 * Reads prompts: JSONL with a `question`, `prompt` or `turns` (first turn) field per line, or
 * plain text with one prompt per line. Blank lines are skipped.
 */
export async function readPrompts(path: string): Promise<string[]> {
  const text = await Deno.readTextFile(path);
  const prompts: string[] = [];
  text.split("\n").forEach((line, i) => {
    const trimmed = line.trim();
    if (!trimmed) return;
    if (!trimmed.startsWith("{")) {
      prompts.push(line);
      return;
    }
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(trimmed);
    } catch (e) {
      throw new TypeError(`${path}:${i + 1}: malformed JSON (${(e as Error).message})`);
    }
    const turns = obj.turns;
    const value = obj.question ?? obj.prompt ?? (Array.isArray(turns) ? turns[0] : undefined);
    if (typeof value !== "string") {
      throw new TypeError(`${path}:${i + 1}: expected a string "question", "prompt" or "turns" field`);
    }
    prompts.push(value);
  });
  if (prompts.length === 0) throw new TypeError(`${path}: no prompts found`);
  return prompts;
}
