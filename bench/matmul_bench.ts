/**
 * Matmul benchmark: the forward product y = x · Wᵀ at decode and Jacobi-block sizes (T = 1, 16, 64
 * rows against a 1024 × 1024 weight) and at 1024³, plus the backward forms at 1024³.
 *
 * Method (correctness is tests/kernels/matmul_test.ts's job): each case is warmed up
 * (compile + one run + readback), then timed as `reps` dispatches recorded into ONE step with ONE
 * readback inside the timed region, five times; the figures use the best round (other processes
 * on the same CPUs only ever slow a round down) and the median is reported beside it. The fixed
 * submit + readback round trip
 * (~10 ms in Deno, docs/webgpu.md §2) is measured separately and subtracted; `reps` is chosen so the
 * timed region is ~0.5 s, so the correction is a few percent. GFLOP/s count 2·T·N·K; GB/s count the
 * bytes of x, W and y once (the memory-bound view that fits T = 1). The ratio is to OpenBLAS sgemm
 * on the same CPUs, measured in the same run.
 *
 * @module
 */

import { type Gpu, readTensors, Step, Tensor } from "../core/mod.ts";
import {
  matmulForward,
  type MatmulLayout,
  matmulNN,
  type MatmulTiling,
  matmulTN,
  matmulVariant,
} from "../kernels/matmul.ts";
import { quantizeQ8 } from "../kernels/quantize.ts";

/** One timed case. */
export interface MatmulBenchCase {
  /** Short name, e.g. `x·Wᵀ T=16`. */
  name: string;
  /** Product layout. */
  layout: MatmulLayout;
  /** Output rows (T for nt and nn). */
  M: number;
  /** Output columns. */
  N: number;
  /** Reduction length. */
  K: number;
  /** Dtype of the weight operand. */
  weights: MatmulBenchWeights;
  /** The variant label fields that matter (rows × columns per invocation, subgroups). */
  tiling: string;
  /** Dispatches per timed step. */
  reps: number;
  /** Milliseconds per product (best of the rounds, round trip subtracted). */
  ms: number;
  /** Milliseconds per product, median of the rounds. */
  medianMs: number;
  /** 2·M·N·K / time. */
  gflops: number;
  /** (x + W + y bytes) / time. */
  gbs: number;
  /** gflops / OpenBLAS sgemm GFLOP/s, or null without a baseline. */
  ratioToOpenBlas: number | null;
  /** Median kernel time from timestamp queries, when the adapter has them. */
  kernelMs: number | null;
}

/** What {@linkcode runMatmulBench} returns. */
export interface MatmulBenchResult {
  /** Median of ~20 empty submit + readback round trips, in ms. */
  roundTripMs: number;
  /** The OpenBLAS figure the ratios use. */
  openBlasGflops: number | null;
  /** The timed cases. */
  cases: MatmulBenchCase[];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Dtypes a benchmarked weight operand can have (q4 only in the `nt` layout, as models use it). */
export type MatmulBenchWeights = "f32" | "f16" | "q4";

/**
 * Fills a tensor with small values so nothing overflows across repetitions; a q4 tensor is
 * quantised on the GPU from an f32 one.
 */
function filled(gpu: Gpu, shape: number[], label: string, dtype: MatmulBenchWeights = "f32"): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = ((i * 7919) % 1000) / 1000 - 0.5;
  if (dtype !== "q4") return Tensor.from(gpu, data, shape, label, dtype);
  const source = Tensor.from(gpu, data, shape, `${label} (f32)`);
  const q = new Tensor(gpu, shape, "q4", label);
  const step = new Step(gpu, "quantise bench weight");
  quantizeQ8(step, source, q, { count: n });
  step.submit();
  source.destroy(); // wgpu keeps it alive until the submitted work is done
  return q;
}

/** Median of `count` empty-step + one-tensor-readback round trips, in ms. */
export async function measureRoundTrip(gpu: Gpu, count = 20): Promise<number> {
  const probe = new Tensor(gpu, [4], "f32", "round trip probe");
  const times: number[] = [];
  for (let i = 0; i <= count; i++) {
    const t0 = performance.now();
    const step = new Step(gpu, "round trip");
    step.submit();
    await readTensors(gpu, [probe]);
    if (i > 0) times.push(performance.now() - t0); // the first one warms up
  }
  probe.destroy();
  return median(times);
}

/** One product to time: its name, layout, sizes and weight dtype, and optionally a tiling to force. */
export interface MatmulBenchSpec {
  /** Short name, e.g. `x·Wᵀ T=16`. */
  name: string;
  /** Product layout. */
  layout: MatmulLayout;
  /** Output rows (T for nt and nn). */
  M: number;
  /** Output columns. */
  N: number;
  /** Reduction length. */
  K: number;
  /** Dtype of the weight operand. */
  weights: MatmulBenchWeights;
  /** Fields of the tiling to use instead of the adapter table's choice (a sweep). */
  tiling?: Partial<MatmulTiling>;
}

/** How long to time a case: the timed region's target length and the number of rounds. */
export interface MatmulBenchEffort {
  /** Dispatches per timed step are chosen so that one step takes about this long (ms). */
  targetMs: number;
  /** Timed rounds; the best is reported, the median beside it. */
  rounds: number;
}

/**
 * Runs the matmul benchmark, prints one line per case and returns the figures.
 *
 * @param gpu the device
 * @param peak OpenBLAS sgemm GFLOP/s on this machine (null: print no ratio)
 *
 * @example Running it with a baseline
 * ```ts ignore
 * const result = await runMatmulBench(gpu, 170);
 * console.log(result.cases.map((c) => `${c.name}: ${c.gflops.toFixed(1)} GFLOP/s`));
 * ```
 */
export async function runMatmulBench(gpu: Gpu, peak: number | null): Promise<MatmulBenchResult> {
  const roundTripMs = await measureRoundTrip(gpu);
  console.log(`submit + readback round trip: ${roundTripMs.toFixed(2)} ms (median of 20)`);
  const specs: MatmulBenchSpec[] = [
    { name: "x·Wᵀ T=1", layout: "nt", M: 1, N: 1024, K: 1024, weights: "f32" },
    { name: "x·Wᵀ T=16", layout: "nt", M: 16, N: 1024, K: 1024, weights: "f32" },
    { name: "x·Wᵀ T=64", layout: "nt", M: 64, N: 1024, K: 1024, weights: "f32" },
    { name: "x·Wᵀ 1024³", layout: "nt", M: 1024, N: 1024, K: 1024, weights: "f32" },
    { name: "x·Wᵀ T=1 f16 W", layout: "nt", M: 1, N: 1024, K: 1024, weights: "f16" },
    { name: "x·Wᵀ T=16 f16 W", layout: "nt", M: 16, N: 1024, K: 1024, weights: "f16" },
    { name: "dY·W 1024³ (nn)", layout: "nn", M: 1024, N: 1024, K: 1024, weights: "f32" },
    { name: "dYᵀ·X 1024³ (tn)", layout: "tn", M: 1024, N: 1024, K: 1024, weights: "f32" },
  ];
  const cases: MatmulBenchCase[] = [];
  const columns: [string, number][] = [
    ["case", -18],
    ["tiling", -14],
    ["ms", 9],
    ["median", 9],
    ["GFLOP/s", 8],
    ["GB/s", 6],
    ["vs BLAS", 8],
    ["kernel ms", 10],
  ];
  const row = (cells: string[]) =>
    cells.map((cell, i) => {
      const width = columns[i][1];
      return width < 0 ? cell.padEnd(-width) : cell.padStart(width);
    }).join(" ");
  console.log(row(columns.map(([name]) => name)));
  for (const spec of specs) {
    const c = await benchMatmulCase(gpu, spec, roundTripMs, peak);
    cases.push(c);
    console.log(row([
      c.name,
      c.tiling,
      c.ms.toFixed(3),
      c.medianMs.toFixed(3),
      c.gflops.toFixed(1),
      c.gbs.toFixed(1),
      c.ratioToOpenBlas === null ? "n/a" : `${(100 * c.ratioToOpenBlas).toFixed(1)} %`,
      c.kernelMs === null ? "n/a" : c.kernelMs.toFixed(3),
    ]));
  }
  return { roundTripMs, openBlasGflops: peak, cases };
}

/**
 * Times one product (see the module header for the method) and returns its figures.
 *
 * @param gpu the device
 * @param spec the product, and optionally a tiling to force
 * @param roundTripMs the submit + readback round trip to subtract ({@linkcode measureRoundTrip})
 * @param peak the GFLOP/s the ratio is taken to (OpenBLAS here; null: none)
 * @param effort timed-region length and rounds (default 500 ms × 5)
 */
export async function benchMatmulCase(
  gpu: Gpu,
  spec: MatmulBenchSpec,
  roundTripMs: number,
  peak: number | null,
  effort: MatmulBenchEffort = { targetMs: 500, rounds: 5 },
): Promise<MatmulBenchCase> {
  const { layout, M, N, K, weights } = spec;
  if (weights === "q4" && layout !== "nt") {
    throw new RangeError(`benchMatmulCase: q4 weights only in the nt layout, not ${layout}`);
  }
  const variant = spec.tiling;
  // Operands in the shapes each form takes: nt x (M, K)·W (N, K)ᵀ; nn a (M, K)·b (K, N);
  // tn a (K, M)ᵀ·b (K, N) (K is the token dimension there).
  const a = filled(gpu, layout === "tn" ? [K, M] : [M, K], "a");
  const b = filled(gpu, layout === "nt" ? [N, K] : [K, N], "b", weights);
  const y = new Tensor(gpu, [M, N], "f32", "y");
  const record = (step: Step) => {
    if (layout === "nt") matmulForward(step, a, b, y, { variant });
    else if (layout === "nn") matmulNN(step, a, b, y, { variant });
    else matmulTN(step, a, b, y, { variant });
  };
  const run = async (reps: number) => {
    const t0 = performance.now();
    const step = new Step(gpu, `bench ${spec.name}`);
    for (let i = 0; i < reps; i++) record(step);
    step.submit();
    await readTensors(gpu, [y]);
    return performance.now() - t0;
  };
  await run(1); // compile and warm up
  const one = Math.max(0.01, (await run(3) - roundTripMs) / 3);
  const reps = Math.max(3, Math.min(2000, Math.round(effort.targetMs / one)));
  const rounds: number[] = [];
  for (let i = 0; i < effort.rounds; i++) rounds.push(Math.max(1e-6, (await run(reps)) - roundTripMs) / reps);
  const ms = Math.min(...rounds);
  let kernelMs: number | null = null;
  if (gpu.features.timestamps) {
    const n = Math.min(reps, 16);
    const step = new Step(gpu, `timed ${spec.name}`, { timing: n });
    for (let i = 0; i < n; i++) record(step);
    const timing = step.submit();
    await readTensors(gpu, [y]);
    if (timing) kernelMs = median((await timing).map((t) => t.ns / 1e6));
  }
  const v = matmulVariant(gpu, layout, M, N, K, weights, variant);
  const gflops = (2 * M * N * K) / (ms * 1e6);
  const bytes = M * K * 4 + b.byteLength + M * N * 4; // a, b (values and scales), y once each
  for (const t of [a, b, y]) t.destroy();
  return {
    name: spec.name,
    layout,
    M,
    N,
    K,
    weights,
    tiling: `${v.R}x${v.C}${v.SG ? " sg" : ""} wg${v.WG}`,
    reps,
    ms,
    medianMs: median(rounds),
    gflops,
    gbs: bytes / (ms * 1e6),
    ratioToOpenBlas: peak ? gflops / peak : null,
    kernelMs,
  };
}
