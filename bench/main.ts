/**
 * `deno task bench`: prints the adapter, the OpenBLAS sgemm baseline of this machine, then runs
 * each bench section and prints its figures; `--out FILE` also writes them all as JSON.
 *
 * Usage: `deno task bench [--only matmul[,other]] [--out results.json]`
 *
 * Sections: matmul kernels against OpenBLAS, decoding loops on stories260K, and the embedded models'
 * base-vs-CLLM table on held-out problems.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type Gpu, requestGpu } from "../core/mod.ts";
import { Llama } from "../model/mod.ts";
import { sgemmPeak } from "./_sgemm_peak.ts";
import { runDecodeBench } from "./decode_bench.ts";
import { runForwardBench } from "./forward_bench.ts";
import { runGsm8kBench } from "./gsm8k_bench.ts";
import { runMatmulBench } from "./matmul_bench.ts";
import { runQualityBench } from "./quality_bench.ts";
import { runScaleBench, scaleChart } from "./scale_bench.ts";
import { runServeBench } from "./serve_bench.ts";
import { runSamplingBench } from "./sampling_bench.ts";

/** What every section gets. */
export interface BenchContext {
  /** The device. */
  gpu: Gpu;
  /** OpenBLAS sgemm GFLOP/s at 1024³ on this machine, or null when unavailable. */
  openBlasGflops: number | null;
}

/** One bench section: a name for `--only` and a function returning its figures. */
export interface BenchSection {
  /** Name used by `--only` and as the key in the JSON output. */
  name: string;
  /** One line for the listing. */
  description: string;
  /** Runs the section, printing as it goes; returns its figures. */
  run: (ctx: BenchContext) => Promise<unknown>;
  /** A picture of the figures, written beside `--out` as `<out>.<section>.svg`. */
  svg?: (figures: unknown) => string;
}

/** The sections, in running order. */
export const sections: BenchSection[] = [
  {
    name: "matmul",
    description: "x·Wᵀ at T = 1, 16, 64 and 1024³, f16 weights, backward forms",
    run: (ctx) => runMatmulBench(ctx.gpu, ctx.openBlasGflops),
  },
  {
    name: "decode",
    description: "stories260K: GPU-resident AR / Jacobi / lookahead loops vs one readback per step",
    run: (ctx) => runDecodeBench(ctx.gpu),
  },
  {
    name: "forward",
    description:
      "embedded CLLM: dispatches, host, GPU-kernel and wall time of one forward at 1, 8, 16, 32 rows, fused vs separate",
    run: (ctx) => runForwardBench(ctx.gpu),
  },
  {
    name: "sampling",
    description:
      "embedded CLLM, t = 0.7 and 1.0: GPU-resident vs host-sampled AR, lossless sampled Jacobi; GSM accuracy",
    run: (ctx) => runSamplingBench(ctx.gpu),
  },
  {
    name: "scale",
    description:
      "TinyLlama-1.1B-shaped checkpoints (2.2 GB, made in a temp folder): load GB/s, peak RSS, AR tokens/s",
    run: () => runScaleBench(),
    svg: scaleChart,
  },
  {
    name: "serve",
    description: "cllm serve under load: 32 streaming clients x 4 requests on the embedded CLLM, checked",
    run: (ctx) => runServeBench(ctx.gpu),
  },
  {
    name: "quality",
    description:
      "f32 / f16 / q8 / q4 weights: perplexity, stories260K golden text, the CLLM's GSM accuracy and tok/forward",
    run: (ctx) => runQualityBench(ctx.gpu),
  },
  {
    name: "gsm8k",
    description: "embedded models, 100 held-out problems: base AR vs CLLM Jacobi, the model cards' table",
    run: (ctx) => runGsm8kBench(ctx.gpu),
  },
];

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      only: { type: "string", multiple: true },
      out: { type: "string" },
      "forward-path": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  const path = values["forward-path"];
  if (path !== undefined) {
    if (path !== "fused" && path !== "separate") {
      throw new Error(`--forward-path must be fused or separate, not "${path}"`);
    }
    // Every model the sections load records its layers this way (the forward section runs both).
    Llama.defaultForwardPath = path;
  }
  if (values.help) {
    console.log(
      "deno task bench [--only SECTION[,SECTION]] [--out FILE.json] [--forward-path fused|separate]",
    );
    for (const s of sections) console.log(`  ${s.name.padEnd(10)} ${s.description}`);
    return;
  }
  const only = (values.only ?? []).flatMap((s) => s.split(",")).map((s) => s.trim()).filter(Boolean);
  const unknown = only.filter((name) => !sections.some((s) => s.name === name));
  if (unknown.length > 0) {
    throw new RangeError(
      `Unknown bench section "${unknown.join('", "')}"; choose from ${
        sections.map((s) => s.name).join(", ")
      }`,
    );
  }
  const chosen = only.length > 0 ? sections.filter((s) => only.includes(s.name)) : sections;

  const gpu = await requestGpu();
  const a = gpu.adapter;
  console.log(
    `adapter: ${a.description} (vendor ${a.vendor || "?"}${a.architecture ? `, ${a.architecture}` : ""}` +
      `${a.isFallbackAdapter ? ", fallback/software" : ""}); features: ` +
      Object.entries(gpu.features).filter(([, on]) => on).map(([k]) => k).join(", "),
  );
  // Other processes on the same CPUs slow a software adapter and OpenBLAS unequally over a run.
  const load = Deno.loadavg()[0];
  if (load > 0.5) {
    console.log(
      `note: load average ${load.toFixed(2)} before the run: other processes share these CPUs, ` +
        `so figures and ratios are low and noisy`,
    );
  }
  const peak = await sgemmPeak(1024);
  console.log(
    peak.gflops !== null
      ? `OpenBLAS sgemm 1024³: ${peak.gflops.toFixed(1)} GFLOP/s (the ceiling for any kernel on these CPUs)`
      : `OpenBLAS sgemm: unavailable (${peak.note})`,
  );

  const results: Record<string, unknown> = {
    date: new Date().toISOString(),
    adapter: a,
    features: gpu.features,
    loadAverage: load,
    openBlas: peak,
  };
  for (const section of chosen) {
    console.log(`\n== ${section.name}: ${section.description}`);
    results[section.name] = await section.run({ gpu, openBlasGflops: peak.gflops });
  }
  if (values.out) {
    await Deno.writeTextFile(values.out, JSON.stringify(results, null, 2) + "\n");
    console.log(`\nwrote ${values.out}`);
    for (const section of chosen) {
      if (!section.svg) continue;
      const path = `${values.out.replace(/\.json$/, "")}.${section.name}.svg`;
      await Deno.writeTextFile(path, section.svg(results[section.name]));
      console.log(`wrote ${path}`);
    }
  }
  gpu.destroy();
}

if (import.meta.main) await main();
