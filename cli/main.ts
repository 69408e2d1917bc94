/**
 * The `cllm` command line: `deno task cllm <command> [options]`.
 *
 * Every command catches bad input and prints one clear line (no stack trace) with a non-zero exit;
 * set CLLM_DEBUG=1 to see stacks.
 *
 * @module
 */

import { benchCommand } from "./bench.ts";
import { chatCommand } from "./chat.ts";
import { convertCommand } from "./convert.ts";
import { evalCommand } from "./eval.ts";
import { generateCommand } from "./generate.ts";
import { infoCommand } from "./info.ts";
import { runCommand } from "./run.ts";
import { serveCommand } from "./serve.ts";
import { pretrainCommand, trainCommand } from "./train.ts";
import { trajectoryCommand } from "./trajectory.ts";

const COMMANDS: Record<string, { run: (args: string[]) => Promise<void>; summary: string }> = {
  generate: { run: generateCommand, summary: "generate text from a prompt (streams to stdout)" },
  chat: { run: chatCommand, summary: "interactive chat using the model's chat template" },
  serve: { run: serveCommand, summary: "an OpenAI-compatible HTTP API (chat and completions, streaming)" },
  info: { run: infoCommand, summary: "print a model's config, parameter count and GPU memory" },
  convert: { run: convertCommand, summary: "convert a llama2.c checkpoint to a Hugging Face directory" },
  bench: { run: benchCommand, summary: "bench decode: AR vs Jacobi on the same prompts, outputs checked" },
  trajectory: { run: trajectoryCommand, summary: "collect Jacobi trajectories (JSONL) for training" },
  train: { run: trainCommand, summary: "consistency training on Jacobi trajectories (CLLM)" },
  pretrain: { run: pretrainCommand, summary: "AR training from random weights on a text corpus" },
  eval: { run: evalCommand, summary: "GSM8K accuracy with any decoder, per-item JSONL log" },
};

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return `Usage: deno task cllm <command> [options]\n\nCommands:\n${lines.join("\n")}\n\n` +
    `Run "deno task cllm <command> --help" for a command's options.\n\n` +
    `The demo lives in demo/: "deno task demo" streams held-out problems on the embedded base model and\n` +
    `CLLM (AR vs Jacobi decoding); "deno task make-models" makes those models from nothing.`;
}

/** Runs the CLI with `argv` (without the program name); returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(usage());
    return name ? 0 : 2;
  }
  const command = COMMANDS[name];
  if (!command) {
    console.error(`error: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  return await runCommand(command.run, rest);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
