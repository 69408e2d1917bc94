/**
 * stories260K for tests: read from ../shared, converted from llama2.c into a temporary directory.
 *
 * @module
 */
import type { Gpu } from "../core/mod.ts";
import { sharedPath, STORIES_FIXTURE } from "./_fixtures.ts";
import { convertLlama2c, directoryFiles, loadPretrained, type Pretrained } from "../model/mod.ts";

/** The folder holding stories260K.bin, tok512.bin and golden.txt. */
export const STORIES = sharedPath(STORIES_FIXTURE);

/** Converts stories260K into `${dir}/m` and loads it (context 512). */
export async function loadStories(gpu: Gpu, dir: string): Promise<Pretrained> {
  await convertLlama2c({
    checkpoint: `${STORIES}stories260K.bin`,
    tokenizer: `${STORIES}tok512.bin`,
    out: `${dir}/m`,
  });
  return await loadPretrained(gpu, directoryFiles(`${dir}/m`), { maxLength: 512 });
}
