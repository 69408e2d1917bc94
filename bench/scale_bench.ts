/**
 * Real checkpoint sizes: random checkpoints of TinyLlama-1.1B's shape (all 22 layers; 2.2 GB in
 * bf16) written to a temporary folder (dev/random_checkpoint.ts), loaded three times each in a fresh
 * process (bench/_load_once.ts: load GB/s, peak resident memory, GPU weight bytes), then greedy AR
 * tokens/s and the cost of a 16-row forward against a 1-row one, and the bytes read per token
 * against this machine's measured memory bandwidth (on a software adapter the GPU's memory is the
 * host's). Every checkpoint is deleted afterwards.
 *
 * @module
 */

import { writeRandomCheckpoint } from "../dev/random_checkpoint.ts";
import { barChart } from "../cli/svg_chart.ts";

const LOAD_ONCE = new URL("./_load_once.ts", import.meta.url).pathname;

/** Host memory bandwidth (GB/s): copies of a 256 MiB buffer, best of three. */
function memoryBandwidth(): number {
  const a = new Uint8Array(256 * 1024 * 1024).fill(1);
  const b = new Uint8Array(a.length);
  let best = Infinity;
  for (let i = 0; i < 3; i++) {
    const t = performance.now();
    b.set(a);
    best = Math.min(best, performance.now() - t);
  }
  // A copy reads and writes every byte.
  return (2 * a.length) / (best / 1000) / 1e9;
}

async function loadOnce(dir: string, dtype: string, decodeTokens = 0): Promise<Record<string, number>> {
  const args = ["run", "-A", LOAD_ONCE, dir, dtype, ...(decodeTokens ? ["--decode", `${decodeTokens}`] : [])];
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "";
  if (out.code !== 0) {
    const lines = new TextDecoder().decode(out.stderr).split("\n");
    const err = (lines.find((l) => l.startsWith("error")) ?? "failed").replace(
      /^error: Uncaught \(in promise\) /,
      "",
    );
    return { error: NaN, message: err as unknown as number };
  }
  return JSON.parse(text);
}

const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

/** Runs the scale section; returns its figures. */
export async function runScaleBench(): Promise<unknown> {
  const bandwidth = memoryBandwidth();
  console.log(`host memory bandwidth (memcpy): ${bandwidth.toFixed(1)} GB/s`);
  const root = await Deno.makeTempDir({ prefix: "scale_bench_" });
  const figures: Record<string, unknown> = { memoryBandwidthGBps: bandwidth };
  try {
    // F32 on disk is 4.4 GB: its embedding and head are over a 128 MiB binding, so it loads split.
    const plans = { F16: ["stored", "f32"], BF16: ["stored", "f16", "f32", "q4"], F32: ["stored"] };
    for (const stored of ["F16", "BF16", "F32"] as const) {
      const dir = `${root}/tinyllama-${stored.toLowerCase()}`;
      const t0 = performance.now();
      const bytes = await writeRandomCheckpoint(dir, { shape: "tinyllama-1.1b", dtype: stored, shards: 3 });
      console.log(
        `TinyLlama-1.1B shape, ${stored}: ${(bytes / 1e9).toFixed(2)} GB written in ${
          ((performance.now() - t0) / 1000).toFixed(1)
        } s`,
      );
      // As stored (no conversion: f16 stays f16, bf16 stays bf16), and converted on the GPU.
      for (const dtype of plans[stored]) {
        const runs: Record<string, number>[] = [];
        for (let i = 0; i < 3; i++) {
          const r = await loadOnce(dir, dtype, i === 2 && (dtype === "stored" || dtype === "q4") ? 16 : 0);
          runs.push(r);
          if ("error" in r) break;
        }
        const key = `tinyllama ${stored} → ${dtype}`;
        if ("error" in runs[0]) {
          console.log(`  ${key}: refused: ${runs[0].message}`);
          figures[key] = { refused: runs[0].message };
          continue;
        }
        const gbps = median(runs.map((r) => bytes / r.seconds / 1e9));
        const rss = Math.max(...runs.map((r) => r.peakRssBytes));
        const last = runs[runs.length - 1];
        const row: Record<string, number> = {
          loadGBps: gbps,
          peakRssGB: rss / 1e9,
          gpuWeightGB: last.gpuWeightBytes / 1e9,
          // The acceptance bound: peak RSS at most the GPU weights + 1 GB.
          rssOverWeightsGB: (rss - last.gpuWeightBytes) / 1e9,
        };
        let line =
          `  ${key}: load ${gbps.toFixed(2)} GB/s (median of 3), peak RSS ${(rss / 1e9).toFixed(2)} GB ` +
          `for ${(last.gpuWeightBytes / 1e9).toFixed(2)} GB of GPU weights (+${
            ((rss - last.gpuWeightBytes) / 1e9).toFixed(2)
          } GB)`;
        if (last.arTokensPerSecond) {
          // Each decoding step reads every weight once: bytes per token = the GPU weight bytes.
          const roofline = (bandwidth * 1e9) / last.gpuWeightBytes;
          Object.assign(row, {
            arTokensPerSecond: last.arTokensPerSecond,
            rooflineTokensPerSecond: roofline,
            rows16OverRows1: last.rows16OverRows1,
          });
          line += `; AR ${last.arTokensPerSecond.toFixed(2)} tokens/s = ${
            (100 * last.arTokensPerSecond / roofline).toFixed(1)
          } % of the bandwidth roofline (${roofline.toFixed(1)} tokens/s); 16-row forward ${
            last.rows16OverRows1.toFixed(2)
          }x a 1-row one`;
        }
        console.log(line);
        figures[key] = row;
      }
      await Deno.remove(dir, { recursive: true });
    }
  } finally {
    await Deno.remove(root, { recursive: true }).catch(() => {});
  }
  return figures;
}

/** The load rates as a bar chart (refused loads are left out). */
export function scaleChart(figures: unknown): string {
  const rows = Object.entries(figures as Record<string, Record<string, number>>)
    .filter(([, f]) => typeof f === "object" && typeof f.loadGBps === "number");
  return barChart(
    "checkpoint load, GB/s of file (TinyLlama-1.1B shape: 2.2 GB in 16 bits, 4.4 GB in f32)",
    rows.map(([name, f]) => ({
      label: name.replace("tinyllama ", ""),
      value: f.loadGBps,
      note: `${f.loadGBps.toFixed(2)} GB/s, RSS ${f.peakRssGB.toFixed(2)} GB`,
    })),
  );
}
