import { generateProblems } from "../train/gsm_synth.ts";
const ps = generateProblems({ seed: 1, count: 20000, maxValue: 100 });
for (const p of ps.slice(0, 6)) console.log(p.question + "\n" + p.answer + "\n");
const counts: Record<string, number> = {};
for (const p of ps) counts[p.template!] = (counts[p.template!] ?? 0) + 1;
console.log(Object.entries(counts).sort((a, b) => a[1] - b[1]).slice(0, 5));
