/**
 * Command-line parsing shared by the commands: `node:util` parseArgs with strict checking, typed
 * number options, and usage errors that say what to type.
 *
 * @module
 */

import { parseArgs, type ParseArgsConfig } from "node:util";

/** A usage error: printed as one line, exit code 2. */
export class CliError extends Error {
  /** Creates the error from a message that says what was wrong and what to type instead. */
  constructor(message: string) {
    super(message);
    this.name = "CliError";
  }
}

/** Option declarations as parseArgs takes them. */
export type Options = NonNullable<ParseArgsConfig["options"]>;

/** Parses `args` strictly; unknown options and missing values become a CliError. */
export function parse(
  command: string,
  args: string[],
  options: Options,
): Record<string, string | boolean | undefined> {
  try {
    const { values } = parseArgs({
      args,
      options: { ...options, help: { type: "boolean", short: "h" } },
      strict: true,
    });
    return values as Record<string, string | boolean | undefined>;
  } catch (e) {
    throw new CliError(`${(e as Error).message} (see "deno task cllm ${command} --help")`);
  }
}

/** A required string option. */
export function required(values: Record<string, unknown>, name: string, command: string): string {
  const v = values[name];
  if (typeof v !== "string" || v === "") throw new CliError(`${command}: --${name} is required`);
  return v;
}

/** A numeric option (integer when `integer`), with bounds. */
export function numberOption(
  values: Record<string, unknown>,
  name: string,
  fallback: number,
  opts: { integer?: boolean; min?: number; max?: number } = {},
): number {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || (opts.integer && !Number.isInteger(v))) {
    throw new CliError(`--${name} must be ${opts.integer ? "an integer" : "a number"}, not "${raw}"`);
  }
  if (opts.min !== undefined && v < opts.min) {
    throw new CliError(`--${name} must be at least ${opts.min}, not ${v}`);
  }
  if (opts.max !== undefined && v > opts.max) {
    throw new CliError(`--${name} must be at most ${opts.max}, not ${v}`);
  }
  return v;
}

/** A string option restricted to `choices`. */
export function choiceOption<T extends string>(
  values: Record<string, unknown>,
  name: string,
  choices: readonly T[],
  fallback: T,
): T {
  const raw = values[name];
  if (raw === undefined) return fallback;
  if (!choices.includes(raw as T)) {
    throw new CliError(`--${name} must be one of ${choices.join(", ")}, not "${raw}"`);
  }
  return raw as T;
}
