/**
 * `cllm serve`: the OpenAI-compatible API (cli/openai_server.ts) on `Deno.serve`. It listens at
 * once and answers 503 while the model loads, so a client can wait on it; Ctrl-C stops it.
 *
 * @module
 */

import { CliError, numberOption, parse, required } from "./args.ts";
import { DECODER_FLAGS, DECODER_HELP, decoderFromFlags } from "./decoder_flags.ts";
import { LOAD_FLAGS, LOAD_HELP, loadFlags, loadModelDir } from "./load.ts";
import { createOpenAiServer } from "./openai_server.ts";
import { webRoutes } from "../web/serve.ts";
import { decoderLabel } from "../decode/decoder.ts";

const HELP = `Usage: deno task cllm serve --model DIR [options]

Serves the model over an OpenAI-compatible API: GET /v1/models, POST /v1/chat/completions and
POST /v1/completions, streaming or not; the web page (deno task web's) is at /. Every request uses the decoder
below (e.g. --decoder jacobi for a CLLM), greedy at temperature 0 or absent, sampled otherwise
(lossless: a sampled reply has the model's own distribution).

Options:
  --model DIR|ORG/NAME[@REV]
                            Hugging Face-layout model directory, or a Hub model (fetched into the HF cache)
  --model-id NAME           the model's name in the API (default: the directory's name)
  --host HOST               address to bind (default 127.0.0.1; any other needs --api-key)
  --port N                  port (default 8000; 0 picks a free one)
  --api-key KEY             require "Authorization: Bearer KEY" (default: $CLLM_API_KEY if set)
  --queue N                 requests that may wait while one generates (default 16; more get 429)
${LOAD_HELP}
${DECODER_HELP}`;

/** Addresses that only this machine can reach. */
function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Runs `serve` until the process is stopped. */
export async function serveCommand(args: string[]): Promise<void> {
  const v = parse("serve", args, {
    model: { type: "string" },
    "model-id": { type: "string" },
    host: { type: "string" },
    port: { type: "string" },
    "api-key": { type: "string" },
    queue: { type: "string" },
    ...DECODER_FLAGS,
    ...LOAD_FLAGS,
  });
  if (v.help) return console.log(HELP);
  const dir = required(v, "model", "serve");
  const host = (v.host as string | undefined) ?? "127.0.0.1";
  const port = numberOption(v, "port", 8000, { integer: true, min: 0, max: 65535 });
  const queueSize = numberOption(v, "queue", 16, { integer: true, min: 0 });
  const apiKey = (v["api-key"] as string | undefined) ?? Deno.env.get("CLLM_API_KEY");
  if (!isLoopback(host) && !apiKey) {
    throw new CliError(
      `serve: --host ${host} is reachable from other machines; set --api-key (or CLLM_API_KEY) too`,
    );
  }
  const { decoder, readback } = decoderFromFlags("serve", v);
  const modelId = (v["model-id"] as string | undefined) ??
    dir.replace(/\/+$/, "").split("/").pop()!;
  // The web page (web/) at `/`, beside the API.
  const server = createOpenAiServer({
    modelId,
    apiKey,
    decoder,
    readback,
    queueSize,
    otherRoutes: await webRoutes(),
  });
  const listening = Promise.withResolvers<Deno.NetAddr>();
  const http = Deno.serve({
    hostname: host,
    port,
    onListen: (addr) => listening.resolve(addr as Deno.NetAddr),
  }, server.handler);
  const addr = await listening.promise;
  console.error(
    `serve: listening on http://${addr.hostname}:${addr.port}/v1 (model "${modelId}" loading); ` +
      `the web page is at http://${addr.hostname}:${addr.port}/`,
  );
  try {
    const p = await loadModelDir(dir, loadFlags(v));
    server.setModel(p);
    console.error(
      `serve: ready: "${modelId}", greedy requests use ${
        decoderLabel(decoder)
      }; context ${p.model.maxLength} tokens`,
    );
  } catch (e) {
    await http.shutdown();
    throw e;
  }
  await http.finished;
}
