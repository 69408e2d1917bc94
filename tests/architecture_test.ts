/**
 * The architecture's rules, checked on the real import graph (`deno info --json`): no import
 * cycles, and dependencies that point one way, cli/demo/bench/web → decode/train → model → kernels →
 * core. The library (core, kernels, model, decode, train) never imports the CLI, the demo or the
 * benches, and the demo reaches the library only through mod.ts.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);

interface Graph {
  modules: { specifier: string; dependencies?: { specifier: string; code?: { specifier?: string } }[] }[];
}

async function importGraph(entries: string[]): Promise<Map<string, string[]>> {
  const local = (s: string) => s.startsWith(ROOT.href) ? s.slice(ROOT.href.length) : null;
  const edges = new Map<string, string[]>();
  for (const entry of entries) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", new URL(entry, ROOT).href],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const graph = JSON.parse(new TextDecoder().decode(out.stdout)) as Graph;
    for (const m of graph.modules) {
      const from = local(m.specifier);
      if (!from) continue;
      const to = (m.dependencies ?? []).map((d) => local(d.code?.specifier ?? "")).filter((x): x is string =>
        !!x
      );
      edges.set(from, to);
    }
  }
  return edges;
}

/** The layer of a file: its top folder (mod.ts is the library's entry). */
function layer(file: string): string {
  return file.includes("/") ? file.slice(0, file.indexOf("/")) : file;
}

/** Which layers each layer may import (itself included). */
const ALLOWED: Record<string, string[]> = {
  core: ["core"],
  kernels: ["kernels", "core"],
  model: ["model", "kernels", "core"],
  decode: ["decode", "model", "kernels", "core"],
  train: ["train", "decode", "model", "kernels", "core"],
  "mod.ts": ["browser.ts", "core", "kernels", "model", "decode", "train"],
  "browser.ts": ["core", "kernels", "model", "decode", "train"],
  cli: ["cli", "web", "train", "decode", "model", "kernels", "core"],
  // The web page and the browser check: a front end beside the CLI, on the browser-clean layers.
  web: ["web", "train", "decode", "model", "kernels", "core"],
  demo: ["demo", "mod.ts", "cli"],
  bench: ["bench", "demo", "dev", "cli", "train", "decode", "model", "kernels", "core"],
  dev: ["dev", "cli", "train", "decode", "model", "kernels", "core"],
  // bench/_load_once.ts runs in its own process (a bench entry point of its own).
};

Deno.test("imports: no cycles, and every dependency points down the layers", async () => {
  const edges = await importGraph([
    "mod.ts",
    "browser.ts",
    "cli/main.ts",
    "demo/main.ts",
    "bench/main.ts",
    "bench/device.ts",
    "web/app.ts",
    "web/check.ts",
  ]);
  assert.ok(edges.size > 50, `only ${edges.size} modules in the graph`);
  // Layering.
  const wrong: string[] = [];
  for (const [from, tos] of edges) {
    for (const to of tos) {
      const allowed = ALLOWED[layer(from)];
      assert.ok(allowed, `no layer rule for ${from}`);
      if (!allowed.includes(layer(to))) wrong.push(`${from} → ${to}`);
    }
  }
  assert.deepEqual(wrong, [], "imports against the layering");
  // Cycles: depth-first search with colours.
  const state = new Map<string, "open" | "done">();
  const cycles: string[] = [];
  const visit = (m: string, path: string[]) => {
    if (state.get(m) === "done") return;
    if (state.get(m) === "open") {
      cycles.push([...path.slice(path.indexOf(m)), m].join(" → "));
      return;
    }
    state.set(m, "open");
    for (const to of edges.get(m) ?? []) visit(to, [...path, m]);
    state.set(m, "done");
  };
  for (const m of edges.keys()) visit(m, []);
  assert.deepEqual(cycles, [], "import cycles");
});

Deno.test("browser.ts: nothing it imports uses a Deno or Node API (it bundles for a web page as it is)", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", new URL("browser.ts", ROOT).href],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const graph = JSON.parse(new TextDecoder().decode(out.stdout)) as Graph;
  const byName = new Map(graph.modules.map((m) => [m.specifier, m]));
  // Modules reached through code imports (type-only imports are erased).
  const seen = new Set<string>();
  const nodeImports: string[] = [];
  const visit = (specifier: string) => {
    if (seen.has(specifier)) return;
    seen.add(specifier);
    for (const d of byName.get(specifier)?.dependencies ?? []) {
      // A dynamic import loads only when its code asks (train's directory store, given `out`).
      if ((d as { isDynamic?: boolean }).isDynamic) continue;
      const to = d.code?.specifier;
      if (!to) continue;
      if (to.startsWith("node:")) nodeImports.push(`${specifier} imports ${to}`);
      if (to.startsWith(ROOT.href)) visit(to);
    }
  };
  visit(new URL("browser.ts", ROOT).href);
  const denoUses: string[] = [];
  for (const s of seen) {
    const text = (await Deno.readTextFile(new URL(s))).replace(/\/\*[\s\S]*?\*\//g, "").replace(
      /\/\/[^\n]*/g,
      "",
    );
    if (/\bDeno\./.test(text)) denoUses.push(s.slice(ROOT.href.length));
  }
  assert.ok(seen.size > 30, `only ${seen.size} modules reached`);
  assert.deepEqual(denoUses, [], "modules of the browser entry that use Deno");
  assert.deepEqual(nodeImports, []);
});

Deno.test("browser.ts type-checks as a web page would: lib dom and @webgpu/types, no Deno types", async () => {
  // web/dom_check.json: the browser's libraries only (its npm imports mirror deno.json's).
  const config = JSON.parse(await Deno.readTextFile(new URL("web/dom_check.json", ROOT)));
  const project = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  for (const name of ["@huggingface/jinja", "@huggingface/tokenizers"]) {
    assert.equal(
      config.imports[name],
      project.imports[name],
      `web/dom_check.json's ${name} differs from deno.json's`,
    );
  }
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "check",
      "--config",
      new URL("web/dom_check.json", ROOT).pathname,
      new URL("browser.ts", ROOT).pathname,
    ],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
});
