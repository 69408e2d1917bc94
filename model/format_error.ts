/**
 * The one error type for bad input files (checkpoints, configs, tokenizers, trajectories).
 *
 * The message names the file, the field or offset, and what to do next, so the CLI can print it as
 * it is, without a stack trace.
 *
 * @module
 */

/**
 * A file that cannot be used as it is.
 *
 * @example Raising one
 * ```ts
 * import { FormatError } from "./format_error.ts";
 * const err = new FormatError("config.json", 'field "hidden_size" is missing', "add it");
 * console.log(err.message); // Cannot load "config.json": field "hidden_size" is missing; add it
 * ```
 */
export class FormatError extends Error {
  /** The file (or source name) that failed. */
  readonly file: string;
  /**
   * Creates the error; the message reads `Cannot load "<file>": <problem>; <fix>`.
   *
   * @param file the file or source name
   * @param problem what is wrong, with the offending value quoted
   * @param fix what the user can do about it (optional)
   */
  constructor(file: string, problem: string, fix?: string) {
    super(`Cannot load "${file}": ${problem}${fix ? `; ${fix}` : ""}`);
    this.name = "FormatError";
    this.file = file;
  }
}
