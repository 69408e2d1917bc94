import { readTensors, Step, Tape, Tensor } from "../../core/mod.ts";
import { crossEntropyLoss } from "../../kernels/cross_entropy.ts";
import { directoryFiles, Llama } from "../../model/mod.ts";
import { TrainableLlama } from "../../model/llama_train.ts";
import { assertClose, rng } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";
import { refCache, refForward, type RefWeights } from "../_llama_reference.ts";
import { writeTinyModel } from "../_tiny_model.ts";

const SMOOTHING = 0.1;

/** The AR loss in f64: label-smoothed cross-entropy, mean over rows 0..T−2. */
function refLoss(cfg: Parameters<typeof refForward>[0], w: RefWeights, seq: number[]): number {
  const logits = refForward(cfg, w, refCache(cfg), seq);
  let total = 0;
  for (let t = 0; t + 1 < seq.length; t++) {
    const row = logits[t];
    const max = Math.max(...row);
    const lse = max + Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0));
    const nll = lse - row[seq[t + 1]];
    const uniform = row.reduce((a, x) => a + (lse - x), 0) / row.length;
    total += (1 - SMOOTHING) * nll + SMOOTHING * uniform;
  }
  return total / (seq.length - 1);
}

for (const tie of [false, true]) {
  Deno.test(
    `every parameter's GPU gradient matches central finite differences of the f64 reference (tied ${tie})`,
    gpuTest,
    async () => {
      const gpu = await testGpu();
      const dir = await Deno.makeTempDir();
      try {
        const { config, weights } = await writeTinyModel(dir, {
          hiddenSize: 16,
          intermediateSize: 24,
          numLayers: 2,
          numHeads: 4,
          numKvHeads: 2,
          vocabSize: 32,
          tie,
          seed: tie ? 3 : 4,
        });
        const model = await Llama.load(gpu, directoryFiles(dir), { maxLength: 64, maxRows: 16 });
        const seq = [1, 7, 3, 19, 7, 30, 2, 11, 5];
        const T = seq.length;
        const trainable = new TrainableLlama(model, 16);
        const tokens = Tensor.from(gpu, Uint32Array.from(seq), [T], "tokens");
        const labels = Tensor.from(gpu, Uint32Array.from([...seq.slice(1), 0xffffffff]), [T], "labels");
        const logits = new Tensor(gpu, [T, config.vocabSize], "f32", "logits");
        const loss = new Tensor(gpu, [4], "f32", "loss");
        const tape = new Tape();
        const step = new Step(gpu, "grad check");
        trainable.zeroGrads(step);
        trainable.forward(step, { tokens, tokenOffset: 0, rows: T, logits }, tape);
        crossEntropyLoss(step, logits, labels, trainable.dLogits(T), loss, {
          smoothing: SMOOTHING,
          scale: 1 / (T - 1),
        });
        tape.backward(step);
        step.submit();
        const names = [...trainable.grads.keys()];
        const results = await readTensors(gpu, [loss, ...names.map((n) => trainable.grads.get(n)!)]);
        const w64: RefWeights = new Map([...weights].map(([n, d]) => [n, Float64Array.from(d)]));
        assertClose([results[0][0]], [refLoss(config, w64, seq)], { atol: 1e-5, rtol: 1e-4 }, "loss");
        const r = rng(42);
        const h = 1e-5;
        names.forEach((name, k) => {
          const gpuGrad = results[1 + k];
          const w = w64.get(name)!;
          const picks = Array.from({ length: 4 }, () => Math.floor(r() * w.length));
          const fd = picks.map((i) => {
            const old = w[i];
            w[i] = old + h;
            const up = refLoss(config, w64, seq);
            w[i] = old - h;
            const down = refLoss(config, w64, seq);
            w[i] = old;
            return (up - down) / (2 * h);
          });
          // f32 GPU gradients vs f64 central differences (error O(h²) ≈ 1e-10).
          assertClose(picks.map((i) => gpuGrad[i]), fd, { atol: 2e-5, rtol: 2e-3 }, `d ${name}`);
        });
        trainable.destroy();
        model.destroy();
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    },
  );
}
