/**
 * `cllm convert`: llama2.c checkpoint + tokenizer → Hugging Face directory.
 *
 * @module
 */

import { convertLlama2c } from "../model/mod.ts";
import { CliError, parse, required } from "./args.ts";

const HELP =
  `Usage: deno task cllm convert --from llama2c --checkpoint X.bin --tokenizer tok.bin --out DIR [--force]

Writes DIR with config.json, model.safetensors, tokenizer.json, tokenizer_config.json and
generation_config.json, atomically (a failed conversion leaves nothing at DIR).`;

/** Runs `convert`. */
export async function convertCommand(args: string[]): Promise<void> {
  const v = parse("convert", args, {
    from: { type: "string" },
    checkpoint: { type: "string" },
    tokenizer: { type: "string" },
    out: { type: "string" },
    force: { type: "boolean" },
  });
  if (v.help) return console.log(HELP);
  const from = required(v, "from", "convert");
  if (from !== "llama2c") {
    throw new CliError(`convert: --from "${from}" is not supported; use --from llama2c`);
  }
  const result = await convertLlama2c({
    checkpoint: required(v, "checkpoint", "convert"),
    tokenizer: required(v, "tokenizer", "convert"),
    out: required(v, "out", "convert"),
    force: Boolean(v.force),
  });
  console.log(`wrote ${result.files.join(", ")} to ${result.out}`);
}
