import { readTensors, Step, Tensor } from "../core/mod.ts";
import { attentionReference } from "../kernels/attention.ts";
import { attentionBackward, attentionBackwardReference } from "../kernels/attention_backward.ts";
import { randomArray } from "../tests/_assert.ts";
import { testGpu } from "../tests/_gpu.ts";
const gpu = await testGpu();
for (const T of [64, 65, 200, 512]) {
  const H = 4, KVH = 2, D = 32;
  const q = randomArray(T * H * D, 1), k = randomArray(T * KVH * D, 2), v = randomArray(T * KVH * D, 3), dOut = randomArray(T * H * D, 4);
  const out = attentionReference(q, k, v, { base: 0, heads: H, kvHeads: KVH, headDim: D });
  const t = (d: Float32Array, h: number) => Tensor.from(gpu, d, [T, h, D], "x");
  const dq = t(new Float32Array(T * H * D), H), dk = t(new Float32Array(T * KVH * D), KVH), dv = t(new Float32Array(T * KVH * D), KVH);
  const step = new Step(gpu, "s");
  attentionBackward(step, t(q, H), t(k, KVH), t(v, KVH), t(out, H), t(dOut, H), dq, dk, dv, { rows: T, heads: H, kvHeads: KVH, headDim: D });
  step.submit();
  const [gq, gk, gv] = await readTensors(gpu, [dq, dk, dv]);
  const e = attentionBackwardReference(q, k, v, dOut, { heads: H, kvHeads: KVH, headDim: D });
  const md = (a: Float32Array, b: ArrayLike<number>) => { let m = 0; for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i])); return m; };
  console.log(T, md(gq, e.dq), md(gk, e.dk), md(gv, e.dv));
}
