/**
 * Fixtures from `../shared` (beside the repository, never committed to it) and the rule for when
 * they are missing: outside CI the tests that need them are skipped with a printed reason, so a
 * fresh clone passes `deno task test`; under `CI=true` nothing is skipped, and a missing fixture
 * fails the tests that need it.
 *
 * @module
 */

/** The `shared/` folder beside the repository. */
export const SHARED_ROOT: URL = new URL("../../shared/", import.meta.url);

/** True under CI (`CI=true`), where a missing fixture is a failure, not a skip. */
export const IN_CI: boolean = Deno.env.get("CI") === "true";

/** The absolute path of `rel` inside `../shared` (a folder ends with "/"). */
export function sharedPath(rel: string): string {
  return new URL(rel, SHARED_ROOT).pathname;
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** stories260K: llama2.c checkpoint, tokenizer and golden text. */
export const STORIES_FIXTURE = "models/stories260K/";
/** The Llama-2 tokenizer with its reference encodings. */
export const LLAMA2_TOKENIZER_FIXTURE = "tokenizers/llama2/";
/** GSM8K's test split. */
export const GSM8K_TEST_FIXTURE = "data/gsm8k/test.jsonl";

/**
 * Why a test that needs `fixtures` cannot run here, or null when it can (always null under CI, so
 * the test runs and fails on the missing file).
 */
export function missingFixtures(fixtures: readonly string[]): string | null {
  if (IN_CI) return null;
  const missing = fixtures.filter((f) => !exists(sharedPath(f)));
  return missing.length ? `needs ../shared/${missing.join(", ../shared/")}, which is not here` : null;
}

type TestBody = (t: Deno.TestContext) => void | Promise<void>;
type TestOptions = Omit<Deno.TestDefinition, "fn" | "name">;

/**
 * `Deno.test` for a test that reads `../shared` fixtures: skipped with a printed reason where they
 * are missing (outside CI).
 *
 * @example
 * ```ts ignore
 * sharedTest([STORIES_FIXTURE], "stories260K golden text", gpuTest, async () => { ... });
 * ```
 */
export function sharedTest(
  fixtures: readonly string[],
  name: string,
  optionsOrFn: TestOptions | TestBody,
  maybeFn?: TestBody,
): void {
  const options = typeof optionsOrFn === "function" ? {} : optionsOrFn;
  const fn = typeof optionsOrFn === "function" ? optionsOrFn : maybeFn!;
  const why = missingFixtures(fixtures);
  if (why) console.log(`skipped: "${name}": ${why}`);
  Deno.test({ ...options, name, ignore: Boolean(options.ignore) || why !== null, fn });
}
