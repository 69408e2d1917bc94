import { generateProblems } from "../train/gsm_synth.ts";
for (const m of [100, 150, 999]) {
  const t0 = performance.now();
  const ps = generateProblems({ seed: 1, count: 20000, maxValue: m });
  const counts: Record<string, number> = {};
  for (const p of ps) counts[p.template!] = (counts[p.template!] ?? 0) + 1;
  const v = Object.values(counts).sort((a, b) => a - b);
  const chars = ps.reduce((a, p) => a + p.question.length + p.answer.length, 0) / ps.length;
  console.log(
    m,
    (performance.now() - t0).toFixed(0),
    "ms",
    Object.keys(counts).length,
    "templates min",
    v[0],
    "max",
    v[v.length - 1],
    "chars",
    chars.toFixed(0),
  );
}
