import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { HubError, parseHubModelRef, resolveHubModel } from "../../cli/hub.ts";
import { generateFromIds } from "../../decode/mod.ts";
import { directoryFiles, loadPretrained } from "../../model/mod.ts";
import { gpuTest, testGpu } from "../_gpu.ts";
import { writeTinyModel } from "../_tiny_model.ts";

const COMMIT = "0123456789abcdef0123456789abcdef01234567";
const V1 = "89abcdef0123456789abcdef0123456789abcdef";
const SHARD = "model-00001-of-00001.safetensors";

/** A model repository as the Hub serves it: file name → bytes. */
async function tinyRepo(): Promise<Map<string, Uint8Array<ArrayBuffer>>> {
  const dir = await Deno.makeTempDir();
  try {
    await writeTinyModel(dir, { dtype: "F16", vocabSize: 64 });
    const files = new Map<string, Uint8Array<ArrayBuffer>>();
    for await (const e of Deno.readDir(dir)) files.set(e.name, await Deno.readFile(`${dir}/${e.name}`));
    // Ship the weights as one shard and an index, as large checkpoints are.
    const weights = files.get("model.safetensors")!;
    files.delete("model.safetensors");
    files.set(SHARD, weights);
    const headerLength = Number(new DataView(weights.buffer).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(weights.subarray(8, 8 + headerLength)));
    const weightMap = Object.fromEntries(
      Object.keys(header).filter((k) => k !== "__metadata__").map((k) => [k, SHARD]),
    );
    files.set(
      "model.safetensors.index.json",
      new TextEncoder().encode(JSON.stringify({ weight_map: weightMap })),
    );
    files.set("README.md", new TextEncoder().encode("not needed for loading"));
    return files;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const hex = (algorithm: string, bytes: Uint8Array) => createHash(algorithm).update(bytes).digest("hex");

/**
 * A fake Hub on 127.0.0.1 serving `org/tiny` at `main` (= COMMIT) and tag `v1` (= V1): the file-list
 * API, HEAD with ETags (LFS files redirect to /cdn/<sha256>, as the Hub does), ranged GETs. `faults`
 * makes the next download of a weights file drop mid-file or arrive corrupted.
 */
function fakeHub(files: Map<string, Uint8Array<ArrayBuffer>>, opts: { token?: string } = {}) {
  const log: string[] = [];
  const faults: ("drop" | "corrupt")[] = [];
  const lfs = (name: string) => name.endsWith(".safetensors");
  const bySha = new Map([...files].filter(([n]) => lfs(n)).map(([, b]) => [hex("sha256", b), b]));
  const handler = (req: Request): Response => {
    const url = new URL(req.url);
    log.push(
      `${req.method} ${url.pathname}${req.headers.get("range") ? ` ${req.headers.get("range")}` : ""}`,
    );
    if (opts.token && req.headers.get("authorization") !== `Bearer ${opts.token}`) {
      return new Response("unauthorized", { status: 401 });
    }
    let m = /^\/api\/models\/org\/tiny\/revision\/(.+)$/.exec(url.pathname);
    if (m) {
      const rev = decodeURIComponent(m[1]);
      const sha = rev === "main" || rev === COMMIT ? COMMIT : rev === "v1" || rev === V1 ? V1 : null;
      if (!sha) return new Response("no such revision", { status: 404 });
      return Response.json({ sha, siblings: [...files.keys()].map((rfilename) => ({ rfilename })) });
    }
    m = /^\/org\/tiny\/resolve\/([0-9a-f]{40})\/(.+)$/.exec(url.pathname);
    if (m) {
      const bytes = files.get(decodeURIComponent(m[2]));
      if (!bytes) return new Response("no such file", { status: 404 });
      if (lfs(m[2])) {
        const sha = hex("sha256", bytes);
        return new Response(null, {
          status: 302,
          headers: {
            location: `/cdn/${sha}`,
            "x-linked-etag": `"${sha}"`,
            "x-linked-size": `${bytes.length}`,
          },
        });
      }
      // (For HEAD, Deno.serve drops the body and keeps its length.)
      return new Response(bytes, { headers: { etag: `"${hex("sha1", bytes)}"` } });
    }
    m = /^\/cdn\/([0-9a-f]{64})$/.exec(url.pathname);
    if (m && bySha.has(m[1])) {
      const bytes = bySha.get(m[1])!;
      const range = /^bytes=(\d+)-$/.exec(req.headers.get("range") ?? "");
      const from = range ? Number(range[1]) : 0;
      const body = bytes.slice(from);
      const fault = req.method === "GET" ? faults.shift() : undefined;
      if (fault === "corrupt") body[body.length >> 1] ^= 0xff;
      if (fault === "drop") {
        // Half the bytes, then the connection is cut.
        const stream = new ReadableStream<Uint8Array>({
          async start(c) {
            c.enqueue(body.subarray(0, body.length >> 1));
            await new Promise((r) => setTimeout(r, 20));
            c.error(new Error("connection dropped"));
          },
        });
        return new Response(stream, { status: range ? 206 : 200 });
      }
      return new Response(body, { status: range ? 206 : 200 });
    }
    return new Response("not found", { status: 404 });
  };
  return { handler, log, faults };
}

async function withHub(
  hub: ReturnType<typeof fakeHub>,
  body: (endpoint: string, cacheDir: string) => Promise<void>,
): Promise<void> {
  const listening = Promise.withResolvers<Deno.NetAddr>();
  const http = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: (a) => listening.resolve(a as Deno.NetAddr) },
    hub.handler,
  );
  const cacheDir = await Deno.makeTempDir({ prefix: "hub_cache_" });
  try {
    await body(`http://127.0.0.1:${(await listening.promise).port}`, cacheDir);
  } finally {
    await http.shutdown();
    await Deno.remove(cacheDir, { recursive: true });
  }
}

Deno.test("hub: model names", () => {
  assert.deepEqual(parseHubModelRef("cllm/consistency-llm-7b-gsm8k"), {
    repo: "cllm/consistency-llm-7b-gsm8k",
    revision: "main",
  });
  assert.deepEqual(parseHubModelRef("org/m.v2@refs/pr/3"), { repo: "org/m.v2", revision: "refs/pr/3" });
  for (const bad of ["model", "./models/x", "/abs/path", "a/b/c", "../x/y", "org/.."]) {
    assert.equal(parseHubModelRef(bad), null, bad);
  }
});

Deno.test(
  "hub: a model fetched by name: the standard cache layout, the bytes, and it loads and generates",
  gpuTest,
  async () => {
    const files = await tinyRepo();
    const hub = fakeHub(files);
    await withHub(hub, async (endpoint, cacheDir) => {
      const dir = await resolveHubModel({ repo: "org/tiny", revision: "main" }, {
        endpoint,
        cacheDir,
        offline: false,
      });
      const repoDir = `${cacheDir}/models--org--tiny`;
      assert.equal(dir, `${repoDir}/snapshots/${COMMIT}`);
      assert.equal((await Deno.readTextFile(`${repoDir}/refs/main`)).trim(), COMMIT);
      // Snapshot entries are relative links into blobs/, named by ETag (sha256 for LFS files).
      const shardLink = await Deno.readLink(`${dir}/${SHARD}`);
      assert.equal(shardLink, `../../blobs/${hex("sha256", files.get(SHARD)!)}`);
      assert.equal(
        await Deno.readLink(`${dir}/config.json`),
        `../../blobs/${hex("sha1", files.get("config.json")!)}`,
      );
      assert.ok(
        !(await Deno.stat(`${dir}/README.md`).then(() => true, () => false)),
        "fetched a file loading does not need",
      );
      for (const [name, bytes] of files) {
        if (name !== "README.md") assert.deepEqual(await Deno.readFile(`${dir}/${name}`), bytes, name);
      }
      // It loads and generates.
      const gpu = await testGpu();
      const fromHub = await loadPretrained(gpu, directoryFiles(dir));
      const tokens = async (p: typeof fromHub) => {
        const gen = generateFromIds(p, [1, 5, 9], { maxNewTokens: 8 });
        for await (const _ of gen.pieces) { /* drain */ }
        return (await gen.result).tokens;
      };
      const want = await tokens(fromHub);
      assert.equal(want.length > 0, true);
      // A second resolve is served from the cache: only the file list is asked for.
      const before = hub.log.length;
      await resolveHubModel({ repo: "org/tiny", revision: "main" }, { endpoint, cacheDir, offline: false });
      assert.deepEqual(hub.log.slice(before), ["GET /api/models/org/tiny/revision/main"]);
      fromHub.model.destroy();
    });
  },
);

Deno.test("hub: resume after a dropped connection, refetch a corrupted download", async () => {
  const files = await tinyRepo();
  const hub = fakeHub(files);
  await withHub(hub, async (endpoint, cacheDir) => {
    const sha = hex("sha256", files.get(SHARD)!);
    hub.faults.push("drop");
    const dir = await resolveHubModel({ repo: "org/tiny", revision: "main" }, {
      endpoint,
      cacheDir,
      offline: false,
    });
    const gets = hub.log.filter((l) => l.startsWith(`GET /cdn/${sha}`));
    assert.equal(gets.length, 2, gets.join("; "));
    assert.match(
      gets[1],
      new RegExp(`bytes=${files.get(SHARD)!.length >> 1}-$`),
      "the second request resumes",
    );
    assert.deepEqual(await Deno.readFile(`${dir}/${SHARD}`), files.get(SHARD));

    // A corrupted transfer fails the sha256 check and is fetched again.
    await Deno.remove(`${cacheDir}/models--org--tiny`, { recursive: true });
    hub.faults.push("corrupt");
    const before = hub.log.length;
    await resolveHubModel({ repo: "org/tiny", revision: "main" }, { endpoint, cacheDir, offline: false });
    assert.equal(hub.log.slice(before).filter((l) => l.startsWith(`GET /cdn/${sha}`)).length, 2);
    assert.deepEqual(await Deno.readFile(`${dir}/${SHARD}`), files.get(SHARD));
    assert.ok(
      !(await Deno.stat(`${cacheDir}/models--org--tiny/blobs/${sha}.incomplete`).then(
        () => true,
        () => false,
      )),
    );

    // Corrupted every time: a clear error, nothing half-written left as a blob.
    await Deno.remove(`${cacheDir}/models--org--tiny`, { recursive: true });
    hub.faults.push("corrupt", "corrupt");
    await assert.rejects(
      resolveHubModel({ repo: "org/tiny", revision: "main" }, { endpoint, cacheDir, offline: false }),
      (e: Error) => e instanceof HubError && /failed its sha256 check twice/.test(e.message),
    );
    assert.ok(!(await Deno.stat(`${cacheDir}/models--org--tiny/blobs/${sha}`).then(() => true, () => false)));
  });
});

Deno.test("hub: offline mode, pinned revisions, 401 and 404", async () => {
  const files = await tinyRepo();
  const hub = fakeHub(files, { token: "hf_secret" });
  await withHub(hub, async (endpoint, cacheDir) => {
    const o = { endpoint, cacheDir, offline: false };
    await assert.rejects(
      resolveHubModel({ repo: "org/tiny", revision: "main" }, o),
      (e: Error) => e instanceof HubError && /gated or private: set HF_TOKEN/.test(e.message),
    );
    const authed = { ...o, token: "hf_secret" };
    await assert.rejects(
      resolveHubModel({ repo: "org/nope", revision: "main" }, authed),
      (e: Error) => e instanceof HubError && /not found on .* \(404\)/.test(e.message),
    );
    // Offline before anything is cached: refused, naming the fix; no request made.
    const before = hub.log.length;
    await assert.rejects(
      resolveHubModel({ repo: "org/tiny", revision: "main" }, { ...authed, offline: true }),
      (e: Error) => e instanceof HubError && /HF_HUB_OFFLINE/.test(e.message),
    );
    assert.equal(hub.log.length, before);
    // A tag, then the same tag offline (through refs/v1), then the commit itself offline.
    const v1 = await resolveHubModel({ repo: "org/tiny", revision: "v1" }, authed);
    assert.ok(v1.endsWith(`/snapshots/${V1}`));
    assert.equal((await Deno.readTextFile(`${cacheDir}/models--org--tiny/refs/v1`)).trim(), V1);
    const requests = hub.log.length;
    assert.equal(
      await resolveHubModel({ repo: "org/tiny", revision: "v1" }, { ...authed, offline: true }),
      v1,
    );
    assert.equal(await resolveHubModel({ repo: "org/tiny", revision: V1 }, { ...authed, offline: true }), v1);
    assert.equal(hub.log.length, requests, "offline made requests");
    // Blobs are shared between revisions with the same contents: main downloads nothing new.
    await resolveHubModel({ repo: "org/tiny", revision: "main" }, authed);
    assert.equal(hub.log.slice(requests).filter((l) => l.startsWith("GET /cdn/")).length, 0);
  });
});
