/**
 * The library in a real browser: headless Chromium (Debian's, driven by puppeteer-core) on its
 * WebGPU adapter (SwiftShader here) compiles every kernel variant a Deno workload used (decoders,
 * q8/q4 loads, a training step), then runs greedy AR and Jacobi on the embedded CLLM and must give
 * the Deno tokens. Skipped with a printed reason where no Chromium exists, except under CI.
 */
import assert from "node:assert/strict";
import puppeteer from "puppeteer-core";
import { type Gpu, SeededRandom, Step, type Variant } from "../../core/mod.ts";
import { decode } from "../../decode/decode.ts";
import { runToEnd } from "../../decode/generation.ts";
import { directoryFiles, formatPrompt, Llama, loadPretrained } from "../../model/mod.ts";
import { TrainingStep } from "../../train/train_step.ts";
import { runWorkload } from "../../web/workload.ts";
import { serveWeb } from "../../web/serve.ts";
import { IN_CI } from "../_fixtures.ts";
import { gpuTest, NO_GPU, testGpu } from "../_gpu.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const MODEL_DIR = `${ROOT}demo/models/gsm-tiny-cllm`;
const OUT_DIR = `${ROOT}.test-output`;
const CHROMIUM = Deno.env.get("CHROMIUM_PATH") ?? "/usr/bin/chromium";

const NO_CHROMIUM = await Deno.stat(CHROMIUM).then(() => null, () => `no Chromium at ${CHROMIUM}`);
if (NO_CHROMIUM && !IN_CI) {
  console.log(`skipped: "browser" tests: ${NO_CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);
}

/** Headless Chromium on its WebGPU adapter (SwiftShader where there is no GPU). */
function launchChromium() {
  return puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    // One page call compiles every kernel variant a Deno workload used (100 now, ~3 min on
    // SwiftShader with 2 cores), past puppeteer's default 180 s per protocol call.
    protocolTimeout: 900_000,
    args: [
      "--no-sandbox",
      "--enable-unsafe-webgpu",
      "--enable-features=Vulkan",
      "--use-vulkan=swiftshader",
      "--use-webgpu-adapter=swiftshader",
      "--disable-dev-shm-usage",
    ],
  });
}

/** Kernel variants compiled on `gpu` so far, by spec name. */
function compiledVariants(gpu: Gpu): { name: string; variant: Variant }[] {
  const cache = gpu.caches.get("kernels") as Map<string, { spec: { name: string }; variant: Variant }>;
  return [...(cache?.values() ?? [])].map((k) => ({ name: k.spec.name, variant: k.variant }));
}

/** Work that compiles the kernels the tests use: every decoder, q8/q4 weights, a training step. */
async function exerciseKernels(gpu: Gpu, prompt: number[]): Promise<void> {
  const files = directoryFiles(MODEL_DIR);
  for (const dtype of ["stored", "f32", "q8", "q4"] as const) {
    const model = await Llama.load(gpu, files, { dtype, maxLength: 256, maxRows: 32 });
    const decoders = [
      { kind: "ar" },
      { kind: "jacobi", blockSize: 16 },
      { kind: "jacobi", blockSize: 8, sliding: true },
      { kind: "jacobi", blockSize: 8, blocks: 2, recycle: 1 },
      { kind: "lookahead" },
      { kind: "ar", sampling: { temperature: 0.7, topP: 0.9 } },
    ] as const;
    for (const d of decoders) await runToEnd(decode(model, prompt, d, { maxNewTokens: 8 }));
    if (dtype === "f32") {
      const ts = new TrainingStep(model, 128);
      const losses = {
        arWeight: 10,
        labelSmoothing: 0.1,
        consistency: "global" as const,
        arTargets: "teacher" as const,
        eosIds: [2],
      };
      const item = {
        kind: "cllm" as const,
        context: prompt,
        states: [[5, 6, 7, 8], [5, 6, 9, 8]],
        fixedPoint: [5, 6, 9, 10],
      };
      const step = new Step(gpu, "train sample");
      ts.recordSample(step, item, true, losses, new SeededRandom(1));
      step.submit();
      // A Jacobi Forcing sample: the masked attention backward and per-row RoPE positions.
      const packed = new Step(gpu, "train packed sample");
      ts.recordSample(
        packed,
        {
          kind: "jacobi-forcing",
          prompt,
          blocks: [{ states: [[5, 6, 7, 8], [5, 6, 9, 8], [5, 6, 9, 10]] }, {
            states: [[1, 1, 1, 1], [11, 12, 13, 14]],
          }],
        },
        false,
        losses,
        new SeededRandom(1),
      );
      packed.submit();
      const update = new Step(gpu, "update");
      ts.recordUpdate(update, { lr: 1e-4, t: 1, maxGradNorm: 1, weightDecay: 0 });
      update.submit();
      await gpu.device.queue.onSubmittedWorkDone();
    }
    model.destroy();
  }
}

Deno.test({
  name: "browser: Chromium compiles every kernel variant and decodes the embedded CLLM as Deno does",
  ...gpuTest,
  ignore: NO_GPU !== null || (NO_CHROMIUM !== null && !IN_CI),
  async fn() {
    const gpu = await testGpu();
    const p = await loadPretrained(gpu, directoryFiles(MODEL_DIR));
    const questions = [
      "Rose buys 4 balls for 8 dollars each and 2 notebooks for 4 dollars each. How many dollars does she spend?",
      "Sam has 19 pens. He gives 7 to Lee and buys 12 more. How many pens does Sam have now?",
      "A box holds 6 eggs. How many eggs are in 8 boxes?",
    ];
    const prompts = questions.map((q) => p.tokenizer.encode(formatPrompt("gsm8k", { question: q })));
    const maxNewTokens = 96;
    const deno = await runWorkload(p, prompts, maxNewTokens);
    await exerciseKernels(gpu, prompts[0]);
    const kernels = compiledVariants(gpu);
    assert.ok(kernels.length > 40, `only ${kernels.length} kernel variants exercised`);

    // The page: the bundle, an empty document, the model files.
    const bundleFile = await Deno.makeTempFile({ suffix: ".js" });
    const bundle = await new Deno.Command(Deno.execPath(), {
      args: ["bundle", "--quiet", "--platform", "browser", `${ROOT}web/check.ts`, "-o", bundleFile],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(bundle.code, 0, new TextDecoder().decode(bundle.stderr));
    const script = await Deno.readFile(bundleFile);
    await Deno.remove(bundleFile);
    const modelFiles: Record<string, string> = {};
    for await (const e of Deno.readDir(MODEL_DIR)) if (e.isFile) modelFiles[e.name] = `/model/${e.name}`;
    const http = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
      const path = new URL(req.url).pathname;
      if (path === "/") {
        return new Response(
          '<!doctype html><title>cllm check</title><link rel="icon" href="data:,"><script type="module" src="/check.js"></script>',
          {
            headers: { "content-type": "text/html" },
          },
        );
      }
      if (path === "/check.js") {
        return new Response(script, { headers: { "content-type": "text/javascript" } });
      }
      if (path.startsWith("/model/")) {
        return new Response(await Deno.readFile(`${MODEL_DIR}/${path.slice(7)}`));
      }
      return new Response("not found", { status: 404 });
    });
    const browser = await launchChromium();
    const errors: string[] = [];
    try {
      const page = await browser.newPage();
      page.on("console", (m) => {
        if (m.type() === "error") errors.push(m.text());
      });
      page.on("pageerror", (e) => errors.push(String(e)));
      await page.goto(`http://127.0.0.1:${http.addr.port}/`);
      await page.waitForFunction(() => "cllmCheck" in globalThis, { timeout: 20_000 }).catch((e) => {
        throw new Error(
          `the bundle did not start in the page (${e.message}); page errors: ${errors.join("; ")}`,
        );
      });
      const report = await page.evaluate(
        (request) =>
          (globalThis as unknown as { cllmCheck: (r: unknown) => Promise<unknown> }).cllmCheck(request),
        {
          files: modelFiles,
          prompts,
          maxNewTokens,
          kernels,
          trainSequences: prompts.map((q, i) => [...q, ...deno[0].tokens[i]]),
        },
      ) as {
        adapter: string;
        compiled: number;
        skipped: string[];
        failures: string[];
        runs: typeof deno;
        training: { arLosses: number[]; checkpoints: string[] };
      };
      await Deno.mkdir(OUT_DIR, { recursive: true });
      await page.screenshot({ path: `${OUT_DIR}/browser_check.png` });
      console.log(
        `browser: ${report.adapter}: ${report.compiled} of ${kernels.length} kernel variants compiled, ` +
          `${report.skipped.length} skipped (a feature it lacks), ${report.failures.length} failed`,
      );
      for (const [i, run] of report.runs.entries()) {
        console.log(
          `  ${run.decoder}: browser ${run.tokensPerSecond.toFixed(1)} tokens/s, ` +
            `${run.readbacksPerToken.toFixed(3)} readbacks and ${
              run.dispatchesPerToken.toFixed(1)
            } dispatches ` +
            `per token; Deno ${deno[i].tokensPerSecond.toFixed(1)} tokens/s, ` +
            `${deno[i].readbacksPerToken.toFixed(3)} readbacks and ${
              deno[i].dispatchesPerToken.toFixed(1)
            } ` +
            `dispatches per token`,
        );
      }
      assert.deepEqual(report.failures, [], "kernel variants that did not compile in Chromium");
      assert.ok(
        report.compiled > kernels.length / 2,
        `${report.compiled} compiled; skipped: ${report.skipped}`,
      );
      for (const [i, run] of report.runs.entries()) {
        assert.deepEqual(run.tokens, deno[i].tokens, `${run.decoder}: browser tokens differ from Deno's`);
      }
      // Training in the tab: 6 steps, finite losses, one checkpoint with every file in the memory store.
      console.log(
        `  training in the tab: AR loss ${report.training.arLosses.map((l) => l.toFixed(3)).join(" → ")}`,
      );
      assert.equal(report.training.arLosses.length, 3);
      assert.ok(report.training.arLosses.every(Number.isFinite));
      assert.deepEqual(report.training.checkpoints, [
        "checkpoint-6: model.safetensors, optimizer.safetensors, config.json, tokenizer.json, trainer_state.json, loss.svg",
      ]);
      assert.deepEqual(errors, [], "console errors in the page");
    } finally {
      await browser.close();
      await http.shutdown();
      p.model.destroy();
    }
  },
});

Deno.test({
  name: "browser: the page (deno task web) generates, shows multi-token jumps, and AR equals Jacobi",
  ...gpuTest,
  ignore: NO_GPU !== null || (NO_CHROMIUM !== null && !IN_CI),
  async fn() {
    // What Deno makes of the page's default prompt and decoder (Jacobi n = 16).
    const gpu = await testGpu();
    const p = await loadPretrained(gpu, directoryFiles(MODEL_DIR));
    const question =
      "Rose buys 4 balls for 8 dollars each and 2 notebooks for 4 dollars each. How many dollars does she spend?";
    const ids = p.tokenizer.encode(formatPrompt("gsm8k", { question }));
    const want = (await runToEnd(decode(p.model, ids, { kind: "jacobi", blockSize: 16 }, {
      maxNewTokens: 120,
      eosIds: p.eosIds,
    }))).result.tokens;
    p.model.destroy();

    const server = await serveWeb(0);
    const browser = await launchChromium();
    const errors: string[] = [];
    try {
      const page = await browser.newPage();
      await page.setViewport({ width: 1000, height: 900 });
      page.on("console", (m) => {
        if (m.type() === "error") errors.push(m.text());
      });
      page.on("pageerror", (e) => errors.push(String(e)));
      await page.goto(`http://127.0.0.1:${server.addr.port}/`);
      const state = () =>
        page.evaluate(() => (globalThis as unknown as { cllmPage: Record<string, unknown> }).cllmPage);
      await page.waitForFunction(
        () => (globalThis as unknown as { cllmPage?: { ready: boolean } }).cllmPage?.ready,
        {
          timeout: 60_000,
        },
      ).catch((e) => {
        throw new Error(`the page did not load its model (${e.message}); errors: ${errors.join("; ")}`);
      });
      await page.click("#versus");
      await page.waitForFunction(
        () =>
          (globalThis as unknown as { cllmPage: { comparison: unknown; busy: boolean } }).cllmPage.comparison,
        { timeout: 120_000 },
      );
      const s = await state() as {
        liveDraws: number;
        comparison: { ar: number; jacobi: number; identical: boolean };
        lastRun: { tokens: number[]; jumps: number[]; decoder: string };
      };
      await Deno.mkdir(OUT_DIR, { recursive: true });
      await page.screenshot({ path: `${OUT_DIR}/web_page.png`, fullPage: true });
      console.log(
        `page: AR ${s.comparison.ar.toFixed(1)} tokens/s, ${s.lastRun.decoder} ${
          s.comparison.jacobi.toFixed(1)
        } ` +
          `tokens/s, largest jump ${Math.max(...s.lastRun.jumps)} tokens, ${s.liveDraws} live redraws; ` +
          `screenshot ${OUT_DIR}/web_page.png`,
      );
      assert.ok(s.comparison.identical, "AR and Jacobi texts differ in the page");
      assert.deepEqual(s.lastRun.tokens, want, "the page's Jacobi tokens differ from Deno's");
      assert.ok(Math.max(...s.lastRun.jumps) > 1, "no multi-token jump shown");
      const drawn = await page.$$eval("#output span.j2, #output span.j3, #output span.j4", (e) => e.length);
      assert.ok(drawn > 0, "no chunk drawn as a multi-token jump");
      assert.ok(s.liveDraws > 2, `the Jacobi view was redrawn ${s.liveDraws} times during the run`);
      const traceRows = await page.$$eval("#trace .row", (e) => e.length);
      assert.ok(traceRows > 0, "no Jacobi trace drawn");
      assert.deepEqual(errors, [], "console errors in the page");
    } finally {
      await browser.close();
      await server.shutdown();
    }
  },
});

Deno.test({
  name: "browser: the page loads a model by Hub name (a fake Hub on 127.0.0.1) and generates with it",
  ...gpuTest,
  ignore: NO_GPU !== null || (NO_CHROMIUM !== null && !IN_CI),
  async fn() {
    const files = new Map<string, Uint8Array<ArrayBuffer>>();
    for await (const e of Deno.readDir(MODEL_DIR)) {
      if (e.isFile && e.name !== "README.md") {
        files.set(e.name, await Deno.readFile(`${MODEL_DIR}/${e.name}`));
      }
    }
    const sha = "0123456789abcdef0123456789abcdef01234567";
    const requests: string[] = [];
    const cors = { "access-control-allow-origin": "*" };
    const hub = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (req) => {
      const path = new URL(req.url).pathname;
      requests.push(path);
      if (path === "/api/models/org/cllm/revision/main") {
        return Response.json({ sha, siblings: [...files.keys()].map((rfilename) => ({ rfilename })) }, {
          headers: cors,
        });
      }
      const m = new RegExp(`^/org/cllm/resolve/${sha}/(.+)$`).exec(path);
      const bytes = m && files.get(m[1]);
      return bytes
        ? new Response(bytes, { headers: cors })
        : new Response("not found", { status: 404, headers: cors });
    });
    const server = await serveWeb(0);
    const browser = await launchChromium();
    const errors: string[] = [];
    try {
      const page = await browser.newPage();
      page.on("pageerror", (e) => errors.push(String(e)));
      await page.goto(`http://127.0.0.1:${server.addr.port}/?hub=http://127.0.0.1:${hub.addr.port}`);
      await page.waitForFunction(
        () => (globalThis as unknown as { cllmPage?: { ready: boolean } }).cllmPage?.ready,
        {
          timeout: 60_000,
        },
      );
      await page.type("#hub", "org/cllm");
      await page.click("#hubLoad");
      await page.waitForFunction(
        () =>
          (globalThis as unknown as { document: { getElementById(id: string): { textContent: string } } })
            .document
            .getElementById("status").textContent.includes("org/cllm ready"),
        {
          timeout: 60_000,
        },
      ).catch(async () => {
        throw new Error(
          `not loaded: ${await page.$eval("#status", (e) => e.textContent)}; ${errors.join("; ")}`,
        );
      });
      // Only what loading needs was fetched.
      assert.ok(!requests.some((r) => r.endsWith("README.md")));
      assert.ok(requests.some((r) => r.endsWith("/model.safetensors")));
      await page.click("#run");
      await page.waitForFunction(
        () => (globalThis as unknown as { cllmPage: { lastRun: unknown; busy: boolean } }).cllmPage.lastRun,
        { timeout: 60_000 },
      );
      const text = await page.evaluate(() =>
        (globalThis as unknown as { cllmPage: { lastRun: { text: string } } }).cllmPage.lastRun.text
      );
      assert.match(text, /#### 40/);
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
      await server.shutdown();
      await hub.shutdown();
    }
  },
});
