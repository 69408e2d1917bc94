/**
 * Prompt text for a model: its own Jinja chat template, or one of the built-in CLLM prompt formats.
 *
 * A checkpoint with `chat_template` in `tokenizer_config.json` is rendered with
 * `@huggingface/jinja`, exactly as `transformers`' `apply_chat_template` would. The CLLM checkpoints
 * mostly have no template; they were trained on fixed prompt formats (docs/docs/method.md §3), which
 * `PROMPT_FORMATS` reproduces character for character, since a Jacobi-trained model only speeds up on
 * the prompt distribution it was trained on.
 *
 * @module
 */

import { Template } from "@huggingface/jinja";
import { FormatError } from "./format_error.ts";

/**
 * One turn of a conversation.
 *
 * @example A user turn
 * ```ts
 * import type { ChatMessage } from "./chat_template.ts";
 * const m: ChatMessage = { role: "user", content: "Hello" };
 * ```
 */
export interface ChatMessage {
  /** `"system"`, `"user"` or `"assistant"` (templates may accept others). */
  role: string;
  /** The text of the turn. */
  content: string;
}

/**
 * Options for {@linkcode renderChat}.
 *
 * @example Asking for the assistant's reply
 * ```ts
 * import type { RenderChatOptions } from "./chat_template.ts";
 * const opts: RenderChatOptions = { addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>" };
 * ```
 */
export interface RenderChatOptions {
  /** End with the text that opens an assistant turn (`add_generation_prompt`). Default false. */
  addGenerationPrompt?: boolean;
  /** Value of `bos_token` inside the template. Default "". */
  bosToken?: string;
  /** Value of `eos_token` inside the template. Default "". */
  eosToken?: string;
  /** File named in errors. Default `"tokenizer_config.json"`. */
  file?: string;
}

/**
 * Renders a conversation with a Hugging Face Jinja chat template.
 *
 * @param template the `chat_template` string
 * @param messages the conversation so far
 * @param options generation prompt and special-token text
 * @returns the prompt text (tokenize it without adding BOS again if the template writes `bos_token`)
 * @throws {FormatError} naming `"chat_template"` when the template does not parse or fails to render
 *   (including the template's own `raise_exception`, e.g. for roles that do not alternate)
 *
 * @example A Llama-2-chat style template
 * ```ts
 * import { renderChat } from "./chat_template.ts";
 * const tpl = "{% for m in messages %}{% if m.role == 'user' %}{{ bos_token }}[INST] {{ m.content }} [/INST]" +
 *   "{% else %} {{ m.content }} {{ eos_token }}{% endif %}{% endfor %}";
 * const text = renderChat(tpl, [{ role: "user", content: "Hi" }], { bosToken: "<s>", eosToken: "</s>" });
 * console.log(text); // "<s>[INST] Hi [/INST]"
 * ```
 */
export function renderChat(
  template: string,
  messages: readonly ChatMessage[],
  options: RenderChatOptions = {},
): string {
  const file = options.file ?? "tokenizer_config.json";
  let tpl: Template;
  try {
    tpl = new Template(template);
  } catch (e) {
    throw new FormatError(
      file,
      `field "chat_template" does not parse as Jinja (${(e as Error).message})`,
      "fix the template, or remove it and choose a built-in prompt format",
    );
  }
  try {
    return tpl.render({
      messages: messages.map((m) => ({ role: m.role, content: m.content })),
      add_generation_prompt: options.addGenerationPrompt ?? false,
      bos_token: options.bosToken ?? "",
      eos_token: options.eosToken ?? "",
    });
  } catch (e) {
    throw new FormatError(
      file,
      `field "chat_template" failed to render ${messages.length} message(s) (${(e as Error).message})`,
      "check the message roles the template expects, or choose a built-in prompt format",
    );
  }
}

// ---------------------------------------------------------------------------------------------------
// Built-in prompt formats (docs/docs/method.md §3)

/**
 * Inputs to a built-in prompt format: named strings, or `messages` for multi-turn chat formats.
 *
 * @example GSM8K fields
 * ```ts
 * import type { PromptFields } from "./chat_template.ts";
 * const f: PromptFields = { question: "What is 2 + 3?" };
 * ```
 */
export type PromptFields = Readonly<Record<string, string | readonly ChatMessage[] | undefined>>;

/**
 * A built-in prompt format.
 *
 * @example Rendering one directly
 * ```ts
 * import { PROMPT_FORMATS } from "./chat_template.ts";
 * console.log(PROMPT_FORMATS.gsm8k.render({ question: "1+1?" }));
 * ```
 */
export interface PromptFormat {
  /** One line saying which checkpoints use it. */
  readonly description: string;
  /** Field names it reads (at least one of them for vicuna: `question` or `messages`). */
  readonly fields: readonly string[];
  /** Builds the prompt text; throws `TypeError` for a missing field. */
  render(fields: PromptFields): string;
}

/** The FastChat `vicuna_v1.1` system prompt. */
const _VICUNA_SYSTEM = "A chat between a curious user and an artificial intelligence assistant. " +
  "The assistant gives helpful, detailed, and polite answers to the user's questions.";

/** The instruction the CLLM Spider data puts before the schema and question. */
const _SPIDER_INSTRUCTION =
  "Could you translate the following question into SQL. Please only generate SQL, " +
  "don't include explanation in the answer. ";

/** The instruction the CLLM CodeSearchNet data puts before the docstring. */
const _CODE_INSTRUCTION = "Please generate code based on the following doc:\n";

function _field(format: string, fields: PromptFields, name: string): string {
  const v = fields[name];
  if (typeof v !== "string") {
    throw new TypeError(
      `Cannot build the "${format}" prompt: field "${name}" is ${
        v === undefined ? "missing" : "not a string"
      }; ` +
        `pass { ${name}: "..." }`,
    );
  }
  return v;
}

/**
 * deepseek-coder's instruction wrapper, as CLLM's `build_instruction_prompt`: the instruction is
 * stripped of surrounding whitespace first.
 */
function _instruction(text: string): string {
  return `### Instruction:\n${text.trim()}\n### Response:\n`;
}

/** FastChat `ADD_COLON_TWO`: separators " " after user turns and "</s>" after assistant turns. */
function _vicuna(messages: readonly ChatMessage[]): string {
  let system = _VICUNA_SYSTEM;
  let turns = messages;
  if (turns.length > 0 && turns[0].role === "system") {
    system = turns[0].content;
    turns = turns.slice(1);
  }
  let out = system + " ";
  turns.forEach((m, i) => {
    const expected = i % 2 === 0 ? "user" : "assistant";
    if (m.role !== expected) {
      throw new TypeError(
        `Cannot build the "vicuna" prompt: message ${i} has role "${m.role}" but "${expected}" was expected; ` +
          "turns must alternate user, assistant, user, ... (an optional system message first)",
      );
    }
    out += `${m.role === "user" ? "USER" : "ASSISTANT"}: ${m.content}${i % 2 === 0 ? " " : "</s>"}`;
  });
  // The open assistant turn the model completes (FastChat appends ("ASSISTANT", None)).
  if (turns.length % 2 === 1) out += "ASSISTANT:";
  return out;
}

/**
 * Python's `repr` of a string, as it appears in the Spider schema text (`['id', 'name']`).
 * Python picks double quotes only when the string has a single quote and no double quote.
 */
function _pyRepr(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  const body = s.replaceAll("\\", "\\\\").replaceAll(quote, `\\${quote}`).replaceAll("\n", "\\n")
    .replaceAll("\t", "\\t").replaceAll("\r", "\\r");
  return quote + body + quote;
}

/**
 * The Spider schema sentence exactly as CLLM's trajectory script writes it:
 * `"The SQL database has table named T with columns ['a', 'b'], table named U with columns [...], "`.
 *
 * @param tables tables in database order, each with its column names
 * @returns the schema text to pass as the `schema` field of the `spider` format
 *
 * @example Two tables
 * ```ts
 * import { spiderSchema } from "./chat_template.ts";
 * spiderSchema([{ name: "singer", columns: ["id", "name"] }]);
 * // "The SQL database has table named singer with columns ['id', 'name'], "
 * ```
 */
export function spiderSchema(tables: readonly { name: string; columns: readonly string[] }[]): string {
  let out = "The SQL database has ";
  for (const t of tables) {
    out += `table named ${t.name} with columns [${t.columns.map(_pyRepr).join(", ")}], `;
  }
  return out;
}

/** Names of the built-in prompt formats. */
export type PromptFormatName = "gsm8k" | "vicuna" | "spider" | "code";

/**
 * The built-in prompt formats of the CLLM task families (docs/docs/method.md §3).
 *
 * - `gsm8k` (`question`): `"Question:\n{question}\nAnswer:\nLet's think step by step.\n"`.
 * - `vicuna` (`question`, or `messages` for several turns): FastChat `vicuna_v1.1`.
 * - `spider` (`schema` from {@linkcode spiderSchema}, `question`): the `### Instruction:` wrapper.
 * - `code` (`doc`): the `### Instruction:` wrapper around the CodeSearchNet instruction.
 *
 * @example Listing them
 * ```ts
 * import { PROMPT_FORMATS } from "./chat_template.ts";
 * for (const [name, f] of Object.entries(PROMPT_FORMATS)) console.log(name, f.description);
 * ```
 */
export const PROMPT_FORMATS: Readonly<Record<PromptFormatName, PromptFormat>> = Object.freeze({
  gsm8k: {
    description: "GSM8K math (GAIR/Abel-7B-001, cllm/consistency-llm-7b-math)",
    fields: ["question"],
    render: (f: PromptFields) =>
      `Question:\n${_field("gsm8k", f, "question")}\nAnswer:\nLet's think step by step.\n`,
  },
  vicuna: {
    description: "ShareGPT chat, FastChat vicuna_v1.1 (cllm/consistency-llm-7b-sharegpt48k)",
    fields: ["question", "messages"],
    render: (f: PromptFields) => {
      const messages = f.messages;
      if (messages !== undefined) {
        if (!Array.isArray(messages)) {
          throw new TypeError(
            'Cannot build the "vicuna" prompt: field "messages" is not an array of messages',
          );
        }
        return _vicuna(messages);
      }
      return _vicuna([{ role: "user", content: _field("vicuna", f, "question") }]);
    },
  },
  spider: {
    description: "Spider text-to-SQL, deepseek-coder instruction format (cllm/consistency-llm-7b-spider)",
    fields: ["schema", "question"],
    render: (f: PromptFields) =>
      _instruction(
        _SPIDER_INSTRUCTION + _field("spider", f, "schema") + "Question: " + _field("spider", f, "question"),
      ),
  },
  code: {
    description:
      "CodeSearchNet Python, deepseek-coder instruction format (cllm/consistency-llm-7b-codesearchnet)",
    fields: ["doc"],
    render: (f: PromptFields) => _instruction(_CODE_INSTRUCTION + _field("code", f, "doc")),
  },
});

/**
 * Builds a prompt with a built-in format.
 *
 * @param name one of the keys of {@linkcode PROMPT_FORMATS}
 * @param fields the format's fields
 * @returns the prompt text (tokenize with BOS, as the CLLM scripts do)
 * @throws {RangeError} for an unknown format name; {TypeError} for a missing field
 *
 * @example A GSM8K prompt
 * ```ts
 * import { formatPrompt } from "./chat_template.ts";
 * formatPrompt("gsm8k", { question: "What is 2 + 3?" });
 * // "Question:\nWhat is 2 + 3?\nAnswer:\nLet's think step by step.\n"
 * ```
 */
export function formatPrompt(name: string, fields: PromptFields): string {
  if (!Object.hasOwn(PROMPT_FORMATS, name)) {
    throw new RangeError(
      `Unknown prompt format "${name}"; choose one of ${Object.keys(PROMPT_FORMATS).join(", ")}`,
    );
  }
  return PROMPT_FORMATS[name as PromptFormatName].render(fields);
}
