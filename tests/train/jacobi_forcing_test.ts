import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { directoryFiles, Llama } from "../../model/mod.ts";
import { TrainableLlama } from "../../model/llama_train.ts";
import {
  DEFAULT_NOISE,
  type JacobiForcingSample,
  jacobiForcingSamples,
  nearestState,
  noiseRatio,
  packJacobiForcing,
  targetNoise,
} from "../../train/jacobi_forcing.ts";
import {
  arLabels,
  arLossStep,
  consistencyLossStep,
  IGNORE,
  jacobiForcingLossStep,
  LOSS_SLOTS,
} from "../../train/losses.ts";
import { assertClose, rng } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";
import { writeTinyModel } from "../_tiny_model.ts";

const V = 40;
const EOS = 2;

/** A prompt and `blocks` blocks of n tokens, each with a trajectory of noisier-to-cleaner states. */
function sample(seed: number, blocks: number, n: number, eosAt?: number): JacobiForcingSample {
  const r = rng(seed);
  const tok = () => 3 + Math.floor(r() * (V - 3));
  const prompt = [1, tok(), tok(), tok(), tok()];
  const out: JacobiForcingSample = { prompt, blocks: [] };
  for (let j = 0; j < blocks; j++) {
    const fixed = Array.from({ length: n }, tok);
    if (eosAt !== undefined && j === blocks - 1) fixed[eosAt] = EOS;
    // States with 0, 1, …, n − 1 correct leading tokens (then noise), the fixed point last.
    const states = Array.from({ length: n }, (_, k) => fixed.map((t, o) => (o < k ? t : (t + 1 + o) % V)));
    states.push(fixed);
    out.blocks.push({ states });
  }
  return out;
}

/** Whether row q sees row k in a packed mask. */
const sees = (mask: Uint32Array, L: number, q: number, k: number) =>
  ((mask[q * Math.ceil(L / 32) + (k >> 5)] >>> (k & 31)) & 1) === 1;

for (const context of ["noisy", "clean"] as const) {
  Deno.test(`packJacobiForcing: layout, positions, mask (${context} context), labels and consistency rows`, () => {
    const s = sample(1, 3, 4);
    const p = packJacobiForcing(s, { kind: "progressive", window: 3, context }, [EOS], Math.random);
    const P = 5, n = 4, L = P + 2 * 3 * n;
    assert.equal(p.tokens.length, L);
    // Progressive over a window of 3: noise 0, 1/2, 1 → states with n, 2, 0 right tokens.
    assert.deepEqual(p.noise, [0, 0.5, 1]);
    const fixed = (j: number) => s.blocks[j].states.at(-1)!;
    const noisyStart = (j: number) => P + 2 * j * n, cleanStart = (j: number) => P + 2 * j * n + n;
    for (let j = 0; j < 3; j++) {
      assert.deepEqual(p.tokens.slice(cleanStart(j), cleanStart(j) + n), fixed(j));
      for (let o = 0; o < n; o++) {
        assert.equal(p.positions[noisyStart(j) + o], P + j * n + o);
        assert.equal(p.positions[cleanStart(j) + o], P + j * n + o);
      }
    }
    // Row kinds: prompt, noisy block j, clean block j.
    const kind = (row: number) =>
      row < P ? { copy: "prompt", j: -1 } : {
        copy: Math.floor((row - P) / n) % 2 === 0 ? "noisy" : "clean",
        j: Math.floor((row - P) / (2 * n)),
      };
    for (let q = 0; q < L; q++) {
      for (let k = 0; k < L; k++) {
        const a = kind(q), b = kind(k);
        let want: boolean;
        if (k > q) want = false;
        else if (b.copy === "prompt") want = true;
        else if (a.copy === "prompt") want = false;
        else if (b.j < a.j) want = b.copy === (context === "noisy" && a.copy === "noisy" ? "noisy" : "clean");
        else want = b.j === a.j && b.copy === a.copy;
        assert.equal(sees(p.mask, L, q, k), want, `row ${q} (${a.copy} ${a.j}) sees ${k} (${b.copy} ${b.j})`);
      }
    }
    // AR labels: the clean chain's next token at each clean row, nothing on noisy rows.
    const chain = [...s.prompt, ...fixed(0), ...fixed(1), ...fixed(2)];
    const chainRows = [
      ...s.prompt.keys(),
      ...[0, 1, 2].flatMap((j) => [0, 1, 2, 3].map((o) => cleanStart(j) + o)),
    ];
    const want = new Uint32Array(L).fill(IGNORE);
    arLabels(chain, [EOS]).forEach((l, c) => (want[chainRows[c]] = l));
    assert.deepEqual([...p.labels], [...want]);
    for (let j = 0; j < 3; j++) for (let o = 0; o < n; o++) assert.equal(p.labels[noisyStart(j) + o], IGNORE);
    // Block 0 is clean (no rows); block 1 is wrong from offset 2, block 2 from offset 0: rows to n − 2.
    assert.deepEqual(p.spans, [
      { student: noisyStart(1) + 2, teacher: cleanStart(1) + 2, count: 1 },
      { student: noisyStart(2), teacher: cleanStart(2), count: 3 },
    ]);
  });
}

Deno.test("packJacobiForcing: the default schedule is progressive with a noisy context", () => {
  const s = sample(1, 2, 4);
  const p = packJacobiForcing(s, { kind: "progressive", window: 2 }, [EOS], Math.random);
  const P = 5, n = 4, L = P + 4 * n;
  // Block 1's noisy rows see block 0's noisy copy, not its clean one.
  assert.ok(sees(p.mask, L, P + 2 * n, P));
  assert.ok(!sees(p.mask, L, P + 2 * n, P + n));
  assert.equal(DEFAULT_NOISE.context, "noisy");
});

Deno.test("packJacobiForcing: nothing after the clean chain's first EOS is trained", () => {
  const s = sample(2, 2, 6, 2); // the last block's fixed point has EOS at offset 2
  const p = packJacobiForcing(s, { kind: "progressive", window: 2 }, [EOS], Math.random);
  const P = 5, n = 6;
  // Block 1 (noise 1: wrong from offset 0) keeps offsets 0, 1 (offset 1 predicts the EOS).
  assert.deepEqual(p.spans, [{ student: P + 2 * n, teacher: P + 3 * n, count: 2 }]);
  const eosRow = P + 3 * n + 2;
  assert.equal(p.labels[eosRow - 1], EOS);
  for (let row = eosRow; row < p.tokens.length; row++) assert.equal(p.labels[row], IGNORE);
});

Deno.test("noise schedule: progressive targets, random targets uniform over the window, nearest state", () => {
  const progressive = { kind: "progressive", window: 5 } as const;
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map((j) => targetNoise(j, progressive, Math.random)), [
    0,
    0.25,
    0.5,
    0.75,
    1,
    0,
    0.25,
  ]);
  const r = rng(3);
  const counts = new Map<number, number>();
  for (let i = 0; i < 5000; i++) {
    const t = targetNoise(0, { kind: "random", window: 5 }, r);
    counts.set(t, (counts.get(t) ?? 0) + 1);
  }
  assert.deepEqual([...counts.keys()].sort(), [0, 0.25, 0.5, 0.75, 1]);
  for (const c of counts.values()) assert.ok(Math.abs(c - 1000) < 150, `count ${c}`);
  assert.equal(noiseRatio([5, 6, 0, 0], [5, 6, 7, 8]), 0.5);
  const block = { states: [[0, 0, 0, 0], [5, 0, 0, 0], [5, 6, 7, 0], [5, 6, 7, 8]] };
  assert.equal(nearestState(block, 1), 0);
  assert.equal(nearestState(block, 0.5), 1); // ratios 1, 0.75, 0.25, 0: 0.75 and 0.25 tie, the earlier wins
  assert.equal(nearestState(block, 0), 3);
  assert.throws(() => targetNoise(0, { kind: "random", window: 0 }, Math.random), /window/);
});

Deno.test("jacobiForcingSamples: groups blocks by prompt in order and stops at a gap", () => {
  const rec = (id: string, itr: number, context: number[], fixed: number[]) => ({
    dataId: id,
    itr,
    promptLength: 2,
    context,
    states: [[0, 0], fixed],
  });
  const samples = jacobiForcingSamples([
    rec("a", 1, [1, 4, 5, 6], [7, 8]),
    rec("a", 0, [1, 4], [5, 6]),
    rec("b", 0, [1, 9], [3, 3]),
    rec("b", 2, [1, 9, 3, 3, 4, 4], [5, 5]), // block 1 is missing: stops after block 0
    rec("c", 0, [1, 8], [3, 3]),
    rec("c", 1, [1, 8, 3, 4], [5, 5]), // its context is not prompt ⊕ block 0
  ]);
  assert.deepEqual(samples.map((s) => [s.prompt, s.blocks.length]), [[[1, 4], 2], [[1, 9], 1], [[1, 8], 1]]);
});

/** A tiny model and its trainable form, for the GPU checks. */
async function tinyTrainable(dir: string) {
  const gpu = await testGpu();
  await writeTinyModel(dir, {
    hiddenSize: 16,
    intermediateSize: 24,
    numLayers: 2,
    numHeads: 4,
    numKvHeads: 2,
    vocabSize: V,
    seed: 7,
  });
  const model = await Llama.load(gpu, directoryFiles(dir), { maxLength: 128, maxRows: 16 });
  return { gpu, model, trainable: new TrainableLlama(model, 96) };
}

Deno.test(
  "packed forward: clean rows equal the forward on the clean chain, noisy rows the forward on the noisy (or clean) context ⊕ the state",
  gpuTest,
  async () => {
    const dir = await Deno.makeTempDir();
    try {
      const { gpu, model, trainable } = await tinyTrainable(dir);
      for (const context of ["noisy", "clean"] as const) {
        const s = sample(4, 3, 8);
        const p = packJacobiForcing(s, { kind: "progressive", window: 3, context }, [EOS], Math.random);
        const L = p.tokens.length, P = s.prompt.length, n = 8;
        const step = new Step(gpu, "packed forward");
        const packedLogits = new Tensor(gpu, [L, V], "f32", "packed logits");
        trainable.forward(step, {
          tokens: Tensor.from(gpu, Uint32Array.from(p.tokens), [L], "packed tokens"),
          tokenOffset: 0,
          rows: L,
          logits: packedLogits,
          positions: Tensor.from(gpu, p.positions, [L], "positions"),
          mask: Tensor.from(gpu, p.mask, [p.mask.length], "mask"),
        });
        step.submit();
        const [packed] = await readTensors(gpu, [packedLogits]);
        const fixed = (j: number) => s.blocks[j].states.at(-1)!;
        const runs: { seq: number[]; rows: [number, number][] }[] = [];
        // The clean chain: its rows map to the prompt and the clean copies.
        const chain = [...s.prompt, ...fixed(0), ...fixed(1), ...fixed(2)];
        runs.push({
          seq: chain,
          rows: chain.map((_, c) => [c, c < P ? c : P + 2 * n * Math.floor((c - P) / n) + n + ((c - P) % n)]),
        });
        // Each noisy block after the noisy (or clean) copies of the blocks before it.
        const noisyChain = [
          ...s.prompt,
          ...[0, 1, 2].flatMap((j) => p.tokens.slice(P + 2 * j * n, P + 2 * j * n + n)),
        ];
        const contextChain = context === "noisy" ? noisyChain : chain;
        for (let j = 0; j < 3; j++) {
          const start = P + 2 * j * n;
          const seq = [...contextChain.slice(0, P + j * n), ...p.tokens.slice(start, start + n)];
          runs.push({ seq, rows: Array.from({ length: n }, (_, o) => [P + j * n + o, start + o]) });
        }
        for (const run of runs) {
          const T = run.seq.length;
          const logits = new Tensor(gpu, [T, V], "f32", "plain logits");
          const st = new Step(gpu, "plain forward");
          trainable.forward(st, {
            tokens: Tensor.from(gpu, Uint32Array.from(run.seq), [T], "tokens"),
            tokenOffset: 0,
            rows: T,
            logits,
          });
          st.submit();
          const [plain] = await readTensors(gpu, [logits]);
          for (const [plainRow, packedRow] of run.rows) {
            assertClose(
              packed.subarray(packedRow * V, packedRow * V + V),
              plain.subarray(plainRow * V, plainRow * V + V),
              { atol: 2e-5, rtol: 1e-4 },
              `${context} context: packed row ${packedRow} vs plain row ${plainRow}`,
            );
          }
        }
      }
      trainable.destroy();
      model.destroy();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

Deno.test(
  "jacobiForcingLossStep: losses and every gradient equal the unpacked AR and consistency losses' sum",
  gpuTest,
  async () => {
    const dir = await Deno.makeTempDir();
    try {
      const { gpu, model, trainable } = await tinyTrainable(dir);
      const s = sample(5, 3, 6);
      const p = packJacobiForcing(s, { kind: "progressive", window: 3 }, [EOS], Math.random); // noisy context
      assert.equal(p.spans.length, 2);
      const L = p.tokens.length, P = s.prompt.length, n = 6, S = 96;
      const arWeight = 2, consistencyWeight = 0.7, smoothing = 0.1;
      const K = p.spans.reduce((a, x) => a + x.count, 0);
      const labeled = p.labels.filter((x) => x !== IGNORE).length;
      const buffers = () => ({
        tokens: new Tensor(gpu, [3 * S], "u32", "tokens"),
        labels: new Tensor(gpu, [S], "u32", "labels"),
        logits: new Tensor(gpu, [S, V], "f32", "logits"),
        targetLogits: new Tensor(gpu, [S, V], "f32", "target logits"),
        loss: new Tensor(gpu, [4], "f32", "loss"),
        positions: new Tensor(gpu, [S], "u32", "positions"),
        mask: new Tensor(gpu, [S * 3], "u32", "mask"),
        studentLogits: new Tensor(gpu, [S, V], "f32", "student logits"),
      });
      const names = [...trainable.grads.keys()];
      const readAll = async (loss: Tensor) =>
        await readTensors(gpu, [loss, ...names.map((name) => trainable.grads.get(name)!)]);

      // Packed.
      const b = buffers();
      const step = new Step(gpu, "packed loss");
      trainable.zeroGrads(step);
      b.loss.write(new Float32Array(4));
      b.tokens.write(Uint32Array.from(p.tokens));
      b.labels.write(p.labels);
      b.positions.write(p.positions);
      b.mask.write(p.mask);
      jacobiForcingLossStep(step, trainable, b, {
        length: L,
        labeledRows: labeled,
        arWeight,
        consistencyWeight,
        smoothing,
        spans: p.spans,
      });
      step.submit();
      const packed = await readAll(b.loss);

      // Unpacked: the AR loss on the chain, then each block's consistency loss on its own sequence.
      const u = buffers();
      u.loss.write(new Float32Array(4));
      const fixed = (j: number) => s.blocks[j].states.at(-1)!;
      const chain = [...s.prompt, ...fixed(0), ...fixed(1), ...fixed(2)];
      const st = new Step(gpu, "unpacked AR");
      trainable.zeroGrads(st);
      u.tokens.write(Uint32Array.from(chain));
      const chainLabels = arLabels(chain, [EOS]);
      assert.equal(chainLabels.filter((x) => x !== IGNORE).length, labeled);
      u.labels.write(chainLabels);
      arLossStep(st, trainable, u, {
        offset: 0,
        length: chain.length,
        labeledRows: labeled,
        weight: arWeight,
        smoothing,
      });
      st.submit();
      for (const span of p.spans) {
        const j = Math.floor((span.student - P) / (2 * n));
        const o = span.student - (P + 2 * j * n);
        // Teacher: the clean chain up to block j; student: the prompt, the noisy copies before j, the state.
        const context = chain.slice(0, P + j * n);
        const noisyContext = [...s.prompt];
        for (let i = 0; i < j; i++) noisyContext.push(...p.tokens.slice(P + 2 * i * n, P + 2 * i * n + n));
        const state = p.tokens.slice(P + 2 * j * n, P + 2 * j * n + n);
        const sc = new Step(gpu, `unpacked consistency ${j}`);
        u.tokens.write(Uint32Array.from([...context, ...fixed(j)]), S);
        u.tokens.write(Uint32Array.from([...noisyContext, ...state]), 2 * S);
        consistencyLossStep(sc, trainable, u, {
          stateOffset: 2 * S,
          targetOffset: S,
          length: context.length + n,
          first: context.length + o,
          last: context.length + o + span.count,
          scale: consistencyWeight / K,
        });
        sc.submit();
      }
      const unpacked = await readAll(u.loss);
      assertClose(packed[0].subarray(0, 2), unpacked[0].subarray(0, 2), { atol: 1e-5, rtol: 1e-4 }, "losses");
      assert.ok(packed[0][LOSS_SLOTS.consistency] > 0.01, "a consistency loss was computed");
      names.forEach((name, k) => {
        assertClose(packed[1 + k], unpacked[1 + k], { atol: 2e-6, rtol: 1e-3 }, `d ${name}`);
      });
      trainable.destroy();
      model.destroy();
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
