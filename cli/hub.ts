/**
 * Models by name from the Hugging Face Hub (`org/name[@revision]`), kept in the standard cache that
 * Python's `huggingface_hub` uses, so each sees what the other downloaded:
 *
 *     $HF_HUB_CACHE (or $HF_HOME/hub, or ~/.cache/huggingface/hub)/models--org--name/
 *       refs/<revision>            the commit a branch or tag pointed to when last resolved
 *       blobs/<etag>               file contents: an LFS file's etag is its sha256
 *       blobs/<etag>.incomplete    a download in progress (resumed with a Range request)
 *       snapshots/<commit>/<file>  relative symlinks to the blobs
 *
 * Only what loading needs is fetched: config.json, generation_config.json, the tokenizer files, and
 * model.safetensors or the index and the shards it names. Every LFS file is checked against its
 * sha256 after download (a mismatch is deleted and fetched once more). `HF_ENDPOINT`, `HF_TOKEN` and
 * `HF_HUB_OFFLINE=1` work as in Python; offline, or when the Hub cannot be reached, a cached snapshot
 * is used as it is.
 *
 * Written here rather than taken from `@huggingface/hub`: its `downloadFileToCacheDir` (read in the
 * huggingface.js sources) rewrites a `.incomplete` file from the start instead of resuming it, and
 * does not check the sha256 of what it downloaded.
 *
 * @module
 */

import { createHash } from "node:crypto";

/** Where and how to reach the Hub; every field defaults from the environment as Python does. */
export interface HubOptions {
  /** The cache directory (`HF_HUB_CACHE`, `HF_HOME/hub`, `~/.cache/huggingface/hub`). */
  cacheDir?: string;
  /** The Hub's address (`HF_ENDPOINT`, default https://huggingface.co). */
  endpoint?: string;
  /** An access token for gated or private models (`HF_TOKEN`). */
  token?: string;
  /** Use the cache only (`HF_HUB_OFFLINE=1`). */
  offline?: boolean;
  /** Download progress, per file: bytes done and in all. */
  onProgress?: (file: string, done: number, total: number) => void;
}

/** A model reference `org/name[@revision]` (revision default `main`). */
export interface HubModelRef {
  repo: string;
  revision: string;
}

/** A Hub error: names the model, what failed and the fix. */
export class HubError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "HubError";
  }
}

/** Files loading reads besides the weights; the first must exist. */
const CONFIG_FILES = [
  "config.json",
  "generation_config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "tokenizer.model",
];

const REF = /^([A-Za-z0-9][\w.-]*)\/([\w.-]+)(?:@([\w./-]+))?$/;

/** Reads `org/name[@revision]`; null when the text is not of that form. */
export function parseHubModelRef(text: string): HubModelRef | null {
  const m = REF.exec(text);
  if (!m || m[1].includes("..") || m[2].includes("..")) return null;
  return { repo: `${m[1]}/${m[2]}`, revision: m[3] ?? "main" };
}

/** The cache directory from the environment, as Python's `huggingface_hub` finds it. */
export function defaultHubCacheDir(): string {
  const env = (name: string) => Deno.env.get(name) || undefined;
  const cache = env("HF_HUB_CACHE") ?? env("HUGGINGFACE_HUB_CACHE");
  if (cache) return cache;
  const home = env("HF_HOME") ?? `${env("XDG_CACHE_HOME") ?? `${env("HOME") ?? "."}/.cache`}/huggingface`;
  return `${home}/hub`;
}

function optionsFromEnv(o: HubOptions): Required<Omit<HubOptions, "token" | "onProgress">> & HubOptions {
  const offline = o.offline ??
    ["1", "true", "yes", "on"].includes((Deno.env.get("HF_HUB_OFFLINE") ?? "").toLowerCase());
  return {
    ...o,
    cacheDir: o.cacheDir ?? defaultHubCacheDir(),
    endpoint: (o.endpoint ?? Deno.env.get("HF_ENDPOINT") ?? "https://huggingface.co").replace(/\/+$/, ""),
    token: o.token ?? (Deno.env.get("HF_TOKEN") || undefined),
    offline,
  };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Writes a small file through a temporary name, so a reader never sees half of it. */
async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  await Deno.writeTextFile(tmp, text);
  await Deno.rename(tmp, path);
}

/** The snapshot of `ref` in the cache, if complete enough to load (config.json present). */
async function cachedSnapshot(repoDir: string, revision: string): Promise<string | null> {
  let commit = revision;
  if (!/^[0-9a-f]{40}$/.test(revision)) {
    try {
      commit = (await Deno.readTextFile(`${repoDir}/refs/${revision}`)).trim();
    } catch {
      return null;
    }
  }
  const dir = `${repoDir}/snapshots/${commit}`;
  return await exists(`${dir}/config.json`) ? dir : null;
}

/**
 * Finds `ref` in the cache or downloads what loading needs into it; returns the snapshot directory
 * (a model directory like any other).
 *
 * @example Loading a model by name
 * ```ts ignore
 * const dir = await resolveHubModel({ repo: "cllm/consistency-llm-7b-gsm8k", revision: "main" });
 * const p = await loadPretrained(gpu, directoryFiles(dir));
 * ```
 */
export async function resolveHubModel(ref: HubModelRef, options: HubOptions = {}): Promise<string> {
  const o = optionsFromEnv(options);
  const name = `${ref.repo}@${ref.revision}`;
  const repoDir = `${o.cacheDir}/models--${ref.repo.replace("/", "--")}`;
  if (o.offline) {
    const dir = await cachedSnapshot(repoDir, ref.revision);
    if (dir) return dir;
    throw new HubError(
      `${name} is not in the cache ${o.cacheDir} and HF_HUB_OFFLINE is set; download it once online ` +
        `(unset HF_HUB_OFFLINE) or point HF_HUB_CACHE at a cache that has it`,
    );
  }
  const headers: Record<string, string> = o.token ? { authorization: `Bearer ${o.token}` } : {};
  const statusError = (status: number, what: string) =>
    new HubError(
      status === 401 || status === 403
        ? `${name}: the Hub refused ${what} (${status}); the model is gated or private: set HF_TOKEN to a token ` +
          `that has access (and accept its license on the Hub)`
        : status === 404
        ? `${name}: not found on ${o.endpoint} (404); check the name and the revision`
        : `${name}: the Hub answered ${status} for ${what}; try again later`,
    );

  // The revision's commit and file list.
  let info: { sha?: string; siblings?: { rfilename: string }[] };
  try {
    const r = await fetch(
      `${o.endpoint}/api/models/${ref.repo}/revision/${encodeURIComponent(ref.revision)}`,
      { headers },
    );
    if (!r.ok) {
      await r.body?.cancel();
      throw statusError(r.status, "the model's file list");
    }
    info = await r.json();
  } catch (e) {
    if (e instanceof HubError) throw e;
    // The Hub cannot be reached: a cached snapshot still loads, as in Python.
    const dir = await cachedSnapshot(repoDir, ref.revision);
    if (dir) {
      console.error(`hub: ${o.endpoint} unreachable (${(e as Error).message}); using the cached ${name}`);
      return dir;
    }
    throw new HubError(
      `${name}: cannot reach ${o.endpoint} (${(e as Error).message}) and it is not in the cache`,
    );
  }
  const commit = info.sha;
  if (typeof commit !== "string" || !/^[0-9a-f]{40}$/.test(commit) || !Array.isArray(info.siblings)) {
    throw new HubError(`${name}: the Hub's answer has no commit and file list; is ${o.endpoint} a Hub?`);
  }
  const available = new Set(info.siblings.map((s) => s.rfilename));
  await Deno.mkdir(`${repoDir}/refs`, { recursive: true });
  await Deno.mkdir(`${repoDir}/blobs`, { recursive: true });
  const snapshot = `${repoDir}/snapshots/${commit}`;
  await Deno.mkdir(snapshot, { recursive: true });
  if (ref.revision !== commit) await writeAtomic(`${repoDir}/refs/${ref.revision}`, commit);

  if (!available.has("config.json")) {
    throw new HubError(`${name} has no config.json: not a transformers model`);
  }
  const files = CONFIG_FILES.filter((f) => available.has(f));
  for (const f of files) await fetchFile(o, ref, commit, repoDir, f, headers, statusError);
  if (available.has("model.safetensors.index.json")) {
    await fetchFile(o, ref, commit, repoDir, "model.safetensors.index.json", headers, statusError);
    let index: { weight_map?: Record<string, string> };
    try {
      index = JSON.parse(await Deno.readTextFile(`${snapshot}/model.safetensors.index.json`));
    } catch (e) {
      throw new HubError(`${name}: model.safetensors.index.json is not valid JSON (${(e as Error).message})`);
    }
    const shards = [...new Set(Object.values(index.weight_map ?? {}))];
    for (const shard of shards) {
      if (!available.has(shard)) {
        throw new HubError(`${name}: the index names ${shard}, which the repository does not have`);
      }
      await fetchFile(o, ref, commit, repoDir, shard, headers, statusError);
    }
  } else if (available.has("model.safetensors")) {
    await fetchFile(o, ref, commit, repoDir, "model.safetensors", headers, statusError);
  } else {
    throw new HubError(
      `${name} has no safetensors weights (model.safetensors or an index); only safetensors checkpoints load here`,
    );
  }
  return snapshot;
}

/** Downloads one file of a commit into the blobs (resuming, verifying) and links it in the snapshot. */
async function fetchFile(
  o: HubOptions & { endpoint: string },
  ref: HubModelRef,
  commit: string,
  repoDir: string,
  file: string,
  headers: Record<string, string>,
  statusError: (status: number, what: string) => HubError,
): Promise<void> {
  const link = `${repoDir}/snapshots/${commit}/${file}`;
  if (await exists(link)) return; // (exists follows the link: a dangling one is fetched again)
  const url = `${o.endpoint}/${ref.repo}/resolve/${commit}/${
    file.split("/").map(encodeURIComponent).join("/")
  }`;
  // What the file is: its etag (an LFS file's is its sha256) and size, from a HEAD that stops at the
  // Hub's redirect to its storage, as Python's client does.
  const head = await fetch(url, { method: "HEAD", headers, redirect: "manual" });
  await head.body?.cancel();
  if (head.status >= 400) throw statusError(head.status, file);
  const strip = (v: string | null) => v?.replace(/^W\//, "").replace(/"/g, "") ?? null;
  const linked = strip(head.headers.get("x-linked-etag"));
  const etag = linked ?? strip(head.headers.get("etag"));
  const size = Number(head.headers.get("x-linked-size") ?? head.headers.get("content-length") ?? NaN);
  if (!etag || !/^[\w.-]+$/.test(etag)) {
    throw new HubError(`${ref.repo}: ${file} has no usable ETag on the Hub`);
  }
  const sha256 = linked && /^[0-9a-f]{64}$/.test(linked) ? linked : null;
  const blob = `${repoDir}/blobs/${etag}`;
  const location = head.status >= 300 && head.status < 400 ? head.headers.get("location") : null;
  const source = location ? new URL(location, url).href : url;

  const blobOk = async () => {
    try {
      const s = await Deno.stat(blob);
      return Number.isNaN(size) || s.size === size;
    } catch {
      return false;
    }
  };
  let corrupted = 0;
  let dropped = 0;
  while (!(await blobOk())) {
    try {
      await download(source, blob, size, file, headers, o.onProgress, statusError);
    } catch (e) {
      // A connection lost mid-file: resume from what arrived, a few times, then give up (a later
      // run resumes too).
      if (e instanceof HubError || ++dropped > 3) throw e;
      console.error(`hub: ${file}: ${(e as Error).message}; resuming`);
      continue;
    }
    if (sha256 && (await sha256OfFile(`${blob}.incomplete`)) !== sha256) {
      if (++corrupted === 2) {
        await Deno.remove(`${blob}.incomplete`);
        throw new HubError(
          `${ref.repo}: ${file} failed its sha256 check twice; the download is corrupted in transit`,
        );
      }
      console.error(`hub: ${file} does not match its sha256; fetching it again`);
      await Deno.remove(`${blob}.incomplete`);
      continue;
    }
    await Deno.rename(`${blob}.incomplete`, blob);
  }
  const depth = file.split("/").length - 1;
  await Deno.mkdir(link.slice(0, link.lastIndexOf("/")), { recursive: true });
  await Deno.remove(link).catch(() => {}); // a dangling link from an earlier, deleted blob
  await Deno.symlink(`${"../".repeat(depth + 2)}blobs/${etag}`, link);
}

/** Fetches `url` into `blob.incomplete`, resuming from what is there. */
async function download(
  url: string,
  blob: string,
  size: number,
  file: string,
  headers: Record<string, string>,
  onProgress: HubOptions["onProgress"],
  statusError: (status: number, what: string) => HubError,
): Promise<void> {
  const partial = `${blob}.incomplete`;
  let have = 0;
  try {
    have = (await Deno.stat(partial)).size;
  } catch { /* a fresh download */ }
  if (!Number.isNaN(size) && have > size) {
    await Deno.remove(partial);
    have = 0;
  }
  if (!Number.isNaN(size) && have === size) return;
  const r = await fetch(url, { headers: have > 0 ? { ...headers, range: `bytes=${have}-` } : headers });
  if (r.status >= 400) {
    await r.body?.cancel();
    throw statusError(r.status, file);
  }
  // A server that ignores the range sends everything: start over.
  const append = have > 0 && r.status === 206;
  if (!append) have = 0;
  const out = await Deno.open(partial, { create: true, write: true, append, truncate: !append });
  try {
    for await (const chunk of r.body!) {
      for (let at = 0; at < chunk.length;) at += await out.write(chunk.subarray(at));
      have += chunk.length;
      onProgress?.(file, have, size);
    }
  } finally {
    out.close();
  }
  if (!Number.isNaN(size) && have !== size) {
    throw new Error(`the download stopped at ${have} of ${size} bytes`);
  }
}

/** The sha256 of a file, streamed (the file may be gigabytes). */
async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  const f = await Deno.open(path);
  for await (const chunk of f.readable) hash.update(chunk); // (the stream closes the file)
  return hash.digest("hex");
}
