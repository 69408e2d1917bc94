import assert from "node:assert/strict";
import { readTensors, Step, Tensor } from "../../core/mod.ts";
import { seededRandom } from "../../core/random.ts";
import {
  candidateRow,
  decodePool,
  encodePool,
  LOOKAHEAD_SLOTS as S,
  LOOKAHEAD_STATE_SIZE,
  lookaheadAccept,
  lookaheadAcceptReference,
  lookaheadLayout,
  lookaheadMoveKv,
  lookaheadMoveKvReference,
  lookaheadRows,
  type LookaheadShape,
  lookaheadStart,
  lookaheadStartReference,
  type NgramPool,
  poolInsert,
  promptPool,
  windowRow,
} from "../../kernels/lookahead.ts";
import { gpuTest, testGpu } from "../_gpu.ts";

/** The set bits of mask row t, as block row indices. */
function seen(layout: { mask: Uint32Array; maskWords: number; rows: number }, t: number): number[] {
  const out: number[] = [];
  for (let u = 0; u < layout.rows; u++) {
    if ((layout.mask[t * layout.maskWords + (u >> 5)] >>> (u & 31)) & 1) out.push(u);
  }
  return out;
}

Deno.test("lookahead layout: rows, relative positions and mask by hand (N=4, W=3, G=2)", () => {
  const shape = { ngram: 4, window: 3, guesses: 2 };
  const layout = lookaheadLayout(shape);
  // Window rows 0..8 (levels 0..2 × columns 0..2), candidates 9..11 and 12..14.
  assert.equal(layout.rows, 15);
  assert.deepEqual(Array.from(layout.relPositions), [0, 1, 2, 1, 2, 3, 2, 3, 4, 1, 2, 3, 1, 2, 3]);
  assert.deepEqual(seen(layout, 0), [0]); // lst sees itself
  assert.deepEqual(seen(layout, 2), [0, 1, 2]); // level 0 column 2: columns 0..2
  assert.deepEqual(seen(layout, 4), [0, 1, 4]); // level 1 column 1: level 0 columns 0..1 + itself
  assert.deepEqual(seen(layout, 8), [0, 1, 2, 5, 8]); // level 2 column 2: + column 2 of levels 1, 2
  assert.deepEqual(seen(layout, 6), [0, 3, 6]); // level 2 column 0: lst, level 1 column 0, itself
  assert.deepEqual(seen(layout, 9), [0, 9]); // candidate 0 token 0
  assert.deepEqual(seen(layout, 11), [0, 9, 10, 11]);
  assert.deepEqual(seen(layout, 13), [0, 12, 13]); // candidate 1 never sees candidate 0
  assert.equal(windowRow(shape, 2, 1), 7);
  assert.equal(candidateRow(shape, 1, 2), 14);
  // Positions along every visible set are contiguous from 0 (each row reads a consistent text).
  for (let t = 0; t < layout.rows; t++) {
    const pos = seen(layout, t).map((u) => layout.relPositions[u]).sort((a, b) => a - b);
    assert.deepEqual(pos, pos.map((_, i) => i), `row ${t}`);
  }
  // More than 32 rows: two mask words per row.
  const wide = lookaheadLayout({ ngram: 3, window: 10, guesses: 8 });
  assert.equal(wide.rows, 36);
  assert.equal(wide.maskWords, 2);
  assert.deepEqual(seen(wide, 35), [0, 34, 35]);
  assert.throws(() => lookaheadLayout({ ngram: 2, window: 3, guesses: 2 }), RangeError);
});

Deno.test("n-gram pool: prompt seeding, LRU insert and eviction, flat encoding round trip", () => {
  const shape = { ngram: 3, guesses: 2 };
  const pool = promptPool([5, 6, 7, 5, 6, 8, 5, 6, 7], shape);
  // 5 → (6,7), (6,8), then (6,7) again moves to the most-recent end.
  assert.deepEqual(pool.get(5), [[6, 8], [6, 7]]);
  poolInsert(pool, 5, [1, 1], 2); // full: the oldest (6,8) is dropped
  assert.deepEqual(pool.get(5), [[6, 7], [1, 1]]);
  const flat = encodePool(pool, 10, shape);
  assert.equal(flat.length, 10 * (1 + 2 * 2));
  assert.equal(flat[5], 2);
  assert.deepEqual(decodePool(flat, 10, shape), pool);
});

/** One crafted or random acceptance case. */
interface AcceptCase {
  what: string;
  shape: LookaheadShape;
  st: Uint32Array;
  tokens: Uint32Array;
  block: Uint32Array;
  pred: Uint32Array;
  pool: NgramPool;
  eos: number[];
  limit: number;
}

const V = 12;

function newCase(what: string, shape: LookaheadShape, base: number, limit = 60): AcceptCase {
  const st = new Uint32Array(LOOKAHEAD_STATE_SIZE);
  st[S.base] = base;
  return {
    what,
    shape,
    st,
    tokens: new Uint32Array(64),
    block: new Uint32Array(lookaheadRows(shape)),
    pred: new Uint32Array(lookaheadRows(shape)),
    pool: new Map(),
    eos: [],
    limit,
  };
}

/** Sets candidate g's tokens and their corr predictions: the first `match` tokens are verified. */
function setCandidate(c: AcceptCase, g: number, tokens: number[], corr: number[]): void {
  tokens.forEach((t, k) => (c.block[candidateRow(c.shape, g, k)] = t));
  // corr[0] = pred[0]; corr[k] = pred at the candidate's row k-1.
  c.pred[0] = corr[0];
  for (let k = 1; k < corr.length; k++) c.pred[candidateRow(c.shape, g, k - 1)] = corr[k];
}

function craftedCases(): AcceptCase[] {
  const cases: AcceptCase[] = [];
  const s3 = { ngram: 4, window: 2, guesses: 3 };
  // All three tokens match: 4 tokens committed (the bonus included), 3 K/V rows moved.
  let c = newCase("all-match bonus", s3, 10);
  c.st[S.valid] = 1;
  c.block[0] = 4;
  setCandidate(c, 0, [5, 6, 7], [5, 6, 7, 8]);
  cases.push(c);
  // Candidate choice: h = 1, 2, and a padded (invalid) candidate that would match fully.
  c = newCase("largest h wins, padding never wins", s3, 10);
  c.st[S.valid] = 2;
  c.block[0] = 4;
  setCandidate(c, 0, [5, 9, 9], [5, 6, 1, 1]);
  setCandidate(c, 1, [5, 6, 9], [5, 6, 7, 3]);
  setCandidate(c, 2, [5, 6, 7], [5, 6, 7, 8]);
  cases.push(c);
  // Ties: both candidates match 2 tokens; the first one wins (its third token 2 is committed).
  c = newCase("ties go to the first candidate", s3, 10);
  c.st[S.valid] = 3;
  setCandidate(c, 1, [5, 6, 9], [5, 6, 2, 0]);
  setCandidate(c, 2, [5, 6, 10], [5, 6, 3, 0]);
  setCandidate(c, 0, [1, 1, 1], [5, 2, 2, 2]);
  cases.push(c);
  // No valid candidate: one token, nothing moved.
  c = newCase("no candidates", s3, 10);
  c.pred[0] = 3;
  cases.push(c);
  // EOS in the middle of the accepted tokens: kept, nothing after it, done.
  c = newCase("EOS mid-step", s3, 10);
  c.st[S.valid] = 1;
  c.eos = [11, 6];
  setCandidate(c, 0, [5, 6, 7], [5, 6, 7, 8]);
  cases.push(c);
  // Budget mid-step: limit 13 allows positions 11 and 12 only.
  c = newCase("budget mid-step", s3, 10, 13);
  c.st[S.valid] = 1;
  setCandidate(c, 0, [5, 6, 7], [5, 6, 7, 8]);
  cases.push(c);
  // Budget reached exactly by the step: positions 11..14 committed, limit 15.
  c = newCase("budget reached exactly", s3, 10, 15);
  c.st[S.valid] = 1;
  setCandidate(c, 0, [5, 6, 7], [5, 6, 7, 8]);
  cases.push(c);
  // Already done: nothing changes.
  c = newCase("done", s3, 10);
  c.st[S.done] = 1;
  c.st[S.end] = 10;
  c.pred[0] = 3;
  cases.push(c);
  // Pool update (N = 3, W = 3, G = 2): column keys lst=1, 2, 3; level 1 = [4, 5, 6];
  // new results (pred at level 1) = [7, 8, 9]. Key 1 holds (4,7) already → moves to the end;
  // key 2 is full → its oldest is dropped; key 3 is new. Next lst = t0 = 2 gets candidates.
  const sp = { ngram: 3, window: 3, guesses: 2 };
  c = newCase("pool: move to end, evict the oldest, new key; window shift", sp, 20);
  c.block.set([1, 2, 3, 4, 5, 6]);
  c.pred.set([2, 0, 0, 7, 8, 9]);
  c.pool.set(1, [[4, 7], [3, 3]]);
  c.pool.set(2, [[1, 1], [0, 1]]);
  cases.push(c);
  return cases;
}

function randomCases(count: number): AcceptCase[] {
  const rand = seededRandom(11);
  const int = (n: number) => Math.floor(rand() * n);
  const cases: AcceptCase[] = [];
  const shapes = [
    { ngram: 3, window: 1, guesses: 1 },
    { ngram: 3, window: 3, guesses: 2 },
    { ngram: 4, window: 2, guesses: 3 },
    { ngram: 5, window: 3, guesses: 2 },
  ];
  for (let i = 0; i < count; i++) {
    const shape = shapes[i % shapes.length];
    const base = 8 + int(20);
    const limit = rand() < 0.3 ? base + 1 + int(5) : 60;
    const c = newCase(`random ${i}`, shape, base, limit);
    const tok = () => int(6); // a small alphabet: pool keys and n-grams collide often
    for (let j = 0; j < c.tokens.length; j++) c.tokens[j] = tok();
    for (let j = 0; j < c.block.length; j++) c.block[j] = tok();
    for (let j = 0; j < c.pred.length; j++) c.pred[j] = tok();
    // Candidates: each token copies its corr with probability 0.7, so matches of every length occur.
    c.st[S.valid] = int(shape.guesses + 1);
    for (let g = 0; g < shape.guesses; g++) {
      for (let k = 0; k < shape.ngram - 1; k++) {
        const corr = k === 0 ? c.pred[0] : c.pred[candidateRow(shape, g, k - 1)];
        if (rand() < 0.7) c.block[candidateRow(shape, g, k)] = corr;
      }
    }
    for (let n = int(12); n > 0; n--) {
      poolInsert(c.pool, tok(), Array.from({ length: shape.ngram - 1 }, tok), shape.guesses);
    }
    if (rand() < 0.3) c.eos = [tok()];
    c.st[S.forwards] = int(5);
    c.st[S.accepted] = int(5);
    cases.push(c);
  }
  return cases;
}

Deno.test(
  "lookahead accept kernel equals its CPU reference on crafted and random states",
  gpuTest,
  async () => {
    const gpu = await testGpu();
    const cases = [...craftedCases(), ...randomCases(40)];
    const tensors = cases.map((c) => {
      const u = (a: Uint32Array, label: string) => Tensor.from(gpu, a, [a.length], label);
      return {
        st: u(c.st, "st"),
        tokens: u(c.tokens, "tokens"),
        block: u(c.block, "block"),
        pred: u(c.pred, "pred"),
        eos: u(Uint32Array.from(c.eos.length ? c.eos : [0xffffffff]), "eos"),
        pool: u(encodePool(c.pool, V, c.shape), "pool"),
      };
    });
    const step = new Step(gpu, "accept cases");
    cases.forEach((c, i) => {
      lookaheadAccept(step, {
        ...tensors[i],
        eosCount: c.eos.length,
        shape: c.shape,
        vocabSize: V,
        limit: c.limit,
      });
    });
    step.submit();
    const read = await readTensors(gpu, tensors.flatMap((t) => [t.st, t.tokens, t.block, t.pool]));
    for (const [i, c] of cases.entries()) {
      lookaheadAcceptReference({ ...c, vocabSize: V });
      const [st, tokens, block, pool] = read.slice(4 * i, 4 * i + 4) as Uint32Array[];
      assert.deepEqual(Array.from(st), Array.from(c.st), `${c.what}: state`);
      assert.deepEqual(Array.from(tokens), Array.from(c.tokens), `${c.what}: tokens`);
      assert.deepEqual(Array.from(block), Array.from(c.block), `${c.what}: block`);
      assert.deepEqual(decodePool(pool, V, c.shape), c.pool, `${c.what}: pool`);
    }
    for (const t of tensors) for (const x of Object.values(t)) x.destroy();

    // The crafted cases' expected outcomes, by hand (on the reference, now equal to the GPU).
    const [bonus, choice, ties, none, eos, budget, exact, done, pool] = cases;
    assert.deepEqual(Array.from(bonus.tokens.subarray(11, 15)), [5, 6, 7, 8]);
    assert.deepEqual(
      [
        bonus.st[S.base],
        bonus.st[S.accepted],
        bonus.st[S.moveSrc],
        bonus.st[S.moveDst],
        bonus.st[S.moveCount],
      ],
      [14, 3, 10 + 6, 11, 3],
    );
    assert.equal(bonus.block[0], 8); // the bonus token is the next lst
    assert.deepEqual([choice.st[S.base], choice.tokens[13], choice.st[S.moveSrc]], [13, 7, 10 + 6 + 3]);
    assert.deepEqual([ties.st[S.base], ties.tokens[13], ties.st[S.moveSrc]], [13, 2, 10 + 6 + 3]);
    assert.deepEqual([none.st[S.base], none.tokens[11], none.st[S.moveCount], none.st[S.hitSteps]], [
      11,
      3,
      0,
      0,
    ]);
    assert.deepEqual([eos.st[S.done], eos.st[S.end], eos.tokens[13]], [1, 13, 0]);
    assert.deepEqual([budget.st[S.done], budget.st[S.end], budget.tokens[13]], [1, 13, 0]);
    assert.deepEqual([exact.st[S.done], exact.st[S.end], exact.tokens[14]], [1, 15, 8]);
    assert.deepEqual([done.st[S.forwards], done.tokens[11]], [0, 0]);
    assert.deepEqual(pool.pool.get(1), [[3, 3], [4, 7]]);
    assert.deepEqual(pool.pool.get(2), [[0, 1], [5, 8]]);
    assert.deepEqual(pool.pool.get(3), [[6, 9]]);
    // Shifted window: level 0 = [lst=2, 5, 6], level 1 = new results; candidates = pool[2].
    assert.deepEqual(Array.from(pool.block), [2, 5, 6, 7, 8, 9, 0, 1, 5, 8]);
    assert.equal(pool.st[S.valid], 2);
  },
);

Deno.test("lookahead start and KV move kernels equal their CPU references", gpuTest, async () => {
  const gpu = await testGpu();
  // Start: lst = tokens[P], window drawn from the prompt, candidates from the pool under lst.
  const shape = { ngram: 4, window: 3, guesses: 2 };
  const prompt = [3, 4, 5, 3, 4, 6, 3, 4, 5];
  const all = [...prompt, 3];
  const pool = promptPool(prompt, shape);
  const tokens = Tensor.from(gpu, Uint32Array.from([...all, 0, 0]), [all.length + 2], "tokens");
  const st = new Tensor(gpu, [LOOKAHEAD_STATE_SIZE], "u32", "st");
  st.write(new Uint32Array(LOOKAHEAD_STATE_SIZE).fill(7)); // garbage to be reset
  const block = new Tensor(gpu, [lookaheadRows(shape)], "u32", "block");
  const poolT = Tensor.from(gpu, encodePool(pool, V, shape), [encodePool(pool, V, shape).length], "pool");
  // KV move: rows 6..8 → 1..3 of a (12, 5) cache (overlap-free), and a done state that moves nothing.
  const rowSize = 5;
  const cache = Float32Array.from({ length: 12 * rowSize }, (_, i) => i + 0.5);
  const mk = (label: string) => Tensor.from(gpu, cache, [12, 1, rowSize], label);
  const [k1, v1, k2, v2] = [mk("k1"), mk("v1"), mk("k2"), mk("v2")];
  const moveState = (done: number) => {
    const a = new Uint32Array(LOOKAHEAD_STATE_SIZE);
    [a[S.moveSrc], a[S.moveDst], a[S.moveCount], a[S.done]] = [6, 1, 3, done];
    return Tensor.from(gpu, a, [a.length], "move st");
  };
  const [live, stopped] = [moveState(0), moveState(1)];
  const step = new Step(gpu, "start and move");
  lookaheadStart(step, { st, tokens, block, pool: poolT, shape, vocabSize: V, base: prompt.length, seed: 5 });
  lookaheadMoveKv(step, live, k1, v1);
  lookaheadMoveKv(step, stopped, k2, v2);
  step.submit();
  const [stR, blockR, k1R, v1R, k2R] = await readTensors(gpu, [st, block, k1, v1, k2]);
  const ref = lookaheadStartReference(all, pool, shape, prompt.length, 5);
  assert.deepEqual(Array.from(stR), Array.from(ref.st));
  assert.deepEqual(Array.from(blockR), Array.from(ref.block));
  assert.equal(blockR[0], 3);
  assert.equal(ref.st[S.valid], 2); // 3 → (4,5,3), (4,6,3)
  assert.deepEqual(Array.from(blockR.subarray(9)), [4, 5, 3, 4, 6, 3]);
  assert.ok(Array.from(blockR.subarray(1, 9)).every((t) => prompt.includes(t)));
  const moved = lookaheadMoveKvReference(cache, rowSize, 6, 1, 3);
  assert.deepEqual(Array.from(k1R), Array.from(moved));
  assert.deepEqual(Array.from(v1R), Array.from(moved));
  assert.deepEqual(Array.from(k2R), Array.from(cache));
  for (const t of [tokens, st, block, poolT, k1, v1, k2, v2, live, stopped]) t.destroy();
});
