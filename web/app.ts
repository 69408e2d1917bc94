/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * The web page's script (web/index.html; bundled by `deno task web`): loads a model (the embedded
 * models over HTTP, kept in the Cache API, or local files), generates with greedy AR or Jacobi
 * decoding, and shows it: the text streams in chunks coloured by how many tokens each readback
 * brought (in a browser the loop reads back after every forward, so a chunk of k tokens is one
 * forward accepting k), live tokens/s and tokens per forward, and afterwards every forward of every
 * Jacobi block. "AR vs Jacobi" runs both on the same prompt and says whether the texts are equal.
 *
 * @module
 */

import { requestGpu } from "../core/mod.ts";
import { decode } from "../decode/decode.ts";
import type { Decoder } from "../decode/decoder.ts";
import type { BlockTrajectory } from "../decode/jacobi_stats.ts";
import { formatPrompt, loadPretrained, memoryFiles, type Pretrained, renderChat } from "../model/mod.ts";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const status = (text: string, error = false) => {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
};

/** What the page did last, for tests and for the curious (`cllmPage` in the console). */
const pageState = {
  ready: false,
  busy: false,
  /** Times the Jacobi view was redrawn during a generation. */
  liveDraws: 0,
  adapter: "",
  lastRun: null as null | {
    decoder: string;
    text: string;
    tokens: number[];
    jumps: number[];
    tokensPerSecond: number;
    tokensPerForward: number;
  },
  comparison: null as null | { ar: number; jacobi: number; identical: boolean },
};
(globalThis as unknown as { cllmPage: typeof pageState }).cllmPage = pageState;

const MODEL_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"];

/** An embedded model's files, from the Cache API when a previous visit stored them. */
async function fetchModel(dir: string): Promise<Record<string, ArrayBuffer>> {
  const cache = "caches" in globalThis ? await caches.open("cllm-models-v1") : null;
  const files: Record<string, ArrayBuffer> = {};
  for (const name of MODEL_FILES) {
    const url = `${dir}/${name}`;
    let response = await cache?.match(url);
    if (!response) {
      status(`downloading ${url}…`);
      response = await fetch(url);
      if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
      await cache?.put(url, response.clone());
    }
    files[name] = await response.arrayBuffer();
  }
  return files;
}

let gpu: Awaited<ReturnType<typeof requestGpu>> | null = null;
let model: Pretrained | null = null;

async function load(files: Record<string, ArrayBuffer | Blob>, name: string): Promise<void> {
  if (!navigator.gpu) {
    throw new Error(
      "this browser has no WebGPU: use a recent Chrome, Edge or Safari, or enable WebGPU in its flags",
    );
  }
  if (!gpu) {
    gpu = await requestGpu();
    // A lost device (driver reset, out of memory, the tab backgrounded too long) ends this page's GPU.
    gpu.device.lost.then((info) => {
      if (info.reason !== "destroyed") {
        status(`the GPU device was lost (${info.message}); reload the page`, true);
      }
    });
  }
  pageState.adapter = gpu.adapter.description;
  $("adapter").textContent = `GPU: ${gpu.adapter.description}`;
  model?.model.destroy();
  model = null;
  status(`loading ${name}…`);
  model = await loadPretrained(gpu, memoryFiles(name, files), {
    onProgress: (done, total) => status(`loading ${name}: ${Math.round((100 * done) / total)} %`),
  });
  status(
    `${name} ready (${model.model.config.numLayers} layers, vocabulary ${model.model.config.vocabSize})`,
  );
}

function promptIds(p: Pretrained): number[] {
  const text = $<HTMLTextAreaElement>("prompt").value;
  const format = $<HTMLSelectElement>("format").value;
  if (format === "template") {
    if (!p.tokenizer.chatTemplate) throw new Error("this model has no chat template; pick another format");
    const rendered = renderChat(p.tokenizer.chatTemplate, [{ role: "user", content: text }], {
      addGenerationPrompt: true,
      bosToken: p.tokenizer.bosToken,
      eosToken: p.tokenizer.eosToken,
    });
    return p.tokenizer.encode(rendered, { addBos: false });
  }
  if (format === "raw") return p.tokenizer.encode(text);
  return p.tokenizer.encode(
    format === "gsm8k"
      ? formatPrompt("gsm8k", { question: text })
      : formatPrompt("vicuna", { messages: [{ role: "user", content: text }] }),
  );
}

function chosenDecoder(
  kind = (document.querySelector("input[name=decoder]:checked") as HTMLInputElement).value,
) {
  return kind === "ar" ? { kind: "ar" } as Decoder : {
    kind: "jacobi",
    blockSize: Number($<HTMLInputElement>("block").value),
    sliding: $<HTMLInputElement>("sliding").checked,
  } as Decoder;
}

function showStats(items: [string, string][]): void {
  $("stats").replaceChildren(...items.map(([label, value]) => {
    const div = document.createElement("div");
    div.innerHTML = `<b>${value}</b>${label}`;
    return div;
  }));
}

/** One generation, drawn as it goes; returns what it did. */
async function generate(p: Pretrained, decoder: Decoder, draw: boolean, budget?: number) {
  const ids = promptIds(p);
  const maxNewTokens = budget ?? Number($<HTMLInputElement>("max").value);
  const text = p.tokenizer.createStreamDecoder();
  const output = $("output");
  if (draw) {
    output.replaceChildren();
    $("trace").replaceChildren();
    $("traceTitle").hidden = true;
  }
  const jumps: number[] = [];
  const tokens: number[] = [];
  let all = "";
  const t0 = performance.now();
  // Jacobi's blocks drawn as they change: each readback (after every forward in a browser) hands
  // over the trajectory so far; the drawing waits for the next frame, so a fast loop is not slowed.
  let latest: BlockTrajectory[] | null = null;
  let frame = 0;
  let forwardsSoFar = 0; // Jacobi's forwards, from the live trajectory (prefill counted as one)
  const onTrajectory = draw && decoder.kind === "jacobi" && !decoder.sliding
    ? (t: BlockTrajectory[]) => {
      latest = t;
      forwardsSoFar = 1 + t.reduce((a, b) => a + b.states.length, 0);
      frame ||= requestAnimationFrame(() => {
        frame = 0;
        if (latest) drawTrace(p, latest.slice(-6), true);
        pageState.liveDraws++;
      });
    }
    : undefined;
  const gen = decode(p.model, ids, decoder, { maxNewTokens, eosIds: p.eosIds, onTrajectory });
  let r = await gen.next();
  while (!r.done) {
    const chunk = r.value;
    jumps.push(chunk.length);
    tokens.push(...chunk);
    let piece = "";
    for (const id of chunk) piece += text.push(id);
    all += piece;
    if (draw) {
      const span = document.createElement("span");
      span.className = `j${Math.min(4, chunk.length)}`;
      span.title = `${chunk.length} token${chunk.length === 1 ? "" : "s"} from one readback`;
      span.textContent = piece;
      output.append(span);
      const seconds = (performance.now() - t0) / 1000;
      // Tokens per forward so far: AR makes one per forward; Jacobi's forwards come from its trajectory.
      const forwards = decoder.kind === "ar" ? tokens.length : forwardsSoFar;
      showStats([
        ["tokens", `${tokens.length}`],
        ["tokens/s", (tokens.length / seconds).toFixed(1)],
        ["tokens per forward", forwards > 0 ? (tokens.length / forwards).toFixed(2) : "…"],
        ["largest jump", `${Math.max(...jumps)}`],
      ]);
    }
    r = await gen.next();
  }
  all += text.flush();
  const result = r.value;
  const run = {
    decoder: result.stats.decoder,
    text: all.replace(p.tokenizer.eosToken ?? "\u0000", ""),
    tokens,
    jumps,
    tokensPerSecond: result.stats.tokensPerSecond,
    tokensPerForward: result.stats.tokensPerForward,
  };
  if (draw) {
    showStats([
      ["tokens", `${tokens.length}`],
      ["tokens/s", run.tokensPerSecond.toFixed(1)],
      ["tokens per forward", run.tokensPerForward.toFixed(2)],
      ["forwards", `${result.stats.forwards}`],
    ]);
    cancelAnimationFrame(frame);
    if ("trajectory" in result && decoder.kind === "jacobi" && decoder.sliding) {
      // A sliding window's log holds window states, not blocks converging: nothing to draw per block.
      $("trace").replaceChildren();
      $("traceTitle").hidden = false;
      $("traceTitle").textContent =
        "(with a sliding window there are no fixed blocks to draw: uncheck sliding to see them)";
    } else if ("trajectory" in result) {
      drawTrace(p, (result.trajectory as BlockTrajectory[]).slice(0, 30), false);
    }
  }
  return run;
}

/**
 * Every forward of the given blocks: tokens already equal to the block's last state in green (while
 * a block is still running, its last state so far stands in for its fixed point).
 */
function drawTrace(p: Pretrained, trajectory: readonly BlockTrajectory[], live: boolean): void {
  const trace = $("trace");
  trace.replaceChildren();
  $("traceTitle").hidden = false;
  $("traceTitle").textContent = live
    ? "Jacobi blocks as they run (green: equal to the block's latest state)"
    : "Each forward of each Jacobi block (green: already final)";
  for (const b of trajectory) {
    const fixed = b.states[b.states.length - 1];
    const block = document.createElement("div");
    block.className = "block";
    block.textContent = `block ${b.block}: ${b.states.length} forward${b.states.length === 1 ? "" : "s"}`;
    for (const state of b.states) {
      const row = document.createElement("div");
      row.className = "row";
      let prefix = 0;
      while (prefix < state.length && state[prefix] === fixed[prefix]) prefix++;
      state.forEach((id, j) => {
        const span = document.createElement("span");
        span.className = j < prefix ? "ok" : "guess";
        span.textContent = `${JSON.stringify(p.tokenizer.decode([id])).slice(1, -1)} `;
        row.append(span);
      });
      block.append(row);
    }
    trace.append(block);
  }
}

async function guarded(work: () => Promise<void>): Promise<void> {
  if (pageState.busy) return;
  pageState.busy = true;
  for (const id of ["run", "versus"]) $<HTMLButtonElement>(id).disabled = true;
  try {
    await work();
  } catch (e) {
    const message = (e as Error).message;
    status(
      /out-of-memory|out of memory/i.test(message)
        ? `${message}: the model needs more GPU memory than this browser gives it; try a smaller model`
        : message,
      true,
    );
    console.error(e);
  } finally {
    pageState.busy = false;
    for (const id of ["run", "versus"]) $<HTMLButtonElement>(id).disabled = false;
  }
}

$("run").addEventListener("click", () =>
  guarded(async () => {
    if (!model) throw new Error("no model loaded");
    status("generating…");
    pageState.lastRun = await generate(model, chosenDecoder(), true);
    status(`done: ${pageState.lastRun.decoder}`);
  }));

$("versus").addEventListener("click", () =>
  guarded(async () => {
    if (!model) throw new Error("no model loaded");
    // Both decoders once briefly first, so that neither pays the shader compilation in its timing.
    status("warming up…");
    await generate(model, chosenDecoder("ar"), false, 2);
    await generate(model, chosenDecoder("jacobi"), false, 2);
    status("AR…");
    const ar = await generate(model, chosenDecoder("ar"), false);
    status("Jacobi…");
    const jacobi = await generate(model, chosenDecoder("jacobi"), true);
    pageState.lastRun = jacobi;
    pageState.comparison = {
      ar: ar.tokensPerSecond,
      jacobi: jacobi.tokensPerSecond,
      identical: ar.text === jacobi.text,
    };
    $("compare").textContent = `greedy AR ${ar.tokensPerSecond.toFixed(1)} tokens/s; ${jacobi.decoder} ${
      jacobi.tokensPerSecond.toFixed(1)
    } tokens/s (${(jacobi.tokensPerSecond / ar.tokensPerSecond).toFixed(2)}x); outputs ${
      pageState.comparison.identical ? "identical" : "DIFFERENT"
    }`;
    status("done: AR vs Jacobi");
  }));

$("model").addEventListener("change", () =>
  guarded(async () => {
    const dir = $<HTMLSelectElement>("model").value;
    await load(await fetchModel(dir), dir.split("/").pop()!);
  }));

/**
 * A model from the Hugging Face Hub by name: the commit and file list from its API, then what loading
 * needs (config, tokenizer files, model.safetensors or the index and its shards) from `resolve/<commit>`
 * URLs, kept in the Cache API (a commit's files never change). `?hub=URL` in the page's address points
 * at another endpoint (a mirror, or a test's).
 */
async function fetchHubModel(name: string): Promise<Record<string, ArrayBuffer>> {
  const m = /^([\w.-]+\/[\w.-]+)(?:@([\w./-]+))?$/.exec(name.trim());
  if (!m) throw new Error(`"${name}" is not a Hub model name (org/name or org/name@revision)`);
  const [, repo, revision = "main"] = m;
  const endpoint = (new URLSearchParams(location.search).get("hub") ?? "https://huggingface.co").replace(
    /\/+$/,
    "",
  );
  status(`asking ${endpoint} for ${repo}@${revision}…`);
  const r = await fetch(`${endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}`);
  if (!r.ok) {
    throw new Error(
      r.status === 401 || r.status === 403
        ? `${repo} is gated or private; download it with the CLI (HF_TOKEN) and pick its files here`
        : `${repo}@${revision}: the Hub answered ${r.status}`,
    );
  }
  const info = await r.json() as { sha: string; siblings: { rfilename: string }[] };
  const available = new Set(info.siblings.map((s) => s.rfilename));
  const cache = "caches" in globalThis ? await caches.open("cllm-models-v1") : null;
  const get = async (file: string) => {
    const url = `${endpoint}/${repo}/resolve/${info.sha}/${file}`;
    let response = await cache?.match(url);
    if (!response) {
      status(`downloading ${repo}/${file}…`);
      response = await fetch(url);
      if (!response.ok) throw new Error(`${repo}/${file}: HTTP ${response.status}`);
      await cache?.put(url, response.clone());
    }
    return await response.arrayBuffer();
  };
  const files: Record<string, ArrayBuffer> = {};
  for (const f of ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]) {
    if (available.has(f)) files[f] = await get(f);
  }
  if (!files["config.json"]) throw new Error(`${repo} has no config.json`);
  if (available.has("model.safetensors.index.json")) {
    files["model.safetensors.index.json"] = await get("model.safetensors.index.json");
    const index = JSON.parse(new TextDecoder().decode(files["model.safetensors.index.json"]));
    for (const shard of new Set(Object.values(index.weight_map ?? {}) as string[])) {
      files[shard] = await get(shard);
    }
  } else if (available.has("model.safetensors")) {
    files["model.safetensors"] = await get("model.safetensors");
  } else throw new Error(`${repo} has no safetensors weights`);
  return files;
}

$("hubLoad").addEventListener("click", () =>
  guarded(async () => {
    const name = $<HTMLInputElement>("hub").value;
    await load(await fetchHubModel(name), name.trim());
  }));

/** A model's files dropped on the page load like picked ones. */
document.addEventListener("dragover", (e) => e.preventDefault());
document.addEventListener("drop", (e) => {
  e.preventDefault();
  const dropped = e.dataTransfer?.files;
  if (!dropped?.length) return;
  guarded(async () => {
    const files: Record<string, Blob> = {};
    for (const f of dropped) files[f.name] = f;
    if (!files["config.json"]) {
      throw new Error("drop a model's files: config.json, *.safetensors, tokenizer files");
    }
    await load(files, "dropped files");
  });
});

$("files").addEventListener("change", () =>
  guarded(async () => {
    const list = $<HTMLInputElement>("files").files!;
    const files: Record<string, Blob> = {};
    for (const f of list) files[f.name] = f;
    if (!files["config.json"]) {
      throw new Error("pick a model's files: config.json, *.safetensors, tokenizer files");
    }
    await load(files, "local files");
  }));

await guarded(async () => {
  const dir = $<HTMLSelectElement>("model").value;
  await load(await fetchModel(dir), dir.split("/").pop()!);
  pageState.ready = true;
});
