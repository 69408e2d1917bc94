/**
 * The device script (bench/device.ts): the card table, and one `--quick` run end to end on this
 * adapter (small matmul sweep, one TinyLlama-shaped layer), checking that every figure is there and
 * sane, so that the one run on a lent GPU machine does not fail on something testable here.
 */
import assert from "node:assert/strict";
import { cardPeaks, SWEEP_TILINGS, sweepSpecs } from "../../bench/device.ts";
import { gpuTest } from "../_gpu.ts";

Deno.test("cardPeaks: the device machines' cards by name, options override, unknown adapters get none", () => {
  assert.deepEqual(cardPeaks("NVIDIA H100 80GB HBM3"), {
    card: "H100 SXM",
    fp32Tflops: 67,
    bandwidthGBs: 3350,
  });
  assert.equal(cardPeaks("NVIDIA H100 PCIe").card, "H100 PCIe");
  assert.equal(cardPeaks("NVIDIA H200").bandwidthGBs, 4800);
  assert.deepEqual(cardPeaks("llvmpipe (LLVM 15.0.6, 256 bits)"), {
    card: null,
    fp32Tflops: null,
    bandwidthGBs: null,
  });
  assert.deepEqual(cardPeaks("llvmpipe", { bandwidthGBs: 20 }), {
    card: null,
    fp32Tflops: null,
    bandwidthGBs: 20,
  });
});

Deno.test("sweepSpecs: the square products and every decoding shape in f16 and q4", () => {
  const specs = sweepSpecs(4096, 4096, 11008);
  assert.equal(specs.length, 2 + 2 * 3 * 2);
  assert.ok(specs.some((s) => s.M === 16 && s.N === 11008 && s.K === 4096 && s.weights === "q4"));
  assert.equal(new Set(specs.map((s) => s.name)).size, specs.length, "names are unique");
});

Deno.test(
  "bench/device.ts --quick: writes every section's figures and the sweep's picture",
  gpuTest,
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "device_test_" });
    try {
      const out = `${dir}/device.json`;
      const run = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL("../../bench/device.ts", import.meta.url).pathname,
          "--quick",
          "--skip",
          "forward",
          "--out",
          out,
        ],
        env: { NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(run.stdout) + new TextDecoder().decode(run.stderr);
      assert.equal(run.code, 0, text);
      const figures = JSON.parse(await Deno.readTextFile(out));
      assert.ok(figures.adapter.description.length > 0);
      const specs = sweepSpecs(128, 128, 256, [1, 16]);
      // Every product with the table's tiling and two of the sweep's; no tiling refused.
      assert.equal(figures.matmul.cases.length, specs.length * 3, text);
      for (const c of figures.matmul.cases) {
        assert.ok(Number.isFinite(c.gflops) && c.gflops > 0, `${c.name} ${c.sweep}: ${c.gflops} GFLOP/s`);
      }
      assert.deepEqual(Object.keys(figures.matmul.best).sort(), specs.map((s) => s.name).sort());
      assert.ok(SWEEP_TILINGS.length >= 3);
      const svg = await Deno.readTextFile(`${dir}/device.matmul.svg`);
      assert.match(svg, /^<svg/);
      assert.equal(figures.forward, undefined, "--skip forward");
      for (const dtype of ["f16", "q4"]) {
        const r = figures.real[dtype];
        assert.ok(r.weightGB > 0 && r.arTokensPerSecond > 0 && r.rows16OverRows1 > 0, JSON.stringify(r));
      }
      assert.ok(figures.real.q4.weightGB < figures.real.f16.weightGB);
      assert.equal(figures.real.f16.ofRoofline, null, "no bandwidth for an unknown adapter");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
