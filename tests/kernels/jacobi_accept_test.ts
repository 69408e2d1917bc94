import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import {
  fillGuessesReference,
  JACOBI_SLOTS,
  JACOBI_STATE_SIZE,
  jacobiAccept,
  jacobiAcceptReference,
  jacobiLogStride,
  jacobiStart,
} from "../../kernels/jacobi_accept.ts";
import { rng } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

Deno.test(
  "jacobi_start and jacobi_accept equal their CPU references, step by step (fixed/sliding/3 blocks, random/context guesses)",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const n = 6, P = 12, capacity = 64, limit = 40, seed = 7, eosId = 2;
    for (const [sliding, blocks] of [[false, 1], [true, 1], [false, 3]] as const) {
      for (const guesses of ["random", "context"] as const) {
        const what = `sliding=${sliding} blocks=${blocks} guesses=${guesses}`;
        const r = rng(sliding ? 3 : 4 + blocks);
        let refills = 0;
        // A small vocabulary, so the context repeats and copies find sources.
        const tok = () => 3 + Math.floor(r() * 5);
        const tokens = new Uint32Array(capacity);
        for (let i = 0; i <= P; i++) tokens[i] = tok(); // prompt, then the prefill's token at P
        const st = new Uint32Array(JACOBI_STATE_SIZE);
        const block = new Uint32Array(n);
        // CPU start, as the start kernel's doc says.
        st[JACOBI_SLOTS.base] = st[JACOBI_SLOTS.blockStart] = P;
        st[JACOBI_SLOTS.active] = n;
        block[0] = tokens[P];
        st[JACOBI_SLOTS.rng] = fillGuessesReference(tokens, block, {
          known: 1,
          base: P,
          n,
          r: 0,
          seed,
          guesses,
        });

        const tSt = new Tensor(gpu, [JACOBI_STATE_SIZE], "u32", "st");
        const tTokens = Tensor.from(gpu, tokens.slice(), [capacity], "tokens");
        const tBlock = new Tensor(gpu, [n], "u32", "block");
        const tPred = new Tensor(gpu, [n], "u32", "pred");
        const tEos = Tensor.from(gpu, Uint32Array.from([eosId]), [1], "eos");
        const tTraj = new Tensor(gpu, [64 * jacobiLogStride(n)], "u32", "traj");
        const start = new Step(gpu, "start");
        jacobiStart(start, { st: tSt, tokens: tTokens, block: tBlock, n, base: P, seed, guesses });
        start.submit();
        let [gSt, gBlock] = await readTensors(gpu, [tSt, tBlock]);
        assert.deepEqual(Array.from(gSt), Array.from(st), `${what}: start state`);
        assert.deepEqual(Array.from(gBlock), Array.from(block), `${what}: start block`);

        for (let i = 0; i < 30 && !st[JACOBI_SLOTS.done]; i++) {
          // Predictions that often agree with the next input token, so prefixes of every length occur.
          const pred = Uint32Array.from(
            { length: n },
            (_, j) => j + 1 < n && r() < 0.7 ? block[j + 1] : tok(),
          );
          tPred.write(pred);
          const step = new Step(gpu, "accept");
          jacobiAccept(step, {
            st: tSt,
            tokens: tTokens,
            block: tBlock,
            pred: tPred,
            eos: tEos,
            eosCount: 1,
            traj: tTraj,
            logCapacity: 64,
            n,
            limit,
            seed,
            sliding,
            blocks,
            guesses,
          });
          step.submit();
          const blocksBefore = st[JACOBI_SLOTS.blocks];
          jacobiAcceptReference({
            st,
            tokens,
            block,
            pred,
            eos: [eosId],
            traj: [],
            n,
            limit,
            seed,
            sliding,
            blocks,
            guesses,
          });
          // Multiblock: a partial acceptance that frees a block's places brings a new one in.
          if (blocks > 1 && st[JACOBI_SLOTS.blocks] > blocksBefore && st[JACOBI_SLOTS.active] < n) refills++;
          if (blocks > 1 && !st[JACOBI_SLOTS.done]) {
            assert.ok(n - st[JACOBI_SLOTS.active] < n / blocks, `${what}: no whole block's places stay free`);
          }
          const [a, b, c] = await readTensors(gpu, [tSt, tTokens, tBlock]);
          [gSt, gBlock] = [a, c];
          assert.deepEqual(Array.from(gSt), Array.from(st), `${what}: state after step ${i}`);
          assert.deepEqual(Array.from(b), Array.from(tokens), `${what}: tokens after step ${i}`);
          const active = st[JACOBI_SLOTS.done] ? 0 : st[JACOBI_SLOTS.active];
          assert.deepEqual(
            Array.from(gBlock).slice(0, active),
            Array.from(block).slice(0, active),
            `${what}: block ${i}`,
          );
        }
        assert.ok(st[JACOBI_SLOTS.base] > P + 5, `${what}: the run committed tokens`);
        if (blocks > 1) assert.ok(refills > 0, `${what}: a block entered a partly verified window`);
      }
    }
  },
);
