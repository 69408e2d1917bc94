/**
 * `cllm chat`: an interactive loop using the model's chat template (or the Vicuna format when the
 * checkpoint has none). Each turn re-encodes the conversation and streams the reply.
 *
 * @module
 */

import { generateFromIds } from "../decode/mod.ts";
import { type ChatMessage, formatPrompt, renderChat } from "../model/mod.ts";
import { numberOption, parse, required } from "./args.ts";
import { DECODER_FLAGS, DECODER_HELP, decoderFromFlags } from "./decoder_flags.ts";
import { loadModelDir } from "./load.ts";

const HELP = `Usage: deno task cllm chat --model DIR [options]

Type a message and press Enter; an empty line or Ctrl-D ends the chat.

Options:
  --model DIR               Hugging Face-layout model directory
  --max-new-tokens N        new-token budget per reply (default 256)
  --dtype f32|f16|bf16|q8|q4 weight matrices on the GPU (default: as the checkpoint stores them)
${DECODER_HELP}`;

/** Runs `chat`. */
export async function chatCommand(args: string[]): Promise<void> {
  const v = parse("chat", args, {
    model: { type: "string" },
    "max-new-tokens": { type: "string" },
    ...DECODER_FLAGS,
    dtype: { type: "string" },
  });
  if (v.help) return console.log(HELP);
  const dir = required(v, "model", "chat");
  const maxNewTokens = numberOption(v, "max-new-tokens", 256, { integer: true, min: 1 });
  const { decoder, seed, readback } = decoderFromFlags("chat", v);
  const p = await loadModelDir(dir, { dtype: v.dtype as string | undefined });
  const enc = new TextEncoder();
  const history: ChatMessage[] = [];
  const template = p.tokenizer.chatTemplate;
  if (!template) console.error("(no chat_template in tokenizer_config.json; using the Vicuna format)");
  const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).pipeThrough(splitLines());
  const reader = lines.getReader();
  try {
    for (;;) {
      await Deno.stdout.write(enc.encode("\n> "));
      const { value, done } = await reader.read();
      if (done || value.trim() === "") break;
      history.push({ role: "user", content: value });
      const ids = template
        ? p.tokenizer.encode(
          renderChat(template, history, {
            addGenerationPrompt: true,
            bosToken: p.tokenizer.bosToken,
            eosToken: p.tokenizer.eosToken,
          }),
          { addBos: false },
        )
        : p.tokenizer.encode(formatPrompt("vicuna", { messages: history }));
      const gen = generateFromIds(p, ids, { maxNewTokens, decoder, seed, ...readback });
      for await (const piece of gen.pieces) await Deno.stdout.write(enc.encode(piece));
      const result = await gen.result;
      history.push({ role: "assistant", content: p.tokenizer.decode(result.tokens).trim() });
    }
  } finally {
    reader.releaseLock();
    p.model.destroy();
    p.gpu.destroy();
  }
}

/** Splits a text stream into lines. */
function splitLines(): TransformStream<string, string> {
  let buffer = "";
  return new TransformStream({
    transform(chunk, controller) {
      buffer += chunk;
      const parts = buffer.split("\n");
      buffer = parts.pop() ?? "";
      for (const line of parts) controller.enqueue(line);
    },
    flush(controller) {
      if (buffer) controller.enqueue(buffer);
    },
  });
}
