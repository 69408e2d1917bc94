/**
 * The embedded models on the held-out problems `make-models` evaluated them on (its default seed):
 * the base model's AR against the CLLM's and the Jacobi Forcing model's parallel decoders, the
 * table of the model cards measured again on this machine's adapter, in one run
 * (demo/gsm8k_compare.ts).
 *
 * @module
 */

import type { Gpu } from "../core/mod.ts";
import { directoryFiles } from "../model/mod.ts";
import { DEMO_MAX_VALUE } from "../demo/demo_models.ts";
import { compareBaseAndCllm, standardRuns } from "../demo/gsm8k_compare.ts";
import { generateProblems } from "../demo/gsm_synth.ts";

const MODELS = new URL("../demo/models/", import.meta.url).pathname;

/** make-models draws its held-out split with seed + 1; its default seed is 1. */
const HELDOUT_SEED = 2;

const hasModel = (name: string) =>
  Deno.stat(`${MODELS}${name}/model.safetensors`).then(() => true, () => false);

/** Runs the gsm8k section on `items` held-out problems; returns the rows' totals. */
export async function runGsm8kBench(gpu: Gpu, items = 100): Promise<unknown> {
  const heldout = generateProblems({
    seed: HELDOUT_SEED,
    count: 200,
    split: "heldout",
    maxValue: DEMO_MAX_VALUE,
  })
    .slice(0, items);
  const t0 = performance.now();
  const c = await compareBaseAndCllm(
    gpu,
    {
      base: directoryFiles(`${MODELS}gsm-tiny-base`),
      cllm: directoryFiles(`${MODELS}gsm-tiny-cllm`),
      ...(await hasModel("gsm-tiny-jf") ? { jf: directoryFiles(`${MODELS}gsm-tiny-jf`) } : {}),
    },
    heldout,
    {
      runs: standardRuns(16),
      onRow: (row, s) =>
        console.log(
          `  ${row.padEnd(40)} ${(100 * s.accuracy).toFixed(0).padStart(3)} %  ${
            s.tokensPerSecond.toFixed(1).padStart(7)
          } tok/s  ${s.tokensPerForward.toFixed(2)} tok/forward`,
        ),
    },
  );
  console.log(
    `\n${heldout.length} held-out problems, greedy, at most 200 new tokens, ` +
      `${((performance.now() - t0) / 1000).toFixed(0)} s:\n\n${c.table}\n`,
  );
  console.log(
    `Parallel decoders' output identical to the same model's AR: ${
      Object.entries(c.identical).map(([m, same]) => `${m} ${same ? "yes" : "NO"}`).join(", ")
    }`,
  );
  const rows = Object.fromEntries(
    Object.entries(c.figures).map((
      [k, f],
    ) => [k, { ...f.summary, speedup: f.summary.tokensPerSecond / c.fastestBaseAr }]),
  );
  return { items: heldout.length, rows, fastestBaseAr: c.fastestBaseAr, identical: c.identical };
}
