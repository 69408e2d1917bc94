/**
 * The demo's entry point: `deno task demo [options]` runs the demo (demo/demo.ts);
 * `deno task make-models [options]` makes its models from nothing (demo/make_models.ts).
 *
 * @module
 */

import { runCommand } from "../cli/run.ts";
import { demoCommand } from "./demo.ts";
import { makeModelsCommand } from "./make_models.ts";

if (import.meta.main) {
  const [first, ...rest] = Deno.args;
  Deno.exit(
    first === "make-models"
      ? await runCommand(makeModelsCommand, rest)
      : await runCommand(demoCommand, Deno.args),
  );
}
