import assert from "node:assert/strict";
import OpenAI from "openai";
import { generateFromIds } from "../../decode/mod.ts";
import { directoryFiles, formatPrompt, loadPretrained, type Pretrained } from "../../model/mod.ts";
import { createOpenAiServer, type OpenAiServer } from "../../cli/openai_server.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

const MODEL_DIR = new URL("../../demo/models/gsm-tiny-cllm", import.meta.url).pathname;
const JACOBI = { kind: "jacobi", blockSize: 16 } as const;
const QUESTION = "Tom has 12 apples. He buys 7 more and gives 5 to Ann. How many apples does Tom have now?";

let loaded: Pretrained | undefined;
async function model(): Promise<Pretrained> {
  return loaded ??= await loadPretrained(await testGpu(), directoryFiles(MODEL_DIR));
}

/** Serves `server` on a free loopback port while `body` runs. */
async function serving(
  server: OpenAiServer,
  body: (base: string) => Promise<void>,
): Promise<void> {
  const listening = Promise.withResolvers<Deno.NetAddr>();
  const http = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: (a) => listening.resolve(a as Deno.NetAddr) },
    server.handler,
  );
  const { port } = await listening.promise;
  try {
    await body(`http://127.0.0.1:${port}/v1`);
  } finally {
    await http.shutdown();
  }
}

/** The text `cllm generate` gives for `ids` (its end-of-sequence token is not text). */
async function reference(p: Pretrained, ids: number[], maxNewTokens: number): Promise<string> {
  const gen = generateFromIds(p, ids, { maxNewTokens, decoder: JACOBI });
  for await (const _ of gen.pieces) { /* drain */ }
  return (await gen.result).text.replace(/<\/s>$/, "");
}

Deno.test("serve: the openai client gets cllm generate's text, streaming or not", gpuTest, async () => {
  const p = await model();
  const server = createOpenAiServer({ modelId: "gsm-tiny-cllm", decoder: JACOBI, apiKey: "sk-test" });
  server.setModel(p);
  await serving(server, async (baseURL) => {
    const client = new OpenAI({ baseURL, apiKey: "sk-test", maxRetries: 0 });
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), ["gsm-tiny-cllm"]);

    // Completions: the prompt as given, BOS added as the tokenizer says.
    const prompt = formatPrompt("gsm8k", { question: QUESTION });
    const want = await reference(p, p.tokenizer.encode(prompt), 120);
    assert.ok(want.length > 20, `reference text "${want}"`);
    const c = await client.completions.create({ model: "gsm-tiny-cllm", prompt, max_tokens: 120 });
    assert.equal(c.choices[0].text, want);
    assert.ok(c.usage!.prompt_tokens > 10 && c.usage!.completion_tokens > 5);
    assert.equal(c.usage!.total_tokens, c.usage!.prompt_tokens + c.usage!.completion_tokens);
    const stats = (c as unknown as { cllm: { decoder: string; tokens_per_forward: number } }).cllm;
    assert.equal(stats.decoder, "jacobi n=16");
    assert.ok(stats.tokens_per_forward > 1.5, `tokens per forward ${stats.tokens_per_forward}`);

    let streamed = "";
    let usage: OpenAI.CompletionUsage | undefined;
    let finish: string | null = null;
    const stream = await client.completions.create({
      model: "gsm-tiny-cllm",
      prompt,
      max_tokens: 120,
      stream: true,
      stream_options: { include_usage: true },
    });
    for await (const chunk of stream) {
      streamed += chunk.choices[0]?.text ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
      usage = chunk.usage ?? usage;
    }
    assert.equal(streamed, want);
    assert.equal(finish, c.choices[0].finish_reason);
    assert.deepEqual(usage, c.usage);

    // Chat: the Vicuna format (this checkpoint has no chat template), streaming and not.
    const messages = [{ role: "user" as const, content: QUESTION }];
    const chatWant = await reference(p, p.tokenizer.encode(formatPrompt("vicuna", { messages })), 40);
    const chat = await client.chat.completions.create({ model: "gsm-tiny-cllm", messages, max_tokens: 40 });
    assert.equal(chat.choices[0].message.content, chatWant);
    assert.equal(chat.choices[0].message.role, "assistant");
    let chatStreamed = "";
    for await (
      const chunk of await client.chat.completions.create({
        model: "gsm-tiny-cllm",
        messages,
        max_tokens: 40,
        stream: true,
      })
    ) chatStreamed += chunk.choices[0]?.delta?.content ?? "";
    assert.equal(chatStreamed, chatWant);

    // A stop string ends the text before it.
    const cut = want.indexOf("\n", 5);
    assert.ok(cut > 0, "the reference has a line break to stop at");
    const stopped = await client.completions.create({
      model: "gsm-tiny-cllm",
      prompt,
      max_tokens: 120,
      stop: "\n",
    });
    assert.equal(stopped.choices[0].text, want.slice(0, want.indexOf("\n")));
    assert.equal(stopped.choices[0].finish_reason, "stop");
  });
});

Deno.test(
  "serve: bad requests get OpenAI errors with the right status, and serving goes on",
  gpuTest,
  async () => {
    const p = await model();
    const server = createOpenAiServer({ modelId: "m", apiKey: "k", maxBodyBytes: 4096 });
    await serving(server, async (base) => {
      const call = async (
        path: string,
        body: unknown,
        init: { key?: string | null; method?: string } = {},
      ) => {
        const headers: Record<string, string> = { "content-type": "application/json" };
        if (init.key !== null) headers.authorization = `Bearer ${init.key ?? "k"}`;
        const r = await fetch(`${base}${path}`, {
          method: init.method ?? "POST",
          headers,
          body: init.method === "GET" ? undefined : typeof body === "string" ? body : JSON.stringify(body),
        });
        const json = await r.json();
        return { status: r.status, error: json.error, json, headers: r.headers };
      };
      const ok = { model: "m", prompt: "Question:\n1 + 1?\nAnswer:\n", max_tokens: 4 };
      // Before the model is loaded: 503 with Retry-After.
      const loading = await call("/completions", ok);
      assert.equal(loading.status, 503);
      assert.ok(loading.headers.get("retry-after"));
      server.setModel(p);
      const cases: [string, string, unknown, number, RegExp, { key?: string | null; method?: string }?][] = [
        ["malformed JSON", "/completions", "{", 400, /not valid JSON/],
        ["not an object", "/completions", "[1]", 400, /JSON object/],
        ["wrong type", "/completions", { ...ok, max_tokens: "4" }, 400, /'max_tokens' must be an integer/],
        [
          "temperature range",
          "/completions",
          { ...ok, temperature: 3 },
          400,
          /'temperature' must be at most 2/,
        ],
        [
          "no messages",
          "/chat/completions",
          { model: "m", messages: [] },
          400,
          /'messages' must be a non-empty/,
        ],
        [
          "bad role",
          "/chat/completions",
          { model: "m", messages: [{ role: "x", content: "hi" }] },
          400,
          /role/,
        ],
        ["unknown model", "/completions", { ...ok, model: "gpt-4o" }, 404, /'gpt-4o' does not exist/],
        [
          "past the context",
          "/completions",
          { ...ok, max_tokens: 100000 },
          400,
          /past the model's context of 512/,
        ],
        ["huge body", "/completions", { ...ok, prompt: "x".repeat(10000) }, 413, /over 4096 bytes/],
        ["no key", "/completions", ok, 401, /No API key/, { key: null }],
        ["wrong key", "/completions", ok, 401, /Incorrect API key/, { key: "nope" }],
        ["unknown route", "/embeddings", ok, 404, /Unknown route/],
        ["wrong method", "/completions", ok, 405, /takes POST/, { method: "GET" }],
      ];
      for (const [what, path, body, status, message, init] of cases) {
        const r = await call(path, body, init);
        assert.equal(r.status, status, `${what}: status ${r.status} ${JSON.stringify(r.json)}`);
        assert.match(r.error.message, message, what);
        assert.ok(typeof r.error.type === "string" && "param" in r.error && "code" in r.error, what);
      }
      // Still serving.
      const good = await call("/completions", ok);
      assert.equal(good.status, 200);
      assert.equal(good.json.usage.completion_tokens, 4);
    });
  },
);

Deno.test("serve: a full queue answers 429; a client that disconnects frees its place", gpuTest, async () => {
  const p = await model();
  const server = createOpenAiServer({ modelId: "m", queueSize: 1 });
  server.setModel(p);
  await serving(server, async (base) => {
    const body = (maxTokens: number) =>
      JSON.stringify({
        model: "m",
        prompt: "Question:\n1 + 1?\nAnswer:\n",
        max_tokens: maxTokens,
        stream: true,
      });
    const post = (maxTokens: number, signal?: AbortSignal) =>
      fetch(`${base}/completions`, { method: "POST", body: body(maxTokens), signal });
    // One long generation running, one waiting: the third is refused.
    const running = new AbortController();
    const first = await post(400, running.signal);
    const reader = first.body!.getReader();
    await reader.read(); // it has started
    const waiting = new AbortController();
    const second = post(400, waiting.signal).catch(() => null);
    await new Promise((r) => setTimeout(r, 50));
    const third = await fetch(`${base}/completions`, { method: "POST", body: body(4) });
    assert.equal(third.status, 429);
    assert.ok(third.headers.get("retry-after"));
    assert.equal((await third.json()).error.code, "rate_limit_exceeded");
    assert.equal(server.pending, 2);
    // Both clients leave: the queue empties without finishing their 400 tokens.
    waiting.abort();
    running.abort();
    await reader.cancel().catch(() => {});
    await second;
    for (let i = 0; i < 100 && server.pending > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(server.pending, 0, "the queue did not empty after the clients left");
    const after = await fetch(`${base}/completions`, { method: "POST", body: body(4) });
    assert.equal(after.status, 200);
    await after.text();
  });
});

Deno.test("serve: refuses an address other machines can reach without an API key", async () => {
  const main = new URL("../../cli/main.ts", import.meta.url).pathname;
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, "serve", "--model", MODEL_DIR, "--host", "0.0.0.0", "--port", "0"],
    env: { NO_COLOR: "1", CLLM_API_KEY: "" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.notEqual(r.code, 0);
  assert.match(
    new TextDecoder().decode(r.stderr),
    /--host 0\.0\.0\.0 is reachable from other machines; set --api-key/,
  );
});

Deno.test("serve: routes outside /v1 go to the page's handler; /v1 stays the API's", async () => {
  const server = createOpenAiServer({
    modelId: "m",
    otherRoutes: (r) => Promise.resolve(new URL(r.url).pathname === "/" ? new Response("the page") : null),
  });
  const get = (path: string) => server.handler(new Request(`http://x${path}`));
  assert.equal(await (await get("/")).text(), "the page");
  for (const path of ["/nope", "/v1/nope"]) {
    const r = await get(path);
    assert.equal(r.status, 404);
    assert.equal((await r.json()).error.code, "unknown_url");
  }
});
