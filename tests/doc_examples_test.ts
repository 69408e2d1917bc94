/**
 * The library's doc examples run, and assert what their comments claim.
 *
 * Every fenced ```ts block in a JSDoc comment of the library (not those marked `ts ignore`, which need
 * a GPU or files) is extracted, its relative imports pointed at the file it documents, and run. A line
 * `console.log(a, b); // claim` or `expression; // claim` becomes an assertion: the claim, read as a
 * JavaScript value, must deep-equal the single value printed; otherwise the printed text (values
 * joined by spaces) must equal the claim's text.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);
const LIBRARY = ["mod.ts", "core/", "kernels/", "model/", "decode/", "train/"];

interface Example {
  file: string;
  line: number;
  code: string;
}

async function* sourceFiles(rel: string): AsyncGenerator<string> {
  if (!rel.endsWith("/")) {
    yield rel;
    return;
  }
  for await (const e of Deno.readDir(new URL(rel, ROOT))) {
    if (e.isDirectory) yield* sourceFiles(`${rel}${e.name}/`);
    else if (e.name.endsWith(".ts")) yield `${rel}${e.name}`;
  }
}

/** The ```ts blocks inside JSDoc comments of a file (the leading ` * ` stripped). */
function examples(file: string, text: string): Example[] {
  const out: Example[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const open = /^\s*\*\s?```ts\s*$/.exec(lines[i]);
    if (!open) continue;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && !/^\s*\*\s?```\s*$/.test(lines[j]); j++) {
      body.push(lines[j].replace(/^\s*\*\s?/, ""));
    }
    out.push({ file, line: i + 1, code: body.join("\n") });
    i = j;
  }
  return out;
}

/** A claim's expected value, when it reads as JavaScript; undefined when it is plain text. */
function parseClaim(claim: string): { value: unknown } | undefined {
  try {
    const value = new Function(`return (${claim});`)();
    return value === undefined && claim !== "undefined" ? undefined : { value };
  } catch {
    return undefined;
  }
}

/** Printed text without spaces and typed-array lengths: `Float32Array(2) [ 1, 2 ]` ~ `Float32Array [1, 2]`. */
function squeeze(text: string): string {
  return text.replace(/([A-Za-z0-9]Array)\(\d+\)/g, "$1").replace(/\s+/g, "");
}

function plain(v: unknown): unknown {
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) return Array.from(v as unknown as ArrayLike<number>);
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
  }
  return v;
}

/** Whether `actual` equals `expected` within the precision `expected` is written with. */
function near(actual: unknown, expected: unknown): boolean {
  if (typeof expected === "number" && typeof actual === "number") {
    const decimals = (String(expected).split(".")[1] ?? "").length;
    return Math.abs(actual - expected) <= 0.5 * 10 ** -decimals + 1e-6 * Math.abs(expected);
  }
  if (Array.isArray(expected) && Array.isArray(actual)) {
    return actual.length === expected.length && expected.every((e, i) => near(actual[i], e));
  }
  if (expected && typeof expected === "object" && actual && typeof actual === "object") {
    const keys = Object.keys(expected);
    return keys.length === Object.keys(actual).length &&
      keys.every((k) =>
        near((actual as Record<string, unknown>)[k], (expected as Record<string, unknown>)[k])
      );
  }
  return actual === expected;
}

/**
 * Checks printed values against a claim. The claim language: a JavaScript value (deep-equal; a
 * string compares with the printed text); `≈ value` (equal to the precision written); `Name [...]`
 * for a typed array of that class; a trailing `(explanation)` or `: explanation` after a value is
 * ignored; otherwise the claim is the printed text, where a trailing `...` matches any rest.
 */
function checkClaim(values: unknown[], claim: string, where: string): void {
  const what = `${where}: claims ${claim}`;
  const text = values.map((v) => typeof v === "string" ? v : Deno.inspect(v)).join(" ");
  if (text === claim) return;
  const explained = /^(.*?)\s+\([^()]*\)$/.exec(claim) ?? /^(.*?):\s+\D.*$/.exec(claim);
  const valueOf = (c: string) =>
    parseClaim(c.replace(/^≈\s*/, "").replace(/^[A-Z][A-Za-z0-9]*Array\s*(?=\[)/, ""));
  if (explained && valueOf(explained[1]) && !valueOf(claim)) claim = explained[1];
  const approx = claim.startsWith("≈");
  const body = approx ? claim.slice(1).trim() : claim;
  const typed = /^([A-Z][A-Za-z0-9]*Array)\s*(\[.*\])$/.exec(body);
  const parsed = parseClaim(typed ? typed[2] : body);
  if (parsed && values.length === 1) {
    const actual = values[0];
    if (typed) assert.equal((actual as object)?.constructor?.name, typed[1], what);
    if (typeof parsed.value === "string") return assert.equal(text, parsed.value, what);
    if (approx) return assert.ok(near(plain(actual), parsed.value), `${what}, got ${text}`);
    return assert.deepEqual(plain(actual), plain(parsed.value), what);
  }
  if (claim.endsWith("...")) return assert.ok(text.startsWith(claim.slice(0, -3)), `${what}, got ${text}`);
  if (squeeze(text) !== squeeze(claim)) assert.equal(text, claim, what);
}

/** Rewrites an example into a module whose claims are assertions. */
function instrument(ex: Example): string {
  const dir = new URL(ex.file.replace(/[^/]*$/, ""), ROOT);
  let claims = 0;
  const code = ex.code.split("\n").map((line, k) => {
    const fixed = line.replace(/from "(\.{1,2}\/[^"]+)"/g, (_, rel) => `from "${new URL(rel, dir).href}"`);
    const m = /^(\s*)(.*?);\s*\/\/\s*(.+)$/.exec(fixed);
    // Declarations, statements and assignments are not claims (their comments are notes).
    if (!m) return fixed;
    const statement = /^(const|let|var|import|export|for|if|return)\b/.test(m[2]) ||
      /^[\w.$[\]]+\s*(?:[-+*/%|&^]|<<|>>>?)?=(?!=)/.test(m[2]);
    if (statement) return fixed;
    claims++;
    const where = JSON.stringify(`${ex.file}:${ex.line + 1 + k}`);
    const log = /^console\.log\((.*)\)$/.exec(m[2]);
    const values = log ? `[${log[1]}]` : `[${m[2]}]`;
    return `${m[1]}globalThis.__checkClaim(${values}, ${JSON.stringify(m[3].trim())}, ${where});`;
  });
  return claims
    ? code.join("\n")
    : ex.code.split("\n").map((l) =>
      l.replace(/from "(\.{1,2}\/[^"]+)"/g, (_, rel) => `from "${new URL(rel, dir).href}"`)
    ).join("\n");
}

Deno.test("doc examples run and their comments' claims hold", async () => {
  (globalThis as unknown as { __checkClaim: typeof checkClaim }).__checkClaim = checkClaim;
  const all: Example[] = [];
  for (const rel of LIBRARY) {
    for await (const file of sourceFiles(rel)) {
      all.push(...examples(file, await Deno.readTextFile(new URL(file, ROOT))));
    }
  }
  assert.ok(all.length >= 20, `only ${all.length} runnable examples found`);
  const dir = await Deno.makeTempDir({ prefix: "doc_examples_" });
  const log = console.log;
  console.log = () => {}; // examples print; their claims are what is checked
  const failures: string[] = [];
  try {
    for (const [i, ex] of all.entries()) {
      const path = `${dir}/example_${i}.ts`;
      await Deno.writeTextFile(path, instrument(ex));
      try {
        await import(new URL(`file://${path}`).href);
      } catch (e) {
        failures.push(`${ex.file}:${ex.line}: ${(e as Error).message}`);
      }
    }
  } finally {
    console.log = log;
    await Deno.remove(dir, { recursive: true });
  }
  assert.deepEqual(failures, [], `${failures.length} of ${all.length} doc examples failed`);
  console.log(`${all.length} doc examples ran`);
});
