/**
 * A load test of `cllm serve` (cli/openai_server.ts) on the embedded CLLM: 32 streaming clients, 4
 * requests each, all at once against one GPU. Every reply is checked against the same request made
 * alone first (none lost, identical text); reported: throughput, p50/p95 latency to the first
 * token and to the end, and the answers of a full queue (429) and of clients that leave.
 *
 * @module
 */

import type { Gpu } from "../core/mod.ts";
import { createOpenAiServer } from "../cli/openai_server.ts";
import { directoryFiles, formatPrompt, loadPretrained } from "../model/mod.ts";

const MODEL_DIR = new URL("../demo/models/gsm-tiny-cllm", import.meta.url).pathname;
const CLIENTS = 32;
const REQUESTS_PER_CLIENT = 4;

/** One streaming completion: its text and timings (ms), read from the server-sent events. */
async function stream(
  base: string,
  prompt: string,
  maxTokens: number,
): Promise<{ status: number; text: string; firstMs: number; totalMs: number }> {
  const t0 = performance.now();
  const r = await fetch(`${base}/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "cllm", prompt, max_tokens: maxTokens, stream: true }),
  });
  if (r.status !== 200) {
    await r.body?.cancel();
    return { status: r.status, text: "", firstMs: NaN, totalMs: performance.now() - t0 };
  }
  let text = "";
  let firstMs = NaN;
  let buffer = "";
  const decoder = new TextDecoder();
  for await (const bytes of r.body!) {
    buffer += decoder.decode(bytes, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end).replace(/^data: /, "");
      buffer = buffer.slice(end + 2);
      if (event === "[DONE]") continue;
      const piece = JSON.parse(event).choices?.[0]?.text ?? "";
      if (piece && Number.isNaN(firstMs)) firstMs = performance.now() - t0;
      text += piece;
    }
  }
  return { status: 200, text, firstMs, totalMs: performance.now() - t0 };
}

const percentile = (v: number[], p: number) => [...v].sort((a, b) => a - b)[Math.floor(p * (v.length - 1))];

/** Runs the load test; returns its figures. */
export async function runServeBench(gpu: Gpu): Promise<unknown> {
  const p = await loadPretrained(gpu, directoryFiles(MODEL_DIR));
  const server = createOpenAiServer({
    modelId: "cllm",
    decoder: { kind: "jacobi", blockSize: 16 },
    queueSize: CLIENTS * REQUESTS_PER_CLIENT,
  });
  server.setModel(p);
  const listening = Promise.withResolvers<Deno.NetAddr>();
  const http = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: (a) => listening.resolve(a as Deno.NetAddr) },
    server.handler,
  );
  const base = `http://127.0.0.1:${(await listening.promise).port}/v1`;
  try {
    // Distinct prompts: the held-out style problems with numbers varied per request.
    const prompts = Array.from({ length: CLIENTS * REQUESTS_PER_CLIENT }, (_, i) =>
      formatPrompt("gsm8k", {
        question: `Tom has ${3 + (i % 40)} apples. He buys ${2 + (i % 7)} more and gives ${
          1 + (i % 3)
        } away. How many apples does Tom have now?`,
      }));
    const maxTokens = 96;
    const alone: string[] = [];
    const t0 = performance.now();
    for (const prompt of prompts) alone.push((await stream(base, prompt, maxTokens)).text);
    const sequentialSeconds = (performance.now() - t0) / 1000;

    const t1 = performance.now();
    const results = await Promise.all(
      Array.from({ length: CLIENTS }, async (_, c) => {
        const out = [];
        for (let k = 0; k < REQUESTS_PER_CLIENT; k++) {
          const i = c * REQUESTS_PER_CLIENT + k;
          out.push({ i, ...(await stream(base, prompts[i], maxTokens)) });
        }
        return out;
      }),
    );
    const concurrentSeconds = (performance.now() - t1) / 1000;
    const all = results.flat();
    const lost = all.filter((r) => r.status !== 200).length;
    const differ = all.filter((r) => r.status === 200 && r.text !== alone[r.i]).length;
    const totals = all.map((r) => r.totalMs);
    const firsts = all.map((r) => r.firstMs).filter((x) => !Number.isNaN(x));

    // A full queue: one running, `queueSize` 1 waiting, the next refused; then both clients leave.
    const small = createOpenAiServer({ modelId: "cllm", queueSize: 1 });
    small.setModel(p);
    const busy = [
      new Request("http://x/v1/completions", {
        method: "POST",
        body: JSON.stringify({ model: "cllm", prompt: prompts[0], max_tokens: 400, stream: true }),
      }),
      new Request("http://x/v1/completions", {
        method: "POST",
        body: JSON.stringify({ model: "cllm", prompt: prompts[1], max_tokens: 400, stream: true }),
      }),
    ];
    const held = await Promise.all(busy.map((r) => small.handler(r)));
    const refused = await small.handler(
      new Request("http://x/v1/completions", {
        method: "POST",
        body: JSON.stringify({ model: "cllm", prompt: prompts[2], max_tokens: 4 }),
      }),
    );
    const tLeave = performance.now();
    await Promise.all(held.map((r) => r.body!.cancel()));
    while (small.pending > 0) await new Promise((r) => setTimeout(r, 5));
    const freedMs = performance.now() - tLeave;

    const figures = {
      clients: CLIENTS,
      requestsPerClient: REQUESTS_PER_CLIENT,
      maxTokens,
      lost,
      differentFromAlone: differ,
      sequentialSeconds,
      concurrentSeconds,
      requestsPerSecond: all.length / concurrentSeconds,
      latencyP50Ms: percentile(totals, 0.5),
      latencyP95Ms: percentile(totals, 0.95),
      firstTokenP50Ms: percentile(firsts, 0.5),
      firstTokenP95Ms: percentile(firsts, 0.95),
      fullQueueStatus: refused.status,
      fullQueueRetryAfter: refused.headers.get("retry-after"),
      queueFreedAfterDisconnectMs: freedMs,
    };
    await refused.body?.cancel();
    console.log(
      `${all.length} streaming requests from ${CLIENTS} clients: ${lost} lost, ${differ} different from ` +
        `the same request alone; ${figures.requestsPerSecond.toFixed(2)} requests/s (alone, one after ` +
        `another: ${(all.length / sequentialSeconds).toFixed(2)}); latency p50 ${
          (figures.latencyP50Ms / 1000).toFixed(2)
        } s, p95 ${(figures.latencyP95Ms / 1000).toFixed(2)} s; first text p50 ${
          (figures.firstTokenP50Ms / 1000).toFixed(2)
        } s, p95 ${(figures.firstTokenP95Ms / 1000).toFixed(2)} s`,
    );
    console.log(
      `full queue: ${refused.status} (Retry-After ${figures.fullQueueRetryAfter}); two clients leaving ` +
        `freed the queue in ${freedMs.toFixed(0)} ms`,
    );
    return figures;
  } finally {
    await http.shutdown();
    p.model.destroy();
  }
}
