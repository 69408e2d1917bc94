import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { DECODE_STATE_SIZE } from "../../kernels/decode_state.ts";
import {
  jacobiRecyclePrepare,
  jacobiRecyclePrepareReference,
  jacobiRecycleVerify,
  jacobiRecycleVerifyReference,
  RECYCLE_SLOTS,
  recycleLayout,
  recyclePoolWords,
  type RecycleShape,
} from "../../kernels/jacobi_recycle.ts";
import { rng } from "../_assert.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

Deno.test("recycleLayout: the window is causal, each branch sees only itself, at the window's positions", () => {
  const l = recycleLayout({ window: 3, branches: 2, length: 2 });
  assert.equal(l.rows, 7);
  assert.deepEqual([...l.relPositions], [0, 1, 2, 0, 1, 0, 1]);
  const sees = (t: number, k: number) => ((l.mask[t * l.maskWords + (k >> 5)] >>> (k & 31)) & 1) === 1;
  const visible = (t: number) => Array.from({ length: 7 }, (_, k) => k).filter((k) => sees(t, k));
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map(visible), [[0], [0, 1], [0, 1, 2], [3], [3, 4], [5], [5, 6]]);
  assert.throws(() => recycleLayout({ window: 3, branches: 1, length: 4 }), /2\.\.3/);
  assert.throws(() => recycleLayout({ window: 3, branches: 0, length: 2 }), /branches/);
});

Deno.test(
  "jacobi_recycle_verify and _prepare equal their CPU references, step by step",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const shape: RecycleShape = { window: 6, branches: 2, length: 4 };
    const rows = shape.window + shape.branches * shape.length;
    const r = rng(11);
    const tok = () => 3 + Math.floor(r() * 4); // a small vocabulary: pool entries contain the next token
    const st = new Uint32Array(DECODE_STATE_SIZE);
    st[RECYCLE_SLOTS.base] = 20;
    const block = Uint32Array.from({ length: rows }, tok);
    const pool = new Uint32Array(recyclePoolWords(shape));
    const tSt = Tensor.from(gpu, st, [st.length], "st");
    const tBlock = Tensor.from(gpu, block, [rows], "block");
    const tPred = new Tensor(gpu, [rows], "u32", "pred");
    const tPool = Tensor.from(gpu, pool, [pool.length], "pool");
    let wins = 0, recycledBranches = 0;
    for (let i = 0; i < 40; i++) {
      st[RECYCLE_SLOTS.active] = 1 + Math.floor(r() * shape.window);
      // Predictions that often confirm the next input token, so every prefix length occurs.
      const pred = Uint32Array.from(
        { length: rows },
        (_, t) => (t + 1 < rows && r() < 0.75 ? block[t + 1] : tok()),
      );
      tSt.write(st);
      tBlock.write(block);
      tPred.write(pred);
      const step = new Step(gpu, "verify");
      jacobiRecycleVerify(step, { st: tSt, block: tBlock, pred: tPred, pool: tPool, shape });
      step.submit();
      const hitsBefore = st[RECYCLE_SLOTS.hits];
      jacobiRecycleVerifyReference(st, block, pred, pool, shape);
      if (st[RECYCLE_SLOTS.hits] > hitsBefore) wins++;
      const [gSt, gBlock, gPred, gPool] = await readTensors(gpu, [tSt, tBlock, tPred, tPool]);
      assert.deepEqual([...gSt], [...st], `state after verify ${i}`);
      assert.deepEqual([...gBlock], [...block], `block after verify ${i}`);
      assert.deepEqual([...gPred], [...pred], `pred after verify ${i}`);
      // The pool's used words (an entry's tokens past its length are never read).
      for (let e = 0; e < pool.length; e += shape.window + 1) {
        assert.deepEqual(
          [...gPool.slice(e, e + 1 + pool[e])],
          [...pool.slice(e, e + 1 + pool[e])],
          `pool ${i}`,
        );
      }
      // As if the acceptance had moved on: a new next token and window, then the branches.
      block[0] = tok();
      for (let t = 1; t < shape.window; t++) block[t] = tok();
      tBlock.write(block);
      const prep = new Step(gpu, "prepare");
      jacobiRecyclePrepare(prep, { st: tSt, block: tBlock, pool: tPool, shape });
      prep.submit();
      jacobiRecyclePrepareReference(st, block, pool, shape);
      const [gPrepared] = await readTensors(gpu, [tBlock]);
      assert.deepEqual([...gPrepared], [...block], `block after prepare ${i}`);
      for (let g = 0; g < shape.branches; g++) {
        const o = shape.window + g * shape.length;
        assert.equal(block[o], block[0], "every branch starts with the next token");
        if (block.slice(o, o + shape.length).some((t, j) => t !== block[j])) recycledBranches++;
      }
    }
    assert.ok(wins > 3, `branches won ${wins} times`);
    assert.ok(recycledBranches > 10, `${recycledBranches} recycled branches`);
    assert.equal(st[RECYCLE_SLOTS.hits], wins);
  },
);
