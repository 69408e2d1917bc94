import { generateProblems } from "../train/gsm_synth.ts";
const t0 = performance.now();
const ps = generateProblems({ seed: 1, count: 60000, maxValue: 100 });
const h = generateProblems({ seed: 2, count: 200, maxValue: 100, split: "heldout" });
console.log(ps.length, h.length, (performance.now() - t0).toFixed(0), "ms");
