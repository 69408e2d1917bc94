import assert from "node:assert/strict";
import { sharedPath, sharedTest, STORIES_FIXTURE } from "../_fixtures.ts";
import { writeTinyModel } from "../_tiny_model.ts";

const MAIN = new URL("../../cli/main.ts", import.meta.url).pathname;
const DEMO = new URL("../../demo/main.ts", import.meta.url).pathname;
const SHARED = sharedPath(STORIES_FIXTURE);

/** Runs the CLI (or the demo's entry point) in a child process with XDG_RUNTIME_DIR unset. */
async function cllm(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return await run(MAIN, args);
}

async function run(main: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const env = { ...Deno.env.toObject(), NO_COLOR: "1" };
  delete (env as Record<string, string>).XDG_RUNTIME_DIR;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, ...args],
    clearEnv: true,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** One clear error line naming `pattern`, a non-zero exit, and no stack trace. */
function assertCleanError(r: { code: number; stderr: string }, pattern: RegExp): void {
  assert.notEqual(r.code, 0);
  const lines = r.stderr.split("\n").filter((l) => l.startsWith("error: "));
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], pattern);
  assert.ok(!/^\s+at /m.test(r.stderr), `stack trace printed:\n${r.stderr}`);
}

Deno.test({
  name: "CLI: bad input gives one clear error line, a non-zero exit and no partial output",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeTinyModel(`${dir}/m`, { maxPositionEmbeddings: 24 });
    // A prompt longer than the context.
    const long = Array.from({ length: 40 }, (_, i) => `t${3 + (i % 50)}`).join(" ");
    assertCleanError(
      await cllm("generate", "--model", `${dir}/m`, "--prompt", long, "--max-new-tokens", "4"),
      /context/,
    );
    // A truncated checkpoint.
    const bytes = await Deno.readFile(`${dir}/m/model.safetensors`);
    await Deno.writeFile(`${dir}/m/model.safetensors`, bytes.subarray(0, bytes.length - 100));
    assertCleanError(await cllm("generate", "--model", `${dir}/m`, "--prompt", "t5"), /model\.safetensors/);
    assertCleanError(await cllm("info", "--model", `${dir}/m`), /model\.safetensors/);
    // A malformed config.json.
    await Deno.writeTextFile(`${dir}/m/config.json`, '{"hidden_size": "big"}');
    assertCleanError(await cllm("info", "--model", `${dir}/m`), /config\.json/);
    // A missing tokenizer.
    await Deno.remove(`${dir}/m/tokenizer.json`);
    assertCleanError(await cllm("generate", "--model", `${dir}/m`, "--prompt", "t5"), /tokenizer\.json/);
    // A bad Jacobi Forcing option names the flag and its values.
    assertCleanError(
      await cllm(
        ...["train", "--model", `${dir}/m`, "--trajectories", `${dir}/t.jsonl`, "--out", `${dir}/o`],
        ...["--objective", "jacobi-forcing", "--noise-context", "dirty"],
      ),
      /--noise-context must be noisy or clean, not "dirty"/,
    );
    // Usage errors exit 2.
    const usage = await cllm("generate", "--bogus");
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /bogus/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

sharedTest([STORIES_FIXTURE], "CLI: a truncated llama2.c checkpoint is one clear error and writes nothing", {
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const dir = await Deno.makeTempDir();
  try {
    // A truncated llama2.c checkpoint: error, and nothing written at --out.
    const ckpt = await Deno.readFile(`${SHARED}stories260K.bin`);
    await Deno.writeFile(`${dir}/trunc.bin`, ckpt.subarray(0, 5000));
    assertCleanError(
      await cllm(
        "convert",
        "--from",
        "llama2c",
        "--checkpoint",
        `${dir}/trunc.bin`,
        "--tokenizer",
        `${SHARED}tok512.bin`,
        "--out",
        `${dir}/conv`,
      ),
      /trunc\.bin/,
    );
    await assert.rejects(() => Deno.stat(`${dir}/conv`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

sharedTest([STORIES_FIXTURE], "CLI: generate --json on stories260K (Jacobi) prints text, tokens and stats", {
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const dir = await Deno.makeTempDir();
  try {
    let r = await cllm(
      "convert",
      "--from",
      "llama2c",
      "--checkpoint",
      `${SHARED}stories260K.bin`,
      "--tokenizer",
      `${SHARED}tok512.bin`,
      "--out",
      `${dir}/m`,
    );
    assert.equal(r.code, 0, r.stderr);
    // Twenty new tokens from "Once upon a time" as JSON, with the decoder flags given.
    const generate = (...decoder: string[]) =>
      cllm(
        "generate",
        "--model",
        `${dir}/m`,
        "--prompt",
        "Once upon a time",
        "--max-new-tokens",
        "20",
        ...decoder,
        "--json",
      );
    r = await generate("--decoder", "jacobi", "--block", "4");
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.tokens.length, 20);
    assert.match(out.text, /^, there was a little girl/);
    assert.equal(out.stats.decoder, "jacobi n=4");
    assert.ok(out.stats.forwards > 0 && out.stats.tokensPerForward > 0.8, JSON.stringify(out.stats));
    // --sliding and --guess-source reach the decoder: same text, that decoder's label.
    r = await generate("--decoder", "jacobi", "--block", "4", "--sliding", "--guess-source", "context");
    assert.equal(r.code, 0, r.stderr);
    const sliding = JSON.parse(r.stdout);
    assert.equal(sliding.text, out.text);
    assert.equal(sliding.stats.decoder, "jacobi sliding n=4 guesses=context");
    r = await cllm(
      "generate",
      "--model",
      `${dir}/m`,
      "--prompt",
      "x",
      "--decoder",
      "jacobi",
      "--guess-source",
      "copy",
    );
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--guess-source must be one of random, context, not "copy"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "CLI: the demo streams a problem on the embedded models and checks Jacobi against AR",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const r = await run(DEMO, ["--problems", "1"]);
  assert.equal(r.code, 0, r.stderr);
  assert.ok(!/^error:/m.test(r.stderr), `no "error:" line when nothing failed:\n${r.stderr}`);
  assert.match(r.stdout, /--- problem 1: /);
  assert.match(r.stdout, /Jacobi iterations of the first two blocks/);
  assert.match(r.stdout, /^gold answer: \d+$/m);
  for (
    const row of [
      "base, AR",
      "CLLM, AR",
      "CLLM, Jacobi n=16",
      "CLLM, Jacobi sliding n=16",
      "CLLM, Jacobi sliding n=8",
    ]
  ) {
    assert.match(r.stdout, new RegExp(`^${row} +[\\d.]+ +[\\d.]+ +[\\d.]+x +[01]/1$`, "m"), `row "${row}"`);
  }
  assert.match(r.stdout, /CLLM Jacobi output identical to its greedy AR output: yes/);
});

Deno.test({
  name: "CLI: trajectory resumes without decoding again the prompts that gave no record",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeTinyModel(`${dir}/m`, { maxPositionEmbeddings: 48 });
    const long = Array.from({ length: 40 }, (_, i) => `t${3 + (i % 50)}`).join(" ");
    await Deno.writeTextFile(`${dir}/p.txt`, `t5 t6 t7\n${long}\nt9 t8\n`);
    const args = [
      "trajectory",
      "--model",
      `${dir}/m`,
      "--prompts",
      `${dir}/p.txt`,
      "--out",
      `${dir}/t.jsonl`,
    ];
    const opts = ["--block", "4", "--max-new-tokens", "8"];
    const first = await cllm(...args, ...opts);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stderr, /Skipped prompt 1\b/);
    const listed = (await Deno.readTextFile(`${dir}/t.jsonl.empty.jsonl`)).trim().split("\n").map((l) =>
      JSON.parse(l)
    );
    assert.deepEqual(listed, [{ id: 1, prompt: long }]);
    const again = await cllm(...args, ...opts);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /3 of 3 prompts are already there \(1 gave no record/);
    assert.doesNotMatch(again.stderr, /Skipped prompt/);
    // A new --out starts afresh: a sidecar left without its file is stale.
    await Deno.remove(`${dir}/t.jsonl`);
    const fresh = await cllm(...args, ...opts);
    assert.match(fresh.stderr, /Skipped prompt 1\b/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "CLI: --temperature works with every decoder, a seed repeats the text, bad sampling flags are clear errors",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeTinyModel(`${dir}/m`, { maxPositionEmbeddings: 128 });
    const gen = (...extra: string[]) =>
      cllm(
        "generate",
        "--model",
        `${dir}/m`,
        "--prompt",
        "t5 t6",
        "--max-new-tokens",
        "12",
        "--json",
        ...extra,
      );
    for (const decoder of ["ar", "jacobi:n=4", "jacobi:n=4,sliding", "lookahead:N=3,W=2,G=2"]) {
      const a = await gen("--decoder", decoder, "--temperature", "0.8", "--top-p", "0.9", "--seed", "3");
      assert.equal(a.code, 0, a.stderr);
      const b = await gen("--decoder", decoder, "--temperature", "0.8", "--top-p", "0.9", "--seed", "3");
      const ja = JSON.parse(a.stdout), jb = JSON.parse(b.stdout);
      assert.deepEqual(ja.tokens, jb.tokens, `${decoder}: same seed, same tokens`);
      assert.match(ja.stats.decoder, /sampled t=0\.8 top-p=0\.9$/);
    }
    assertCleanError(await gen("--temperature", "-1"), /temperature/);
    assertCleanError(await gen("--temperature", "1", "--top-p", "0"), /top-p/);
    assertCleanError(await gen("--temperature", "1", "--top-p", "1.5"), /top-p/);
    assertCleanError(await gen("--temperature", "1", "--top-k", "0"), /top-k/);
    assertCleanError(await gen("--top-k", "5"), /--temperature/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
