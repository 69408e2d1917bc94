/**
 * Runs one command and turns its errors into one clear line on stderr and an exit code: 2 for
 * usage errors, 1 for bad input and everything else (no stack trace unless CLLM_DEBUG=1).
 *
 * @module
 */

import { GpuError } from "../core/mod.ts";
import { FormatError } from "../model/mod.ts";
import { CliError } from "./args.ts";

/** Runs `command(args)`; returns the exit code. */
export async function runCommand(
  command: (args: string[]) => Promise<void>,
  args: string[],
): Promise<number> {
  try {
    await command(args);
    return 0;
  } catch (e) {
    if (Deno.env.get("CLLM_DEBUG")) console.error(e);
    if (e instanceof CliError) {
      console.error(`error: ${e.message}`);
      return 2;
    }
    if (
      e instanceof FormatError || e instanceof GpuError || e instanceof RangeError ||
      e instanceof TypeError ||
      e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied
    ) {
      console.error(`error: ${e.message}`);
      return 1;
    }
    console.error(`error: ${(e as Error)?.message ?? e} (set CLLM_DEBUG=1 for details)`);
    return 1;
  }
}
