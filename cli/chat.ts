/**
 * `cllm chat`: an interactive loop. Prompts come from the checkpoint's chat template, or one of the
 * CLLM prompt formats (`--format vicuna|gsm8k|spider|code`; Vicuna when there is no template). Greedy
 * chat decodes with Jacobi by default (the reference's chat is Jacobi decoding). The KV cache is kept
 * across turns (decode/generation.ts `PrefixCache`), so each turn prefills only its new tokens.
 * Ctrl-C stops a reply, not the chat; `/reset` forgets the conversation; an empty line or Ctrl-D
 * ends it.
 *
 * @module
 */

import { decoderLabel, generateFromIds, GenerationCancelled, PrefixCache } from "../decode/mod.ts";
import { type ChatMessage, formatPrompt, type Pretrained, PROMPT_FORMATS, renderChat } from "../model/mod.ts";
import { CliError, numberOption, parse, required } from "./args.ts";
import { DECODER_FLAGS, DECODER_HELP, decoderFromFlags } from "./decoder_flags.ts";
import { closeModel, LOAD_FLAGS, LOAD_HELP, loadFlags, loadModelDir } from "./load.ts";

const HELP = `Usage: deno task cllm chat --model DIR [options]

Type a message and press Enter. Ctrl-C stops a reply; /reset starts a new conversation; an empty
line or Ctrl-D ends the chat. A line of statistics follows each reply (on stderr).

Options:
  --model DIR               Hugging Face-layout model directory
  --format F                template (the checkpoint's chat template; default when it has one), or a
                            CLLM prompt format: vicuna (default otherwise), gsm8k, spider, code (the
                            single-question formats send only your latest message)
  --max-new-tokens N        new-token budget per reply (default 256)
${LOAD_HELP}
${DECODER_HELP}
                            (chat's default decoder is jacobi when greedy)`;

/** How a conversation becomes a prompt. */
export type ChatFormat = "template" | "vicuna" | "gsm8k" | "spider" | "code";

/**
 * The prompt ids of a conversation, dropping its oldest turns until the prompt and `reserve` new
 * tokens fit `context`; `dropped` says how many messages went. Throws when even the latest message
 * alone does not fit.
 */
export function conversationIds(
  p: Pretrained,
  history: readonly ChatMessage[],
  format: ChatFormat,
  context: number,
  reserve: number,
): { ids: number[]; dropped: number } {
  const encode = (messages: readonly ChatMessage[]): number[] => {
    if (format === "template") {
      const text = renderChat(p.tokenizer.chatTemplate!, messages, {
        addGenerationPrompt: true,
        bosToken: p.tokenizer.bosToken,
        eosToken: p.tokenizer.eosToken,
      });
      return p.tokenizer.encode(text, { addBos: false });
    }
    if (format === "vicuna") return p.tokenizer.encode(formatPrompt("vicuna", { messages }));
    const last = messages[messages.length - 1].content;
    const field = format === "code" ? "doc" : "question";
    return p.tokenizer.encode(formatPrompt(format, { [field]: last }));
  };
  // A system message stays; whole user/assistant exchanges go from the oldest.
  const system = history[0]?.role === "system" ? [history[0]] : [];
  let rest = history.slice(system.length);
  let dropped = 0;
  for (;;) {
    const ids = encode([...system, ...rest]);
    if (ids.length + reserve + 1 <= context) return { ids, dropped };
    if (rest.length <= 1) {
      throw new CliError(
        `your message is ${ids.length} tokens, which with ${reserve} new tokens does not fit the context of ` +
          `${context}; write less, or lower --max-new-tokens`,
      );
    }
    const cut = rest.findIndex((m, i) => i > 0 && m.role === "user");
    const n = cut > 0 ? cut : 1;
    rest = rest.slice(n);
    dropped += n;
  }
}

/** Runs `chat`. */
export async function chatCommand(args: string[]): Promise<void> {
  const v = parse("chat", args, {
    model: { type: "string" },
    format: { type: "string" },
    "max-new-tokens": { type: "string" },
    ...DECODER_FLAGS,
    ...LOAD_FLAGS,
  });
  if (v.help) return console.log(HELP);
  const dir = required(v, "model", "chat");
  const maxNewTokens = numberOption(v, "max-new-tokens", 256, { integer: true, min: 1 });
  const { decoder, seed, readback } = decoderFromFlags("chat", v, { kind: "jacobi", blockSize: 16 });
  const formatFlag = v.format as string | undefined;
  const formats = ["template", ...Object.keys(PROMPT_FORMATS)];
  if (formatFlag !== undefined && !formats.includes(formatFlag)) {
    throw new CliError(`chat: --format must be one of ${formats.join(", ")}, not "${formatFlag}"`);
  }
  const p = await loadModelDir(dir, loadFlags(v));
  if (formatFlag === "template" && !p.tokenizer.chatTemplate) {
    throw new CliError(`chat: --format template, but ${dir} has no chat_template in tokenizer_config.json`);
  }
  const format = (formatFlag ?? (p.tokenizer.chatTemplate ? "template" : "vicuna")) as ChatFormat;
  console.error(
    `(${format === "template" ? "the checkpoint's chat template" : `the ${format} format`}; ${
      decoderLabel(decoder)
    } decoding; Ctrl-C stops a reply, /reset starts over)`,
  );
  const enc = new TextEncoder();
  const prefix = new PrefixCache();
  let history: ChatMessage[] = [];
  const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).pipeThrough(splitLines());
  const reader = lines.getReader();
  try {
    for (;;) {
      await Deno.stdout.write(enc.encode("\n> "));
      const { value, done } = await reader.read();
      if (done || value.trim() === "") break;
      if (value.trim() === "/reset") {
        history = [];
        console.error("(new conversation)");
        continue;
      }
      history.push({ role: "user", content: value });
      let prompt: { ids: number[]; dropped: number };
      try {
        prompt = conversationIds(p, history, format, p.model.maxLength, maxNewTokens);
      } catch (e) {
        if (!(e instanceof CliError)) throw e;
        console.error(`(${e.message})`);
        history.pop();
        continue;
      }
      if (prompt.dropped > 0) {
        console.error(
          `(the conversation no longer fits the context of ${p.model.maxLength} tokens: the oldest ` +
            `${prompt.dropped} messages are left out)`,
        );
        history = history.slice(prompt.dropped);
      }
      // Ctrl-C during a reply stops the reply (a listener replaces the default exit meanwhile).
      let interrupted = false;
      const onInterrupt = () => void (interrupted = true);
      Deno.addSignalListener("SIGINT", onInterrupt);
      const gen = generateFromIds(p, prompt.ids, {
        maxNewTokens,
        decoder,
        seed,
        prefixCache: prefix,
        ...readback,
      });
      let reply = "";
      try {
        for await (const piece of gen.pieces) {
          reply += piece;
          await Deno.stdout.write(enc.encode(piece));
          if (interrupted) break;
        }
      } finally {
        Deno.removeSignalListener("SIGINT", onInterrupt);
      }
      try {
        const r = await gen.result;
        const s = r.stats;
        console.error(
          `\n[${s.tokens} tokens, ${s.tokensPerSecond.toFixed(1)} tokens/s, ${
            s.tokensPerForward.toFixed(2)
          } tokens/forward; prefilled ${
            prompt.ids.length - prefix.reused
          } of ${prompt.ids.length} prompt tokens]`,
        );
      } catch (e) {
        if (!(e instanceof GenerationCancelled)) throw e;
        console.error("\n[stopped]");
      }
      const eos = p.tokenizer.eosToken;
      history.push({ role: "assistant", content: (eos ? reply.replace(eos, "") : reply).trim() });
    }
  } finally {
    reader.releaseLock();
    prefix.destroy();
    await closeModel(p);
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
