/**
 * The device script: one command that measures what a GPU machine can tell us, as one JSON file
 * (and an SVG of the matmul sweep beside it). Written to run on an offline GPU machine with no Deno
 * of its own (`bench/device.sh run` unpacks what `bench/device.sh prepare` packed here); it runs on
 * any adapter, so it is tested here on llvmpipe with `--quick`.
 *
 *     deno run -A bench/device.ts --out device.json [--quick] [--shape llama-2-7b] [--layers 8]
 *
 * Sections:
 * 1. The adapter: name, features, limits, and the card's published peaks (fp32 FLOP/s, memory
 *    bandwidth) when its name is a known card (`--peak-tflops` / `--bandwidth-gbs` override).
 * 2. Matmul sweep: x·Wᵀ at S³ (S = 4096) with f32 and f16 weights, and the decoding shapes of a
 *    Llama-2-7B layer (T = 1, 16, 64 rows against 4096 × 4096 and 11008 × 4096 weights, f16 and q4),
 *    each with the adapter table's tiling and with every tiling of a small sweep, so that one run
 *    both measures today's kernels and says which tiling the table should pick. GFLOP/s against the
 *    fp32 peak; GB/s (weights + activations read once) against the memory bandwidth.
 * 3. Forward cost of the embedded CLLM at 1, 8, 16, 32, 64 rows, fused and separate paths
 *    (bench/forward_bench.ts): on a GPU this model is bound by dispatches and waits, so the ratio
 *    T = 16 / T = 1 shows what a Jacobi block costs there.
 * 4. A real shape: a random checkpoint of `--shape` (default Llama-2-7B) with `--layers` layers
 *    (default 8 of its 32: a quarter of the 13.5 GB, so the run fits a short lease; `--layers 32`
 *    for the whole model), written to a temporary folder on the machine and deleted after. For f16
 *    and q4 weights: greedy AR tokens/s, the forward at T = 1, 16, 64, and the T = 1 forward's
 *    weight bytes per second against the memory-bandwidth roofline.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type Gpu, readTensors, requestGpu, Step, Tensor } from "../core/mod.ts";
import { decode } from "../decode/decode.ts";
import { closeSession, prefill, runToEnd } from "../decode/generation.ts";
import { directoryFiles, Llama } from "../model/mod.ts";
import type { MatmulTiling } from "../kernels/matmul.ts";
import { REAL_SHAPES, writeRandomCheckpoint } from "../dev/random_checkpoint.ts";
import { barChart } from "../cli/svg_chart.ts";
import {
  benchMatmulCase,
  type MatmulBenchCase,
  type MatmulBenchSpec,
  measureRoundTrip,
} from "./matmul_bench.ts";
import { runForwardBench } from "./forward_bench.ts";

/** Published peaks of the cards the device machines have (vendor data sheets; dense, no tensor cores). */
export const KNOWN_CARDS: { pattern: RegExp; name: string; fp32Tflops: number; bandwidthGBs: number }[] = [
  { pattern: /H100.*PCIe/i, name: "H100 PCIe", fp32Tflops: 51, bandwidthGBs: 2000 },
  { pattern: /H100/i, name: "H100 SXM", fp32Tflops: 67, bandwidthGBs: 3350 },
  { pattern: /H200/i, name: "H200", fp32Tflops: 67, bandwidthGBs: 4800 },
];

/** The peaks to compare with: a known card's, overridden by the options. */
export function cardPeaks(
  description: string,
  override: { fp32Tflops?: number; bandwidthGBs?: number } = {},
): { card: string | null; fp32Tflops: number | null; bandwidthGBs: number | null } {
  const known = KNOWN_CARDS.find((c) => c.pattern.test(description));
  return {
    card: known?.name ?? null,
    fp32Tflops: override.fp32Tflops ?? known?.fp32Tflops ?? null,
    bandwidthGBs: override.bandwidthGBs ?? known?.bandwidthGBs ?? null,
  };
}

/** The tilings the sweep tries besides the table's (register blocks × workgroup sizes). */
export const SWEEP_TILINGS: Partial<MatmulTiling>[] = [
  { R: 1, C: 1, WG: 64, SG: false },
  { R: 1, C: 4, WG: 64, SG: false },
  { R: 2, C: 4, WG: 64, SG: false },
  { R: 4, C: 4, WG: 64, SG: false },
  { R: 4, C: 4, WG: 128, SG: false },
  { R: 8, C: 4, WG: 64, SG: false },
  { R: 8, C: 4, WG: 256, SG: false },
  { R: 16, C: 4, WG: 64, SG: false },
];

const tilingName = (t: Partial<MatmulTiling> | undefined) =>
  t ? `${t.R}x${t.C} wg${t.WG}${t.SG ? " sg" : ""}` : "table";

/**
 * The sweep's products: S³ square, and the decoding shapes of a layer (hidden × hidden, ffn ×
 * hidden) at T = 1, 16, 64 rows (`rows` to choose others) with f16 and q4 weights.
 */
export function sweepSpecs(
  S: number,
  hidden: number,
  ffn: number,
  rows: readonly number[] = [1, 16, 64],
): MatmulBenchSpec[] {
  const specs: MatmulBenchSpec[] = [
    { name: `x·Wᵀ ${S}³ f32`, layout: "nt", M: S, N: S, K: S, weights: "f32" },
    { name: `x·Wᵀ ${S}³ f16 W`, layout: "nt", M: S, N: S, K: S, weights: "f16" },
  ];
  for (const weights of ["f16", "q4"] as const) {
    for (const T of rows) {
      specs.push({
        name: `T=${T} ${hidden}x${hidden} ${weights}`,
        layout: "nt",
        M: T,
        N: hidden,
        K: hidden,
        weights,
      });
      specs.push({
        name: `T=${T} ${ffn}x${hidden} ${weights}`,
        layout: "nt",
        M: T,
        N: ffn,
        K: hidden,
        weights,
      });
    }
  }
  return specs;
}

/** One case of the sweep with its derived ratios. */
export type DeviceMatmulCase = MatmulBenchCase & {
  /** The tiling forced, or "table". */
  sweep: string;
  /** gflops / the card's fp32 peak. */
  ofFp32Peak: number | null;
  /** gbs / the card's memory bandwidth. */
  ofBandwidth: number | null;
};

async function matmulSection(
  gpu: Gpu,
  specs: MatmulBenchSpec[],
  tilings: readonly Partial<MatmulTiling>[],
  peaks: ReturnType<typeof cardPeaks>,
  effort: { targetMs: number; rounds: number },
): Promise<{ roundTripMs: number; cases: DeviceMatmulCase[]; best: Record<string, string> }> {
  const roundTripMs = await measureRoundTrip(gpu);
  console.log(`submit + readback round trip: ${roundTripMs.toFixed(2)} ms`);
  const cases: DeviceMatmulCase[] = [];
  const best: Record<string, string> = {};
  for (const spec of specs) {
    let top: DeviceMatmulCase | null = null;
    for (const tiling of [undefined, ...tilings]) {
      let c: MatmulBenchCase;
      try {
        c = await benchMatmulCase(gpu, { ...spec, tiling }, roundTripMs, null, effort);
      } catch (e) {
        // A tiling the kernel refuses for this layout or adapter (e.g. WG over the limit).
        console.log(`  ${spec.name} ${tilingName(tiling)}: refused (${(e as Error).message})`);
        continue;
      }
      const row: DeviceMatmulCase = {
        ...c,
        sweep: tilingName(tiling),
        ofFp32Peak: peaks.fp32Tflops ? c.gflops / (peaks.fp32Tflops * 1000) : null,
        ofBandwidth: peaks.bandwidthGBs ? c.gbs / peaks.bandwidthGBs : null,
      };
      cases.push(row);
      if (!top || row.gflops > top.gflops) top = row;
      const pct = (x: number | null) => (x === null ? "" : ` (${(100 * x).toFixed(1)} %)`);
      console.log(
        `  ${spec.name.padEnd(24)} ${row.sweep.padEnd(16)} ${row.ms.toFixed(3).padStart(9)} ms ` +
          `${row.gflops.toFixed(1).padStart(9)} GFLOP/s${pct(row.ofFp32Peak)} ${
            row.gbs.toFixed(1).padStart(8)
          } GB/s${pct(row.ofBandwidth)}`,
      );
    }
    if (top) best[spec.name] = top.sweep;
  }
  return { roundTripMs, cases, best };
}

/** Forward ms at `rows` rows: the best of 3 steps of `reps` forwards, one readback each. */
async function forwardMs(model: Llama, rows: number, reps: number): Promise<number> {
  const gpu = model.gpu;
  const prompt = [1, 300, 400, 500, 600, 700, 800, 900];
  const s = prefill(model, prompt, 64);
  const logits = new Tensor(gpu, [rows, model.config.vocabSize], "f32", "device logits");
  const run = async (n: number) => {
    const t0 = performance.now();
    const step = new Step(gpu, `forward ${rows}`);
    for (let i = 0; i < n; i++) {
      model.forward(step, {
        tokens: s.tokens,
        tokenOffset: 0,
        rows,
        position: s.cache.at(prompt.length),
        cache: s.cache,
        logits,
      });
    }
    step.submit();
    await readTensors(gpu, [logits]);
    return performance.now() - t0;
  };
  await run(1); // compile
  let best = Infinity;
  for (let i = 0; i < 3; i++) best = Math.min(best, (await run(reps)) / reps);
  closeSession(s);
  logits.destroy();
  return best;
}

async function realShapeSection(
  gpu: Gpu,
  shape: string,
  layers: number,
  tokens: number,
  peaks: ReturnType<typeof cardPeaks>,
  quick: boolean,
): Promise<Record<string, unknown>> {
  const rows = quick ? [1, 16] : [1, 16, 64];
  const dir = await Deno.makeTempDir({ prefix: "device_bench_" });
  const figures: Record<string, unknown> = { shape, layers };
  try {
    let t0 = performance.now();
    const bytes = await writeRandomCheckpoint(dir, { shape, layers, dtype: "F16", shards: 2 });
    figures.checkpointGB = bytes / 1e9;
    console.log(
      `${shape}, ${layers} layer(s): ${(bytes / 1e9).toFixed(2)} GB written in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s`,
    );
    for (const dtype of ["f16", "q4"] as const) {
      t0 = performance.now();
      const model = await Llama.load(gpu, directoryFiles(dir), { dtype, maxLength: 256, maxRows: 64 });
      await readTensors(gpu, [model.norm]);
      const loadSeconds = (performance.now() - t0) / 1000;
      let weightBytes = 0;
      for (const t of [...model.weights.values(), ...[...model.splitWeights.values()].flat()]) {
        weightBytes += t.byteLength;
      }
      const prompt = [1, 300, 400, 500, 600, 700, 800, 900];
      await runToEnd(decode(model, prompt, { kind: "ar" }, { maxNewTokens: 2 })); // compile
      t0 = performance.now();
      const { result } = await runToEnd(decode(model, prompt, { kind: "ar" }, { maxNewTokens: tokens }));
      const arTokensPerSecond = result.tokens.length / ((performance.now() - t0) / 1000);
      const ms: Record<string, number> = {};
      for (const T of rows) ms[`T=${T}`] = await forwardMs(model, T, quick ? 1 : 8);
      // A 1-row forward reads every weight once (the embedding only its row; counted whole here,
      // so the figure slightly overstates the bytes a token needs).
      const weightGBsAtT1 = weightBytes / (ms["T=1"] / 1000) / 1e9;
      const row = {
        loadSeconds,
        weightGB: weightBytes / 1e9,
        arTokensPerSecond,
        forwardMs: ms,
        rows16OverRows1: ms["T=16"] / ms["T=1"],
        rows64OverRows1: quick ? null : ms["T=64"] / ms["T=1"],
        weightGBsAtT1,
        rooflineTokensPerSecond: peaks.bandwidthGBs ? (peaks.bandwidthGBs * 1e9) / weightBytes : null,
        ofRoofline: peaks.bandwidthGBs ? weightGBsAtT1 / peaks.bandwidthGBs : null,
      };
      figures[dtype] = row;
      console.log(
        `  ${dtype}: load ${loadSeconds.toFixed(1)} s, ${row.weightGB.toFixed(2)} GB of weights; AR ${
          arTokensPerSecond.toFixed(2)
        } tokens/s; forward ${rows.map((T) => ms[`T=${T}`].toFixed(2)).join(" / ")} ms at T = ${
          rows.join(" / ")
        } (16 rows ${row.rows16OverRows1.toFixed(2)}x one row); T = 1 reads ${weightGBsAtT1.toFixed(1)} GB/s${
          row.ofRoofline === null ? "" : ` = ${(100 * row.ofRoofline).toFixed(1)} % of the bandwidth`
        }`,
      );
      await gpu.device.queue.onSubmittedWorkDone();
      model.destroy();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  return figures;
}

/** The matmul sweep as bars: the best tiling's GFLOP/s per product, the table's beside it. */
export function sweepChart(cases: DeviceMatmulCase[], adapter: string): string {
  const names = [...new Set(cases.map((c) => c.name))];
  const bars = names.flatMap((name) => {
    const rows = cases.filter((c) => c.name === name);
    const table = rows.find((c) => c.sweep === "table");
    const top = rows.reduce((a, b) => (b.gflops > a.gflops ? b : a));
    return [
      ...(table
        ? [{ label: `${name} (table)`, value: table.gflops, note: `${table.gflops.toFixed(0)} GFLOP/s` }]
        : []),
      { label: `${name} (${top.sweep})`, value: top.gflops, note: `${top.gflops.toFixed(0)} GFLOP/s` },
    ];
  });
  return barChart(`matmul x·Wᵀ, GFLOP/s: the table's tiling and the sweep's best (${adapter})`, bars);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      out: { type: "string" },
      quick: { type: "boolean" },
      shape: { type: "string" },
      layers: { type: "string" },
      tokens: { type: "string" },
      "peak-tflops": { type: "string" },
      "bandwidth-gbs": { type: "string" },
      skip: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(
      "deno run -A bench/device.ts [--out FILE.json] [--quick] [--shape NAME] [--layers N] [--tokens N]\n" +
        "  [--peak-tflops X] [--bandwidth-gbs X] [--skip matmul,forward,real]",
    );
    return;
  }
  const quick = values.quick === true;
  // --quick (a check of the script on any adapter) defaults to one layer of TinyLlama's shape.
  const shape = values.shape ?? (quick ? "tinyllama-1.1b" : "llama-2-7b");
  if (!REAL_SHAPES[shape]) {
    throw new RangeError(`--shape must be one of ${Object.keys(REAL_SHAPES).join(", ")}, not "${shape}"`);
  }
  const skip = new Set((values.skip ?? "").split(",").map((s) => s.trim()).filter(Boolean));
  for (const s of skip) {
    if (!["matmul", "forward", "real"].includes(s)) {
      throw new RangeError(`--skip takes matmul, forward, real; not "${s}"`);
    }
  }
  const positive = (name: string, text: string | undefined) => {
    if (text === undefined) return undefined;
    const n = Number(text);
    if (!(n > 0)) throw new RangeError(`--${name} must be a positive number, not "${text}"`);
    return n;
  };
  const gpu = await requestGpu();
  const a = gpu.adapter;
  const peaks = cardPeaks(a.description, {
    fp32Tflops: positive("peak-tflops", values["peak-tflops"]),
    bandwidthGBs: positive("bandwidth-gbs", values["bandwidth-gbs"]),
  });
  const out: Record<string, unknown> = {
    date: new Date().toISOString(),
    adapter: {
      description: a.description,
      vendor: a.vendor,
      architecture: a.architecture,
      fallback: a.isFallbackAdapter,
      features: gpu.features,
      ...peaks,
    },
    quick,
  };
  console.log(
    `adapter: ${a.description}${
      peaks.card ? ` (${peaks.card}: ${peaks.fp32Tflops} TFLOP/s fp32, ${peaks.bandwidthGBs} GB/s)` : ""
    }`,
  );
  const outPath = values.out;
  const save = async () => {
    if (!outPath) return;
    // Written after every section (temporary name, then renamed), so a run cut short keeps what it measured.
    await Deno.writeTextFile(`${outPath}.tmp`, JSON.stringify(out, null, 2) + "\n");
    await Deno.rename(`${outPath}.tmp`, outPath);
  };
  await save();

  if (!skip.has("matmul")) {
    console.log("\n== matmul sweep");
    // --quick: small products, two tilings besides the table's (a check of the script, not figures).
    const specs = quick ? sweepSpecs(128, 128, 256, [1, 16]) : sweepSpecs(4096, 4096, 11008);
    const matmul = await matmulSection(
      gpu,
      specs,
      quick ? SWEEP_TILINGS.slice(1, 3) : SWEEP_TILINGS,
      peaks,
      quick ? { targetMs: 20, rounds: 2 } : { targetMs: 150, rounds: 3 },
    );
    out.matmul = matmul;
    if (outPath) {
      const svg = outPath.replace(/\.json$/, "") + ".matmul.svg";
      await Deno.writeTextFile(`${svg}.tmp`, sweepChart(matmul.cases, a.description));
      await Deno.rename(`${svg}.tmp`, svg);
    }
    await save();
  }
  if (!skip.has("forward")) {
    console.log("\n== forward of the embedded CLLM");
    out.forward = await runForwardBench(gpu, quick ? [1, 16] : [1, 8, 16, 32, 64]);
    await save();
  }
  if (!skip.has("real")) {
    const layers = positive("layers", values.layers) ?? (quick ? 1 : 8);
    console.log(`\n== ${shape}, ${layers} layer(s), random weights`);
    const tokens = positive("tokens", values.tokens) ?? (quick ? 4 : 32);
    out.real = await realShapeSection(gpu, shape, layers, tokens, peaks, quick);
    await save();
  }
  if (outPath) console.log(`\nwrote ${outPath}`);
}

if (import.meta.main) await main();
