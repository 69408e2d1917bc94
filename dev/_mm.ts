import { readTensors, requestGpu, Step, Tensor } from "../core/mod.ts";
import { matmulForward } from "../kernels/matmul.ts";
const gpu = await requestGpu();
const shapes = [[128, 128], [64, 128], [352, 128], [128, 352], [1024, 128]];
for (const M of [1, 16]) {
  for (const [N, K] of shapes) {
    const x = Tensor.from(gpu, new Float32Array(M * K).fill(0.01), [M, K], "x");
    const w = Tensor.from(gpu, new Float32Array(N * K).fill(0.01), [N, K], "w");
    const y = new Tensor(gpu, [M, N], "f32", "y");
    const line: string[] = [];
    for (const R of M === 1 ? [1] : [1, 2, 4, 8, 16]) {
      for (const C of [1, 2, 4]) {
        for (const WG of [8, 16]) {
          const variant = { R, C, WG, SGS: 8, SG: WG === 8 };
          const run = (k: number) => {
            const s = new Step(gpu, "mm");
            for (let i = 0; i < k; i++) matmulForward(s, x, w, y, { variant });
            s.submit();
          };
          run(2);
          await readTensors(gpu, [y]);
          const t0 = performance.now();
          run(200);
          await readTensors(gpu, [y]);
          line.push(`R${R}C${C}W${WG}:${((performance.now() - t0) / 200 * 1000).toFixed(0)}`);
        }
      }
    }
    console.log(`M${M} N${N} K${K} µs:`, line.join(" "));
  }
}
