/**
 * Where a decoding forward's time goes, on the embedded CLLM with ~100 cached tokens: per row count
 * T (1 = an AR step; 8, 16 = Jacobi blocks), the host's time to record one forward, the GPU's
 * kernel time (timestamp queries, one pass per dispatch) with the largest kernels, and the wall
 * time per forward when 64 are submitted at once. The ratio of a T-row forward to a 1-row one is
 * what a Jacobi iteration costs against an AR step on this adapter. Each T runs both forward paths
 * (`Llama.forwardPath`: one kernel per operation, and the fused one), interleaved, with their
 * dispatch counts and the fused path's speedup.
 *
 * @module
 */

import { type Gpu, readTensors, Step, Tensor } from "../core/mod.ts";
import { closeSession, prefill } from "../decode/generation.ts";
import { directoryFiles, loadPretrained } from "../model/mod.ts";

const MODEL = new URL("../demo/models/gsm-tiny-cllm/", import.meta.url).pathname;
const ROWS = [1, 8, 16, 32];
const BATCHED = 64;
const PATHS = ["separate", "fused"] as const;

/**
 * Runs the forward section; returns per-T figures.
 *
 * @param gpu the device
 * @param rows the row counts T to time (default 1, 8, 16, 32; at most 64)
 */
export async function runForwardBench(gpu: Gpu, rows: readonly number[] = ROWS): Promise<unknown> {
  const p = await loadPretrained(gpu, directoryFiles(MODEL), { maxLength: 512, dtype: "f16" });
  const model = p.model;
  const prompt = Array.from({ length: 100 }, (_, i) => 3 + (i * 37) % (model.config.vocabSize - 3));
  const s = prefill(model, prompt, 64);
  const P = s.promptLength;
  const figures: Record<string, unknown> = {};
  console.log(
    `T   path      dispatches  host ms/forward  GPU ms/forward  wall ms/forward (${BATCHED} per submit)  vs T=1  ` +
      `largest kernels (GPU ms)`,
  );
  const wall1: Record<string, number> = {};
  for (const T of rows) {
    if (T > model.maxRows) continue;
    const logits = new Tensor(gpu, [T, model.config.vocabSize], "f32", "bench_logits");
    const record = (step: Step) => {
      model.forward(step, {
        tokens: s.tokens,
        tokenOffset: P - T,
        rows: T,
        position: s.cache.at(P),
        cache: s.cache,
        logits,
      });
      model.argmax(step, logits, s.tokens, P + 1);
    };
    // Both paths on the same cache and tokens; the wall time is the median of 3 interleaved runs.
    const walls: Record<string, number[]> = { separate: [], fused: [] };
    const rows: Record<string, Record<string, unknown>> = {};
    for (let rep = 0; rep < 3; rep++) {
      for (const path of PATHS) {
        model.forwardPath = path;
        // Warm-up (pipeline compilation), then the timed single forward.
        for (let i = 0; i < 2; i++) {
          const w = new Step(gpu, "warm");
          record(w);
          w.submit();
        }
        await readTensors(gpu, [s.lastLogits]);
        const before = gpu.counters.dispatches;
        const timed = new Step(gpu, "profiled forward", { timing: 256 });
        record(timed);
        const timingPromise = timed.submit();
        const dispatches = gpu.counters.dispatches - before; // counted at submit
        await readTensors(gpu, [s.lastLogits]);
        const kernels = timingPromise ? await timingPromise : [];
        const byLabel = new Map<string, number>();
        for (const k of kernels) byLabel.set(k.label, (byLabel.get(k.label) ?? 0) + k.ns / 1e6);
        const gpuMs = [...byLabel.values()].reduce((a, b) => a + b, 0);
        const t0 = performance.now();
        const step = new Step(gpu, "batched forwards");
        for (let i = 0; i < BATCHED; i++) record(step);
        const hostMs = (performance.now() - t0) / BATCHED;
        step.submit();
        await readTensors(gpu, [s.lastLogits]);
        walls[path].push((performance.now() - t0) / BATCHED);
        rows[path] = {
          dispatches,
          hostMs,
          gpuMs: kernels.length ? gpuMs : null,
          kernels: Object.fromEntries(byLabel),
        };
      }
    }
    logits.destroy();
    for (const path of PATHS) {
      const wallMs = walls[path].sort((a, b) => a - b)[1];
      if (T === 1) wall1[path] = wallMs;
      const r = rows[path] as {
        dispatches: number;
        hostMs: number;
        gpuMs: number | null;
        kernels: Record<string, number>;
      };
      figures[`T=${T} ${path}`] = { ...r, wallMs, wallRuns: walls[path] };
      const top = Object.entries(r.kernels).sort((a, b) => b[1] - a[1]).slice(0, 3);
      console.log(
        `${String(T).padEnd(3)} ${path.padEnd(9)} ${String(r.dispatches).padStart(10)}  ${
          r.hostMs.toFixed(3).padStart(15)
        }  ${(r.gpuMs !== null ? r.gpuMs.toFixed(3) : "n/a").padStart(14)}  ${
          wallMs.toFixed(3).padStart(36)
        }  ${(wallMs / wall1[path]).toFixed(2).padStart(6)}  ${
          top.map(([l, ms]) => `${l} ${ms.toFixed(3)}`).join(", ")
        }`,
      );
    }
    const speedup = walls.separate.sort((a, b) => a - b)[1] / walls.fused.sort((a, b) => a - b)[1];
    figures[`T=${T} fused speedup`] = speedup;
    console.log(`    fused / separate: ${speedup.toFixed(2)}x faster per forward`);
  }
  model.forwardPath = "fused";
  closeSession(s);
  model.destroy();
  return figures;
}
