/**
 * The OpenBLAS sgemm throughput of this machine's CPUs, measured in the same run as a benchmark so
 * that kernels running on a software adapter can be reported as a ratio to it
 * (docs/webgpu.md §3). Runs `../shared/tools/sgemm-peak` from the repository root.
 *
 * @module
 */

/** The sgemm figure, or why there is none. */
export interface SgemmPeak {
  /** GFLOP/s of OpenBLAS sgemm at n × n × n, or null when it could not be measured. */
  gflops: number | null;
  /** The matrix size. */
  n: number;
  /** Why `gflops` is null (absent tool, failed run, unparsable output); empty otherwise. */
  note: string;
}

/** `../shared/tools/sgemm-peak`, relative to the repository root (this file is in `bench/`). */
export const SGEMM_PEAK_TOOL: string = new URL("../../shared/tools/sgemm-peak", import.meta.url).pathname;

/**
 * Parses the tool's output line `sgemm N=<n> GFLOP/s=<x>` for size n.
 *
 * @example Parsing one line
 * ```ts
 * import { parseSgemmPeak } from "./_sgemm_peak.ts";
 * parseSgemmPeak("sgemm N=1024 GFLOP/s=171.3\n", 1024); // 171.3
 * ```
 */
export function parseSgemmPeak(output: string, n: number): number | null {
  for (const line of output.split("\n")) {
    const m = /^sgemm N=(\d+) GFLOP\/s=([0-9.eE+-]+)\s*$/.exec(line.trim());
    if (m && Number(m[1]) === n) {
      const value = Number(m[2]);
      if (Number.isFinite(value) && value > 0) return value;
    }
  }
  return null;
}

/**
 * Runs the sgemm-peak tool for one size (1024 by default). Never throws: a missing tool or a failed
 * run gives `gflops: null` and a note saying why.
 *
 * @example Reporting the peak
 * ```ts ignore
 * const peak = await sgemmPeak();
 * console.log(peak.gflops ?? peak.note);
 * ```
 */
export async function sgemmPeak(n = 1024, tool: string = SGEMM_PEAK_TOOL): Promise<SgemmPeak> {
  try {
    await Deno.stat(tool);
  } catch {
    return { gflops: null, n, note: `sgemm-peak tool not found at ${tool}; no OpenBLAS baseline` };
  }
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(tool, { args: [String(n)], stdout: "piped", stderr: "piped" }).output();
  } catch (e) {
    return { gflops: null, n, note: `Cannot run ${tool}: ${e instanceof Error ? e.message : String(e)}` };
  }
  const stdout = new TextDecoder().decode(output.stdout);
  const gflops = parseSgemmPeak(stdout, n);
  if (!output.success || gflops === null) {
    const stderr = new TextDecoder().decode(output.stderr).trim().split("\n").slice(-2).join(" | ");
    return {
      gflops: null,
      n,
      note: `${tool} ${n} exited with code ${output.code} and printed no "sgemm N=${n} GFLOP/s=" line` +
        (stderr ? ` (stderr: ${stderr})` : ""),
    };
  }
  return { gflops, n, note: "" };
}
