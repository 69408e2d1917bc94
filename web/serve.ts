/**
 * `deno task web`: bundles the page's script (web/app.ts) for the browser and serves the page with
 * the embedded models on 127.0.0.1 (default port 8080; `--port N`, 0 for a free one).
 *
 * @module
 */

import { parseArgs } from "node:util";

const ROOT = new URL("../", import.meta.url).pathname;

/** Bundles web/app.ts for the browser; returns the script. */
export async function bundleApp(): Promise<Uint8Array<ArrayBuffer>> {
  const out = await Deno.makeTempFile({ suffix: ".js" });
  try {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["bundle", "--quiet", "--platform", "browser", `${ROOT}web/app.ts`, "-o", out],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (r.code !== 0) throw new Error(`bundling web/app.ts failed:\n${new TextDecoder().decode(r.stderr)}`);
    return await Deno.readFile(out);
  } finally {
    await Deno.remove(out).catch(() => {});
  }
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript",
  ".json": "application/json",
};

/**
 * The page's routes: `/`, `/app.js` and the embedded models under `/models/`; null for any other
 * path (so another server, such as `cllm serve`, can put the page beside its own routes).
 */
export async function webRoutes(): Promise<(request: Request) => Promise<Response | null>> {
  const app = await bundleApp();
  const page = await Deno.readFile(`${ROOT}web/index.html`);
  return async (req) => {
    if (req.method !== "GET") return null;
    const path = decodeURIComponent(new URL(req.url).pathname);
    const type = TYPES[path.slice(path.lastIndexOf("."))] ?? "application/octet-stream";
    if (path === "/" || path === "/index.html") {
      return new Response(page, { headers: { "content-type": TYPES[".html"] } });
    }
    if (path === "/app.js") return new Response(app, { headers: { "content-type": type } });
    // The embedded models, nothing else of the tree.
    const m = /^\/models\/(gsm-tiny-(?:base|cllm))\/([\w.-]+)$/.exec(path);
    if (!m) return null;
    try {
      return new Response(await Deno.readFile(`${ROOT}demo/models/${m[1]}/${m[2]}`), {
        headers: { "content-type": type },
      });
    } catch {
      return new Response("not found", { status: 404 });
    }
  };
}

/** Serves the page; resolves with the server once it listens. */
export async function serveWeb(port: number): Promise<Deno.HttpServer<Deno.NetAddr>> {
  const routes = await webRoutes();
  const listening = Promise.withResolvers<void>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port, onListen: () => listening.resolve() },
    async (req) => (await routes(req)) ?? new Response("not found", { status: 404 }),
  );
  await listening.promise;
  return server;
}

if (import.meta.main) {
  const { values } = parseArgs({ args: Deno.args, options: { port: { type: "string", default: "8080" } } });
  const server = await serveWeb(Number(values.port));
  console.log(`open http://127.0.0.1:${server.addr.port}/ in a browser with WebGPU (Chrome, Edge, Safari)`);
}
