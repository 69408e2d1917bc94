/**
 * An OpenAI-compatible HTTP API over one loaded model, as a `Request → Response` handler (so tests
 * call it in process, and `cllm serve` hands it to `Deno.serve`):
 *
 * - `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`, each streaming
 *   (server-sent events) or not, with `max_tokens`/`max_completion_tokens`, `temperature`, `top_p`,
 *   `seed`, `stop` and `stream_options.include_usage`. Replies carry `usage` as OpenAI reports it
 *   and the decoder's statistics in an extra `cllm` field.
 * - Every request runs the server's decoder (Jacobi on a CLLM): greedy at temperature 0 or absent,
 *   sampled otherwise (lossless: the reply has the model's sampling distribution).
 * - One GPU, so one generation at a time (its KV cache kept, so a request extending the previous
 *   one, such as a chat's next turn, prefills only its new tokens): requests wait in arrival order in a bounded queue; a
 *   full queue answers 429 with `Retry-After`. A client that disconnects, queued or streaming,
 *   frees its place at once (a running generation stops at its next tokens).
 * - Errors are OpenAI's error object with the matching status: 400 bad fields, 401 wrong key, 404
 *   unknown model or route, 405 wrong method, 413 body too large, 429 queue full, 503 while the
 *   model loads. The handler never throws: whatever goes wrong in one request, the next is served.
 *
 * @module
 */

import {
  type Decoder,
  type DecodeResult,
  decoderLabel,
  generateFromIds,
  GenerationCancelled,
  PrefixCache,
  type ReadbackOptions,
} from "../decode/mod.ts";
import { type ChatMessage, formatPrompt, type Pretrained, renderChat } from "../model/mod.ts";

/** How the server runs. */
export interface OpenAiServerOptions {
  /** The model's name in the API (`model` in requests and replies). */
  modelId: string;
  /** Requests must send `Authorization: Bearer <apiKey>` (none: open). */
  apiKey?: string;
  /** The decoder for greedy requests (default greedy AR). */
  decoder?: Decoder;
  /** Readback cadence for the decoders. */
  readback?: ReadbackOptions;
  /** Requests that may wait while one runs (default 16); more get 429. */
  queueSize?: number;
  /** Largest request body in bytes (default 1 MiB); larger gets 413. */
  maxBodyBytes?: number;
  /** Routes outside /v1 (e.g. the web page at `/`); null passes to the API's 404. */
  otherRoutes?: (request: Request) => Promise<Response | null>;
}

/** The server: a fetch handler, and the model to give it once loaded (503 until then). */
export interface OpenAiServer {
  /** Answers one request; never throws. */
  handler: (request: Request) => Promise<Response>;
  /** Sets the model; requests before this get 503. */
  setModel: (pretrained: Pretrained) => void;
  /** Generations running or waiting. */
  readonly pending: number;
}

/** An error the client caused (or a state it should retry), as OpenAI reports it. */
class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

const bad = (message: string, param: string | null = null, code: string | null = null) =>
  new ApiError(400, message, "invalid_request_error", param, code);

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

function errorResponse(e: ApiError): Response {
  return json(
    e.status,
    { error: { message: e.message, type: e.type, param: e.param, code: e.code } },
    e.headers,
  );
}

// ---------------------------------------------------------------------------------------------
// Request fields

/** What a completion request asks for, checked. */
interface CompletionRequest {
  /** Chat messages (chat completions) or a prompt (completions). */
  messages?: ChatMessage[];
  prompt?: string;
  maxTokens?: number;
  temperature: number;
  topP: number;
  seed?: number;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
}

function optionalNumber(
  body: Record<string, unknown>,
  name: string,
  check: { min?: number; max?: number; integer?: boolean; aboveMin?: boolean },
): number | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  const kind = check.integer ? "an integer" : "a number";
  if (typeof v !== "number" || !Number.isFinite(v) || (check.integer && !Number.isInteger(v))) {
    throw bad(`'${name}' must be ${kind}, not ${JSON.stringify(v)}`, name);
  }
  if (check.min !== undefined && (check.aboveMin ? v <= check.min : v < check.min)) {
    throw bad(`'${name}' must be ${check.aboveMin ? "above" : "at least"} ${check.min}, not ${v}`, name);
  }
  if (check.max !== undefined && v > check.max) {
    throw bad(`'${name}' must be at most ${check.max}, not ${v}`, name);
  }
  return v;
}

function optionalBoolean(body: Record<string, unknown>, name: string): boolean {
  const v = body[name];
  if (v === undefined || v === null) return false;
  if (typeof v !== "boolean") throw bad(`'${name}' must be a boolean, not ${JSON.stringify(v)}`, name);
  return v;
}

/** A message's text: a string, or the text parts of a content array. */
function messageText(content: unknown, param: string): string {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) {
    return content.map((part, i) => {
      const p = part as { type?: unknown; text?: unknown };
      if (p?.type !== "text" || typeof p.text !== "string") {
        throw bad(
          `${param}[${i}] must be a text part ({"type": "text", "text": "..."}); this model reads text only`,
          `${param}[${i}]`,
        );
      }
      return p.text;
    }).join("");
  }
  throw bad(`'${param}' must be a string or an array of text parts`, param);
}

const ROLES = new Set(["system", "developer", "user", "assistant", "tool"]);

function parseRequest(body: Record<string, unknown>, chat: boolean): CompletionRequest {
  const request: CompletionRequest = {
    temperature: optionalNumber(body, "temperature", { min: 0, max: 2 }) ?? 0,
    topP: optionalNumber(body, "top_p", { min: 0, max: 1, aboveMin: true }) ?? 1,
    seed: optionalNumber(body, "seed", { integer: true }),
    stop: [],
    stream: optionalBoolean(body, "stream"),
    includeUsage: false,
  };
  const maxTokens = optionalNumber(body, "max_completion_tokens", { integer: true, min: 1 }) ??
    optionalNumber(body, "max_tokens", { integer: true, min: 1 });
  request.maxTokens = maxTokens;
  const n = optionalNumber(body, "n", { integer: true, min: 1 });
  if (n !== undefined && n !== 1) {
    throw bad(`'n' must be 1 here (one GPU generates one choice), not ${n}`, "n");
  }
  const stop = body.stop;
  if (stop !== undefined && stop !== null) {
    const list = typeof stop === "string" ? [stop] : stop;
    if (
      !Array.isArray(list) || list.length > 4 || !list.every((s) => typeof s === "string" && s.length > 0)
    ) {
      throw bad("'stop' must be a non-empty string or an array of at most 4 of them", "stop");
    }
    request.stop = list as string[];
  }
  const streamOptions = body.stream_options;
  if (streamOptions !== undefined && streamOptions !== null) {
    if (typeof streamOptions !== "object" || Array.isArray(streamOptions)) {
      throw bad("'stream_options' must be an object", "stream_options");
    }
    if (!request.stream) {
      throw bad("'stream_options' is only allowed when 'stream' is true", "stream_options");
    }
    request.includeUsage = optionalBoolean(streamOptions as Record<string, unknown>, "include_usage");
  }
  if (chat) {
    const messages = body.messages;
    if (!Array.isArray(messages) || messages.length === 0) {
      throw bad("'messages' must be a non-empty array of messages", "messages");
    }
    request.messages = messages.map((m, i) => {
      const msg = m as { role?: unknown; content?: unknown };
      if (typeof msg !== "object" || msg === null || typeof msg.role !== "string" || !ROLES.has(msg.role)) {
        throw bad(`messages[${i}].role must be one of ${[...ROLES].join(", ")}`, `messages[${i}].role`);
      }
      const role = msg.role === "developer" ? "system" : msg.role;
      return { role, content: messageText(msg.content, `messages[${i}].content`) } as ChatMessage;
    });
  } else {
    const prompt = body.prompt;
    const text = typeof prompt === "string"
      ? prompt
      : Array.isArray(prompt) && prompt.length === 1 && typeof prompt[0] === "string"
      ? prompt[0]
      : undefined;
    if (text === undefined) throw bad("'prompt' must be a string (or an array of one string)", "prompt");
    request.prompt = text;
  }
  return request;
}

// ---------------------------------------------------------------------------------------------
// The queue

interface QueuedJob {
  run: () => Promise<void>;
  done: () => void;
  cancelled: boolean;
}

/** Runs jobs one at a time in arrival order; at most `limit` wait. */
class JobQueue {
  #waiting: QueuedJob[] = [];
  #running = false;
  constructor(readonly limit: number) {}

  get pending(): number {
    return this.#waiting.length + (this.#running ? 1 : 0);
  }

  /**
   * Queues `run`; throws 429 when the queue is full. The returned `cancel` drops the job if it has
   * not started (a client gone while waiting).
   */
  add(run: () => Promise<void>): { finished: Promise<void>; cancel: () => void } {
    if (this.#waiting.length >= this.limit) {
      throw new ApiError(
        429,
        `the server is busy: ${this.limit} requests are already waiting; retry shortly`,
        "rate_limit_exceeded",
        null,
        "rate_limit_exceeded",
        { "retry-after": "1" },
      );
    }
    let done!: () => void;
    const finished = new Promise<void>((resolve) => done = resolve);
    const job: QueuedJob = { run, done, cancelled: false };
    this.#waiting.push(job);
    void this.#pump();
    return {
      finished,
      cancel: () => {
        const i = this.#waiting.indexOf(job);
        if (i >= 0) {
          this.#waiting.splice(i, 1);
          job.done();
        }
      },
    };
  }

  async #pump(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    try {
      for (let job = this.#waiting.shift(); job; job = this.#waiting.shift()) {
        try {
          await job.run();
        } catch (e) {
          console.error(`serve: a generation failed: ${(e as Error).message}`);
        } finally {
          job.done();
        }
      }
    } finally {
      this.#running = false;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Generation with stop strings

/** The outcome of one generation, as the API reports it. */
interface Completion {
  finishReason: "stop" | "length";
  promptTokens: number;
  completionTokens: number;
  /** The decoder's statistics (absent when a stop string or a disconnect ended it early). */
  stats?: Record<string, unknown>;
}

/**
 * The server's decoder with the request's sampling settings: greedy when the temperature is 0,
 * else the same decoder sampling (lossless: the text has AR sampling's distribution).
 */
function requestDecoder(decoder: Decoder, request: CompletionRequest): Decoder {
  if (!(request.temperature > 0)) return { ...decoder, sampling: undefined };
  return { ...decoder, sampling: { temperature: request.temperature, topP: request.topP } };
}

/**
 * Generates from `ids`, passing text to `emit` as it is final: with stop strings, text that could
 * still turn out to begin one is held back, and the first stop string ends the generation (it and
 * what follows are dropped). `signal` aborts between pieces.
 */
async function complete(
  p: Pretrained,
  ids: number[],
  request: CompletionRequest & { maxTokens: number },
  decoder: Decoder,
  readback: ReadbackOptions,
  prefixCache: PrefixCache,
  signal: AbortSignal,
  emit: (text: string) => void,
): Promise<Completion> {
  const gen = generateFromIds(p, ids, {
    maxNewTokens: request.maxTokens,
    decoder: requestDecoder(decoder, request),
    seed: request.seed,
    prefixCache,
    ...readback,
  });
  const eos = new Set(p.eosIds.map((id) => p.tokenizer.decode([id])).filter((s) => s.length > 0));
  const hold = Math.max(0, ...request.stop.map((s) => s.length - 1));
  let text = "";
  let sent = 0;
  let stopped = false;
  for await (const piece of gen.pieces) {
    if (signal.aborted) break;
    text += piece;
    const at = request.stop.map((s) => text.indexOf(s, Math.max(0, sent - hold))).filter((i) => i >= 0);
    if (at.length > 0) {
      const end = Math.min(...at);
      if (end > sent) emit(text.slice(sent, end));
      sent = end;
      stopped = true;
      break; // ends the generation (generateFromIds closes it)
    }
    const safe = text.length - hold;
    if (safe > sent) {
      emit(text.slice(sent, safe));
      sent = safe;
    }
  }
  let result: (DecodeResult & { text: string }) | undefined;
  try {
    result = await gen.result;
  } catch (e) {
    if (!(e instanceof GenerationCancelled)) throw e;
  }
  if (result && !stopped) {
    // The end-of-sequence token is a stop, not text.
    let tail = text.slice(sent);
    for (const s of eos) if (tail.endsWith(s)) tail = tail.slice(0, -s.length);
    if (tail) emit(tail);
  }
  const s = result?.stats;
  return {
    finishReason: stopped || result?.stopReason === "eos" ? "stop" : "length",
    promptTokens: ids.length,
    completionTokens: result?.tokens.length ?? gen.tokensSoFar(),
    stats: s && {
      decoder: s.decoder,
      forwards: s.forwards,
      tokens_per_forward: s.tokensPerForward,
      tokens_per_second: s.tokensPerSecond,
      prefill_seconds: s.prefillSeconds,
      decode_seconds: s.decodeSeconds,
    },
  };
}

function usage(c: Completion) {
  return {
    prompt_tokens: c.promptTokens,
    completion_tokens: c.completionTokens,
    total_tokens: c.promptTokens + c.completionTokens,
  };
}

// ---------------------------------------------------------------------------------------------
// The handler

/** Reads a body of at most `limit` bytes as JSON; 413 past the limit, 400 when not a JSON object. */
async function readJson(request: Request, limit: number): Promise<Record<string, unknown>> {
  const tooLarge = () =>
    new ApiError(
      413,
      `the request body is over ${limit} bytes`,
      "invalid_request_error",
      null,
      "request_too_large",
    );
  const declared = Number(request.headers.get("content-length") ?? NaN);
  if (declared > limit) throw tooLarge();
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (request.body) {
    for await (const chunk of request.body) {
      size += chunk.length;
      if (size > limit) throw tooLarge();
      chunks.push(chunk);
    }
  }
  const bytes = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw bad(`the body is not valid JSON (${(e as Error).message})`);
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw bad("the body must be a JSON object");
  }
  return body as Record<string, unknown>;
}

/**
 * Makes the server.
 *
 * @example Serving a loaded model with Deno.serve
 * ```ts ignore
 * const server = createOpenAiServer({ modelId: "gsm-tiny-cllm", decoder: { kind: "jacobi", blockSize: 16 } });
 * Deno.serve({ hostname: "127.0.0.1", port: 8000 }, server.handler);
 * server.setModel(await loadPretrained(gpu, directoryFiles(dir)));
 * ```
 */
export function createOpenAiServer(options: OpenAiServerOptions): OpenAiServer {
  const queue = new JobQueue(options.queueSize ?? 16);
  const maxBody = options.maxBodyBytes ?? 1 << 20;
  const decoder = options.decoder ?? { kind: "ar" };
  const readback = options.readback ?? {};
  // Requests run one at a time, so one kept KV cache serves them all: a request that extends an
  // earlier one (the next turn of a chat) prefills only its new tokens.
  const prefix = new PrefixCache();
  const created = Math.floor(Date.now() / 1000);
  let model: Pretrained | null = null;
  let counter = 0;

  const promptIds = (p: Pretrained, r: CompletionRequest): number[] => {
    if (r.prompt !== undefined) return p.tokenizer.encode(r.prompt);
    const template = p.tokenizer.chatTemplate;
    if (!template) return p.tokenizer.encode(formatPrompt("vicuna", { messages: r.messages! }));
    const text = renderChat(template, r.messages!, {
      addGenerationPrompt: true,
      bosToken: p.tokenizer.bosToken,
      eosToken: p.tokenizer.eosToken,
    });
    return p.tokenizer.encode(text, { addBos: false });
  };

  async function completion(request: Request, chat: boolean): Promise<Response> {
    const body = await readJson(request, maxBody);
    if (typeof body.model !== "string") throw bad("'model' must be a string", "model");
    if (body.model !== options.modelId) {
      throw new ApiError(
        404,
        `The model '${body.model}' does not exist; this server serves '${options.modelId}'`,
        "invalid_request_error",
        "model",
        "model_not_found",
      );
    }
    const r = parseRequest(body, chat);
    const p = model!;
    let ids: number[];
    try {
      ids = promptIds(p, r);
    } catch (e) {
      throw bad(`the prompt could not be formatted: ${(e as Error).message}`, chat ? "messages" : "prompt");
    }
    const context = p.model.maxLength;
    const room = context - ids.length - 1;
    if (room < 1) {
      throw bad(
        `the prompt is ${ids.length} tokens, which leaves no room in the model's context of ${context}`,
        chat ? "messages" : "prompt",
        "context_length_exceeded",
      );
    }
    if (r.maxTokens !== undefined && r.maxTokens > room) {
      throw bad(
        `max_tokens ${r.maxTokens} + the prompt's ${ids.length} tokens is past the model's context of ${context}; ` +
          `ask for at most ${room}`,
        body.max_completion_tokens !== undefined ? "max_completion_tokens" : "max_tokens",
        "context_length_exceeded",
      );
    }
    const req = { ...r, maxTokens: r.maxTokens ?? room };
    const id = `${chat ? "chatcmpl" : "cmpl"}-${(++counter).toString(36)}${Date.now().toString(36)}`;
    const now = Math.floor(Date.now() / 1000);
    const object = chat ? "chat.completion" : "text_completion";
    const abort = new AbortController();
    const label = decoderLabel(requestDecoder(decoder, req));

    if (!req.stream) {
      // Until the reply is sent, an aborted request means the client left (a streaming reply
      // learns that from its stream's cancellation instead).
      request.signal.addEventListener("abort", () => abort.abort());
      let text = "";
      let outcome: Completion | undefined;
      let failure: unknown;
      const job = queue.add(async () => {
        if (abort.signal.aborted) return;
        try {
          outcome = await complete(p, ids, req, decoder, readback, prefix, abort.signal, (t) => text += t);
        } catch (e) {
          failure = e;
        }
      });
      abort.signal.addEventListener("abort", job.cancel);
      await job.finished;
      if (failure) throw failure;
      if (!outcome) throw new ApiError(499, "the client closed the request", "invalid_request_error");
      const choice = chat
        ? {
          index: 0,
          message: { role: "assistant", content: text },
          finish_reason: outcome.finishReason,
          logprobs: null,
        }
        : { index: 0, text, finish_reason: outcome.finishReason, logprobs: null };
      return json(200, {
        id,
        object,
        created: now,
        model: options.modelId,
        choices: [choice],
        usage: usage(outcome),
        cllm: { decoder: label, ...outcome.stats },
      });
    }

    // Streaming: headers now, then one event per piece of text from the queue's turn on.
    const encoder = new TextEncoder();
    let controller!: ReadableStreamDefaultController<Uint8Array>;
    const stream = new ReadableStream<Uint8Array>({
      start: (c) => void (controller = c),
      cancel: () => abort.abort(),
    });
    const send = (data: unknown) => {
      if (abort.signal.aborted) return;
      try {
        controller.enqueue(
          encoder.encode(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`),
        );
      } catch {
        abort.abort(); // the stream is closed: the client is gone
      }
    };
    const chunk = (choice: Record<string, unknown>) => ({
      id,
      object: chat ? "chat.completion.chunk" : "text_completion",
      created: now,
      model: options.modelId,
      choices: [choice],
    });
    const job = queue.add(async () => {
      if (abort.signal.aborted) return;
      try {
        if (chat) {
          send(
            chunk({
              index: 0,
              delta: { role: "assistant", content: "" },
              finish_reason: null,
              logprobs: null,
            }),
          );
        }
        const outcome = await complete(
          p,
          ids,
          req,
          decoder,
          readback,
          prefix,
          abort.signal,
          (text) =>
            send(chunk(
              chat
                ? { index: 0, delta: { content: text }, finish_reason: null, logprobs: null }
                : { index: 0, text, finish_reason: null, logprobs: null },
            )),
        );
        send(
          chunk(
            chat
              ? { index: 0, delta: {}, finish_reason: outcome.finishReason, logprobs: null }
              : { index: 0, text: "", finish_reason: outcome.finishReason, logprobs: null },
          ),
        );
        if (req.includeUsage) {
          send({
            id,
            object: chat ? "chat.completion.chunk" : "text_completion",
            created: now,
            model: options.modelId,
            choices: [],
            usage: usage(outcome),
            cllm: { decoder: label, ...outcome.stats },
          });
        }
        send("[DONE]");
      } catch (e) {
        send({ error: { message: (e as Error).message, type: "server_error", param: null, code: null } });
      } finally {
        try {
          controller.close();
        } catch { /* already closed by the client */ }
      }
    });
    abort.signal.addEventListener("abort", job.cancel);
    return new Response(stream, {
      headers: { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" },
    });
  }

  async function route(request: Request): Promise<Response> {
    const path = new URL(request.url).pathname.replace(/\/+$/, "");
    const routes: Record<string, string> = {
      "/v1/models": "GET",
      "/v1/chat/completions": "POST",
      "/v1/completions": "POST",
    };
    const method = routes[path];
    if (!method && !path.startsWith("/v1") && options.otherRoutes) {
      const response = await options.otherRoutes(request);
      if (response) return response;
    }
    if (!method) {
      throw new ApiError(
        404,
        `Unknown route ${request.method} ${path || "/"}`,
        "invalid_request_error",
        null,
        "unknown_url",
      );
    }
    if (options.apiKey !== undefined) {
      const auth = request.headers.get("authorization") ?? "";
      if (auth !== `Bearer ${options.apiKey}`) {
        throw new ApiError(
          401,
          auth ? "Incorrect API key provided" : "No API key provided: send 'Authorization: Bearer <key>'",
          "invalid_request_error",
          null,
          "invalid_api_key",
        );
      }
    }
    if (request.method !== method) {
      throw new ApiError(
        405,
        `${path} takes ${method}, not ${request.method}`,
        "invalid_request_error",
        null,
        "method_not_allowed",
      );
    }
    if (path === "/v1/models") {
      return json(200, {
        object: "list",
        data: [{ id: options.modelId, object: "model", created, owned_by: "cllm" }],
      });
    }
    if (model === null) {
      throw new ApiError(
        503,
        "the model is still loading; retry shortly",
        "server_error",
        null,
        "model_loading",
        {
          "retry-after": "5",
        },
      );
    }
    return await completion(request, path === "/v1/chat/completions");
  }

  return {
    handler: async (request) => {
      try {
        return await route(request);
      } catch (e) {
        if (e instanceof ApiError) return errorResponse(e);
        console.error(`serve: ${(e as Error).stack ?? e}`);
        return errorResponse(new ApiError(500, `internal error: ${(e as Error).message}`, "server_error"));
      }
    },
    setModel: (p) => {
      prefix.destroy();
      model = p;
    },
    get pending() {
      return queue.pending;
    },
  };
}
