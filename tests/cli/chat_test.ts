import assert from "node:assert/strict";
import { gpuTest } from "../_gpu.ts";

const MAIN = new URL("../../cli/main.ts", import.meta.url).pathname;
const MODEL = new URL("../../demo/models/gsm-tiny-cllm", import.meta.url).pathname;

async function chat(input: string, ...flags: string[]): Promise<{ code: number; out: string; err: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "chat", "--model", MODEL, ...flags],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(input));
  await w.close();
  const r = await child.output();
  const d = new TextDecoder();
  return { code: r.code, out: d.decode(r.stdout), err: d.decode(r.stderr) };
}

Deno.test(
  "chat: Jacobi by default, the cache kept across turns, /reset, a stats line per reply",
  gpuTest,
  async () => {
    const r = await chat(
      "Rose buys 4 balls for 8 dollars each and 2 notebooks for 4 dollars each. How many dollars does she spend?\n" +
        "Sam has 9 pens and buys 3 more. How many pens does Sam have?\n/reset\n" +
        "Rose buys 4 balls for 8 dollars each and 2 notebooks for 4 dollars each. How many dollars does she spend?\n\n",
      "--format",
      "gsm8k",
      "--max-new-tokens",
      "80",
    );
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /the gsm8k format; jacobi n=16 decoding/);
    assert.match(r.out, /#### 40/); // 32 + 8: one of the embedded CLLM's held-out problems
    const stats = [
      ...r.err.matchAll(
        /\[(\d+) tokens, [\d.]+ tokens\/s, ([\d.]+) tokens\/forward; prefilled (\d+) of (\d+) prompt tokens\]/g,
      ),
    ];
    assert.equal(stats.length, 3, r.err);
    assert.equal(stats[0][3], stats[0][4], "the first turn prefills everything");
    assert.ok(Number(stats[0][2]) > 1.5, `tokens per forward ${stats[0][2]}`);
    // gsm8k sends only the latest message, so turn 2 shares just the format's opening with turn 1.
    assert.ok(Number(stats[1][3]) < Number(stats[1][4]), `turn 2: ${stats[1][0]}`);
    assert.match(r.err, /\(new conversation\)/);
    // The same question after /reset: the same reply (the cache, holding turn 2, lends the format's opening).
    const replies = r.out.split("\n> ").slice(1);
    assert.equal(replies[2], "", "/reset prints no reply");
    assert.equal(replies[3].trim(), replies[0].trim());
    assert.ok(Number(stats[2][3]) < Number(stats[2][4]), `turn 3: ${stats[2][0]}`);
  },
);

Deno.test("chat: a message longer than the context is refused and the chat goes on", gpuTest, async () => {
  const long = "seven ".repeat(400);
  const r = await chat(
    `${long}\nRose buys 4 balls for 8 dollars each and 2 notebooks for 4 dollars each. How many dollars does she spend?\n\n`,
    "--format",
    "gsm8k",
  );
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /does not fit the context of 512; write less, or lower --max-new-tokens/);
  assert.match(r.out, /#### 40/);
});
