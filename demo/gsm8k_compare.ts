/**
 * A base model against its consistency-trained versions (CLLM, Jacobi Forcing) on the same
 * GSM8K-format items, in one run: greedy AR on the base (f32 and f16 weights, so its fastest AR path
 * is the baseline), then AR and every parallel decoder on each model. Reports accuracy, tokens/s, tokens per forward and the speedup
 * over the base's fastest AR, and whether every Jacobi output equals the same model's AR output.
 *
 * `deno task make-models` publishes this table in the model cards; `deno task bench --only gsm8k` measures it
 * again on the embedded models with whatever adapter the machine has.
 *
 * @module
 */

import {
  type Decoder,
  decoderLabel,
  type EvalItemResult,
  type EvalSummary,
  evaluateGsm8k,
  type Gpu,
  type Gsm8kItem,
  loadPretrained,
  type ModelFiles,
} from "../mod.ts";

/**
 * The runs at block size n: AR, Jacobi n, the sliding window at n and n/2 (on a CPU adapter a
 * forward over n rows costs more as n grows, so the smaller block can be the faster one), two
 * blocks of n/2 in flight (multiblock: n rows per forward), and the same with one recycled branch
 * of n/2 tokens (rejection recycling: 1.5·n rows).
 *
 * @example
 * ```ts
 * import { standardRuns } from "./gsm8k_compare.ts";
 * import { decoderLabel } from "../mod.ts";
 * console.log(standardRuns(16).map(decoderLabel));
 * // ["ar", "jacobi n=16", "jacobi sliding n=16", "jacobi sliding n=8", "jacobi n=8 blocks=2", "jacobi n=8 blocks=2 recycle=1"]
 * ```
 */
export function standardRuns(n: number): Decoder[] {
  const half = Math.max(2, n >> 1);
  return [
    { kind: "ar" },
    { kind: "jacobi", blockSize: n },
    { kind: "jacobi", blockSize: n, sliding: true },
    { kind: "jacobi", blockSize: half, sliding: true },
    { kind: "jacobi", blockSize: half, blocks: 2 },
    { kind: "jacobi", blockSize: half, blocks: 2, recycle: 1 },
  ];
}

/** What {@linkcode compareBaseAndCllm} measured. */
export interface Comparison {
  /** Per row (`"base ar (f32 weights)"`, `"cllm jacobi n=16"`, ...): item results and totals. */
  figures: Record<string, { results: EvalItemResult[]; summary: EvalSummary }>;
  /** Tokens/s of the base model's fastest AR row: the speedup's denominator. */
  fastestBaseAr: number;
  /** Whether every Jacobi row's outputs equal the same model's AR outputs, per model ("base", "cllm", …). */
  identical: Record<string, boolean>;
  /** The figures as a Markdown table, one row per run, with the speedup column. */
  table: string;
}

/**
 * Evaluates the models on `items` with every run, in one process on one device (weights stored
 * as f16 except the extra base AR row with f32 weights), and tabulates the result.
 *
 * @param gpu the device
 * @param models the checkpoints by row label: `base` first (the baseline), then the others in order
 * @param items the problems (the same for every row)
 * @param options the runs (default {@linkcode standardRuns} of 16), budget per item, and a
 *   callback after each row
 * @returns figures, baseline, identity check and table
 *
 * @example
 * ```ts ignore
 * const c = await compareBaseAndCllm(gpu, { base: directoryFiles(a), cllm: directoryFiles(b) }, items, {});
 * console.log(c.table);
 * ```
 */
export async function compareBaseAndCllm(
  gpu: Gpu,
  models: { base: ModelFiles } & Record<string, ModelFiles>,
  items: readonly Gsm8kItem[],
  options: {
    runs?: readonly Decoder[];
    maxNewTokens?: number;
    onRow?: (row: string, summary: EvalSummary) => void;
  },
): Promise<Comparison> {
  const runs = options.runs ?? standardRuns(16);
  if (runs[0]?.kind !== "ar") {
    throw new RangeError("The first run must be AR: it is the speedup's baseline");
  }
  const figures: Comparison["figures"] = {};
  // Every row keeps the same positions free at the end of the context (a forward's rows: the window
  // and any recycled branches), so all get the same budget.
  const rowsOf = (r: Decoder) => {
    if (r.kind !== "jacobi") return 1;
    const n = r.blockSize ?? 16;
    return n * (r.blocks ?? 1) + (r.recycle ?? 0) * (r.recycleLength ?? n);
  };
  const reserve = Math.max(16, ...runs.map(rowsOf));
  const evaluate = async (
    files: ModelFiles,
    dtype: "f32" | "f16",
    label: string,
    settings: readonly Decoder[],
  ) => {
    const p = await loadPretrained(gpu, files, { maxLength: 512, dtype });
    try {
      for (const run of settings) {
        const key = `${label} ${decoderLabel(run)}${dtype === "f32" ? " (f32 weights)" : ""}`;
        figures[key] = await evaluateGsm8k(p, items, {
          decoder: run,
          contextReserve: reserve,
          maxNewTokens: options.maxNewTokens ?? 200,
        });
        options.onRow?.(key, figures[key].summary);
      }
    } finally {
      p.model.destroy();
    }
  };
  await evaluate(models.base, "f32", "base", runs.slice(0, 1));
  for (const [label, files] of Object.entries(models)) await evaluate(files, "f16", label, runs);

  const fastestBaseAr = Math.max(
    figures[`base ${decoderLabel(runs[0])}`].summary.tokensPerSecond,
    figures[`base ${decoderLabel(runs[0])} (f32 weights)`].summary.tokensPerSecond,
  );
  const sameOutputs = (a: string, b: string) =>
    figures[a].results.every((r, i) => r.output === figures[b].results[i].output);
  const identical = (model: string) =>
    runs.every((run) => sameOutputs(`${model} ${decoderLabel(runs[0])}`, `${model} ${decoderLabel(run)}`));
  const row = (k: string) => {
    const s = figures[k].summary;
    return `| ${k} | ${(100 * s.accuracy).toFixed(1)} % | ${s.tokensPerSecond.toFixed(1)} | ${
      s.tokensPerForward.toFixed(2)
    } | ${(s.tokensPerSecond / fastestBaseAr).toFixed(2)}x |`;
  };
  const table = [
    "| model + decoder (f16 weights unless said) | accuracy | tokens/s | tokens/forward | vs base's fastest AR |",
    "| --- | --- | --- | --- | --- |",
    ...Object.keys(figures).map(row),
  ].join("\n");
  return {
    figures,
    fastestBaseAr,
    identical: Object.fromEntries(Object.keys(models).map((m) => [m, identical(m)])),
    table,
  };
}
