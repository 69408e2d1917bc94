/**
 * The training losses, forward and backward fused (the loss ends the graph, so its gradient is
 * known as soon as its value is): label-smoothed cross-entropy for the AR loss and soft
 * cross-entropy for the global consistency loss (docs/method.md §4.3).
 *
 * Dimension letters: T rows (positions), V vocabulary. With `q = softmax(logits_t)`:
 *
 * - {@linkcode crossEntropyLoss} (Hugging Face `LabelSmoother`, ε = smoothing):
 *       l_t = (1−ε)·(−log q_y) + ε·mean_v(−log q_v),   dLogits_t = scale·(q − ((1−ε)·onehot(y) + ε/V))
 *   for rows whose label y is not ignored; ignored rows (label {@linkcode IGNORE_LABEL}, or any id
 *   ≥ V) get a zero gradient and no loss.
 * - {@linkcode softCrossEntropyLoss} (`p = softmax(targetLogits_t)`, detached):
 *       l_t = −Σ_v p_v·log q_v,   dLogits_t = scale·(q − p)
 *   for firstRow ≤ t < lastRow; the other rows get a zero gradient and no loss.
 *
 * Both add `scale·Σ_t l_t` into `loss[lossSlot]` on the GPU: the first dispatch (one workgroup per
 * row) writes each row's loss into a scratch tensor, a second one-invocation dispatch sums the rows
 * in order and adds the total, so the result is deterministic (no float atomics) and never needs a
 * readback. The caller picks `scale` (e.g. weight / number of counted rows) to get a weighted mean.
 *
 * Numerics: log-softmax in f32 with the row maximum subtracted (an online (max, Σexp) per
 * invocation, merged in a fixed order after one barrier), so any finite logits are safe.
 *
 * @module
 */

import { type Gpu, type KernelSpec, type Step, Tensor } from "../core/mod.ts";

/** Label value that marks a row as ignored (no loss, zero gradient); PyTorch's −100 plays this role. */
export const IGNORE_LABEL = 0xffffffff;

const WG = 128;

/** Bindings of a per-row loss kernel: `dLogits` is dropped when the gradient overwrites `logits`. */
function lossBindings(extra: { name: string; type?: string }, inPlace: boolean) {
  return [
    { name: "logits", access: inPlace ? "read_write" as const : "read" as const }, // (T, V)
    { name: extra.name, access: "read" as const, type: extra.type }, // labels (T) or targets (T, V)
    ...(inPlace ? [] : [{ name: "dLogits", access: "read_write" as const }]), // (T, V)
    { name: "rowLoss", access: "read_write" as const }, // (T) scratch
  ];
}

/**
 * Label-smoothed cross-entropy, one workgroup per row (`x + y * gridX`): the row's loss into
 * `rowLoss[row]` and its gradient into `dLogits` (into `logits` itself with variant `INPLACE`).
 * Variant: `WG` (invocations per row), `INPLACE`.
 *
 * @example Dispatching the spec directly (prefer {@linkcode crossEntropyLoss})
 * ```ts ignore
 * step.dispatch(crossEntropySpec, {
 *   variant: { WG: 128, INPLACE: false },
 *   bindings: { logits, labels, dLogits, rowLoss },
 *   params: { rows: T, V, gridX: T, smoothing: 0.1, scale: 1 / T },
 *   workgroups: [T],
 * });
 * ```
 */
export const crossEntropySpec: KernelSpec = {
  name: "cross_entropy",
  bindings: (variant) => lossBindings({ name: "labels", type: "u32" }, variant.INPLACE === true),
  params: [
    { name: "rows", type: "u32" },
    { name: "V", type: "u32" },
    { name: "gridX", type: "u32" },
    { name: "smoothing", type: "f32" },
    { name: "scale", type: "f32" },
  ],
  wgsl: (variant) => `
const LOWEST: f32 = -3.4028234e38; // -FLT_MAX; Tint refuses the decimal -3.4028235e38 as out of range
var<workgroup> partMax: array<f32, WG>;
var<workgroup> partSum: array<f32, WG>;
var<workgroup> partX: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * P.gridX;
  if (row >= P.rows) { return; } // uniform: the whole workgroup leaves together
  let start = row * P.V;
  let y = labels[row];
  let valid = y < P.V; // IGNORE_LABEL (and any id >= V) is ignored
  // 1. Online (max, Σ exp(x − max)) and Σ x over a strided slice; the label's logit is read
  //    before the barrier, so an in-place gradient cannot overwrite it first.
  var m = LOWEST;
  var s = 0.0;
  var sx = 0.0;
  var labelLogit = 0.0;
  if (valid) {
    labelLogit = logits[start + y];
    for (var v = lid; v < P.V; v += WG) {
      let value = logits[start + v];
      let mNew = max(m, value);
      s = s * exp(m - mNew) + exp(value - mNew);
      m = mNew;
      sx += value;
    }
  }
  partMax[lid] = m;
  partSum[lid] = s;
  partX[lid] = sx;
  workgroupBarrier();
  // 2. Merge in the same order in every invocation: logZ = max + log Σ exp(x − max).
  var rowMax = LOWEST;
  for (var k = 0u; k < WG; k++) { rowMax = max(rowMax, partMax[k]); }
  var total = 0.0;
  var sumX = 0.0;
  for (var k = 0u; k < WG; k++) {
    total += partSum[k] * exp(partMax[k] - rowMax);
    sumX += partX[k];
  }
  let logZ = rowMax + log(total);
  let eps = P.smoothing;
  // 3. Loss: (1−ε)·(logZ − x_y) + ε·(logZ − mean x), i.e. −log q_y and mean_v(−log q_v).
  if (lid == 0u) {
    var l = 0.0;
    if (valid) { l = (1.0 - eps) * (logZ - labelLogit) + eps * (logZ - sumX / f32(P.V)); }
    rowLoss[row] = l;
  }
  // 4. Gradient: scale·(q − smoothed one-hot); zero for ignored rows.
  let offTarget = eps / f32(P.V);
  for (var v = lid; v < P.V; v += WG) {
    var g = 0.0;
    if (valid) {
      var goal = offTarget;
      if (v == y) { goal += 1.0 - eps; }
      g = P.scale * (exp(logits[start + v] - logZ) - goal);
    }
    ${variant.INPLACE ? "logits" : "dLogits"}[start + v] = g;
  }
}`,
};

/**
 * Soft cross-entropy against detached target logits, one workgroup per row (`x + y * gridX`):
 * rows in [firstRow, lastRow) get their loss in `rowLoss[row]` and gradient `scale·(q − p)` in
 * `dLogits` (in `logits` with variant `INPLACE`); other rows get zeros. Variant: `WG`, `INPLACE`.
 *
 * @example Dispatching the spec directly (prefer {@linkcode softCrossEntropyLoss})
 * ```ts ignore
 * step.dispatch(softCrossEntropySpec, {
 *   variant: { WG: 128, INPLACE: false },
 *   bindings: { logits, targetLogits, dLogits, rowLoss },
 *   params: { rows: T, V, gridX: T, firstRow: d, lastRow: T, scale: 1 / (T - d) },
 *   workgroups: [T],
 * });
 * ```
 */
export const softCrossEntropySpec: KernelSpec = {
  name: "soft_cross_entropy",
  bindings: (variant) => lossBindings({ name: "targetLogits" }, variant.INPLACE === true),
  params: [
    { name: "rows", type: "u32" },
    { name: "V", type: "u32" },
    { name: "gridX", type: "u32" },
    { name: "firstRow", type: "u32" },
    { name: "lastRow", type: "u32" },
    { name: "scale", type: "f32" },
  ],
  wgsl: (variant) => `
const LOWEST: f32 = -3.4028234e38; // -FLT_MAX; Tint refuses the decimal -3.4028235e38 as out of range
var<workgroup> partMaxQ: array<f32, WG>;
var<workgroup> partSumQ: array<f32, WG>;
var<workgroup> partMaxP: array<f32, WG>;
var<workgroup> partSumP: array<f32, WG>;
var<workgroup> partDotP: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * P.gridX;
  if (row >= P.rows) { return; } // uniform: the whole workgroup leaves together
  let start = row * P.V;
  if (row < P.firstRow || row >= P.lastRow) { // uniform too: rows outside the range get zeros
    for (var v = lid; v < P.V; v += WG) { ${variant.INPLACE ? "logits" : "dLogits"}[start + v] = 0.0; }
    if (lid == 0u) { rowLoss[row] = 0.0; }
    return;
  }
  // 1. Online (max, Σ exp) of the logits (q) and of the targets (p), plus Σ exp(b − maxP)·x so
  //    that Σ_v p_v·x_v needs no second pass.
  var mq = LOWEST;
  var sq = 0.0;
  var mp = LOWEST;
  var sp = 0.0;
  var wp = 0.0;
  for (var v = lid; v < P.V; v += WG) {
    let a = logits[start + v];
    let b = targetLogits[start + v];
    let mqNew = max(mq, a);
    sq = sq * exp(mq - mqNew) + exp(a - mqNew);
    mq = mqNew;
    let mpNew = max(mp, b);
    let r = exp(mp - mpNew);
    let e = exp(b - mpNew);
    sp = sp * r + e;
    wp = wp * r + e * a;
    mp = mpNew;
  }
  partMaxQ[lid] = mq;
  partSumQ[lid] = sq;
  partMaxP[lid] = mp;
  partSumP[lid] = sp;
  partDotP[lid] = wp;
  workgroupBarrier();
  // 2. Merge in the same order in every invocation.
  var maxQ = LOWEST;
  var maxP = LOWEST;
  for (var k = 0u; k < WG; k++) {
    maxQ = max(maxQ, partMaxQ[k]);
    maxP = max(maxP, partMaxP[k]);
  }
  var sumQ = 0.0;
  var sumP = 0.0;
  var dotP = 0.0;
  for (var k = 0u; k < WG; k++) {
    sumQ += partSumQ[k] * exp(partMaxQ[k] - maxQ);
    let r = exp(partMaxP[k] - maxP);
    sumP += partSumP[k] * r;
    dotP += partDotP[k] * r;
  }
  let logZq = maxQ + log(sumQ);
  let logZp = maxP + log(sumP);
  // 3. Loss: −Σ p·log q = −Σ p·(x − logZq) = logZq − Σ p·x (Σ p = 1).
  if (lid == 0u) { rowLoss[row] = logZq - dotP / sumP; }
  // 4. Gradient: scale·(q − p).
  for (var v = lid; v < P.V; v += WG) {
    let q = exp(logits[start + v] - logZq);
    let p = exp(targetLogits[start + v] - logZp);
    ${variant.INPLACE ? "logits" : "dLogits"}[start + v] = P.scale * (q - p);
  }
}`,
};

/**
 * `loss[lossSlot] += scale·Σ_{t<rows} rowLoss[t]`, one invocation summing the rows in order.
 *
 * @example Dispatching the spec directly (the loss functions record it)
 * ```ts ignore
 * step.dispatch(lossSumSpec, { bindings: { rowLoss, loss }, params: { rows: T, lossSlot: 0, scale: 1 }, workgroups: [1] });
 * ```
 */
export const lossSumSpec: KernelSpec = {
  name: "loss_sum",
  bindings: [
    { name: "rowLoss", access: "read" }, // (T)
    { name: "loss", access: "read_write" }, // accumulators
  ],
  params: [
    { name: "rows", type: "u32" },
    { name: "lossSlot", type: "u32" },
    { name: "scale", type: "f32" },
  ],
  wgsl: () => `
@compute @workgroup_size(1)
fn main() {
  var total = 0.0;
  for (var t = 0u; t < P.rows; t++) { total += rowLoss[t]; }
  loss[P.lossSlot] = loss[P.lossSlot] + P.scale * total;
}`,
};

/** Per-device scratch for the per-row losses, grown to the largest row count seen. */
const scratch = new WeakMap<Gpu, Tensor>();

function rowLossScratch(gpu: Gpu, rows: number): Tensor {
  let t = scratch.get(gpu);
  if (!t || t.size < rows) {
    // Not destroyed when replaced: a step being recorded may still bind the old one.
    const size = Math.max(64, 2 ** Math.ceil(Math.log2(rows)));
    t = new Tensor(gpu, [size], "f32", "loss rows");
    scratch.set(gpu, t);
  }
  return t;
}

/** Checks shared by both losses; returns (T, V). */
function checkLossArgs(
  fn: string,
  logits: Tensor,
  dLogits: Tensor,
  loss: Tensor,
  scale: number,
  lossSlot: number,
): [number, number] {
  const V = logits.shape[logits.shape.length - 1];
  const T = V > 0 ? logits.size / V : 0;
  if (logits.dtype !== "f32" || dLogits.dtype !== "f32" || loss.dtype !== "f32") {
    throw new TypeError(
      `${fn}: logits "${logits.label}", dLogits "${dLogits.label}" and loss "${loss.label}" must be f32`,
    );
  }
  if (dLogits.size < T * V) {
    throw new RangeError(
      `${fn}: dLogits "${dLogits.label}" [${dLogits.shape.join(", ")}] is smaller than logits ` +
        `[${logits.shape.join(", ")}]`,
    );
  }
  if (!Number.isInteger(lossSlot) || lossSlot < 0 || lossSlot >= loss.size) {
    throw new RangeError(`${fn}: lossSlot ${lossSlot} is not a slot of loss "${loss.label}" (${loss.size})`);
  }
  if (!Number.isFinite(scale)) throw new RangeError(`${fn}: scale must be finite, not ${scale}`);
  if (loss.buffer === logits.buffer || loss.buffer === dLogits.buffer) {
    throw new RangeError(`${fn}: loss "${loss.label}" must be a tensor of its own`);
  }
  return [T, V];
}

function recordLossSum(
  step: Step,
  rowLoss: Tensor,
  loss: Tensor,
  rows: number,
  lossSlot: number,
  scale: number,
) {
  step.dispatch(lossSumSpec, {
    bindings: { rowLoss, loss },
    params: { rows, lossSlot, scale },
    workgroups: [1],
  });
}

/** Options of {@linkcode crossEntropyLoss}. */
export interface CrossEntropyOptions {
  /** Label smoothing ε in [0, 1] (default 0; the CLLM AR loss uses 0.1). */
  smoothing?: number;
  /** Factor on both the loss added and the gradient (default 1), e.g. weight / counted rows. */
  scale?: number;
  /** Element of `loss` to add into (default 0). */
  lossSlot?: number;
}

/**
 * Records the label-smoothed cross-entropy of each row of `logits` against `labels`: writes
 * `dLogits = scale·(softmax(logits) − ((1−ε)·onehot(y) + ε/V))` (zero rows where the label is
 * ignored) and adds `scale·Σ_t l_t` into `loss[lossSlot]`, with
 * `l_t = (1−ε)·(−log q_y) + ε·mean_v(−log q_v)`.
 *
 * `dLogits` may be `logits` itself (the gradient then overwrites the logits, saving a (T, V)
 * buffer).
 *
 * @param step the step to record into
 * @param logits (T, V) logits
 * @param labels u32 (T) target ids; {@linkcode IGNORE_LABEL} (or any id ≥ V) ignores the row
 * @param dLogits (T, V) gradient of the scaled loss, overwritten (may be `logits`)
 * @param loss f32 accumulators; `loss[lossSlot]` is added to on the GPU
 * @param options smoothing, scale, loss slot
 *
 * @example The CLLM AR loss, weight 10, over the n counted positions
 * ```ts ignore
 * crossEntropyLoss(step, logits, labels, dLogits, loss, { smoothing: 0.1, scale: 10 / n, lossSlot: 0 });
 * ```
 */
export function crossEntropyLoss(
  step: Step,
  logits: Tensor,
  labels: Tensor,
  dLogits: Tensor,
  loss: Tensor,
  options: CrossEntropyOptions = {},
): void {
  const smoothing = options.smoothing ?? 0;
  const scale = options.scale ?? 1;
  const lossSlot = options.lossSlot ?? 0;
  const [T, V] = checkLossArgs("crossEntropyLoss", logits, dLogits, loss, scale, lossSlot);
  if (!(smoothing >= 0 && smoothing <= 1)) {
    throw new RangeError(`crossEntropyLoss: smoothing must be in [0, 1], not ${smoothing}`);
  }
  if (labels.dtype !== "u32" || labels.size < T) {
    throw new RangeError(
      `crossEntropyLoss: labels "${labels.label}" must be u32 with at least ${T} elements, not ` +
        `[${labels.shape.join(", ")}] ${labels.dtype}`,
    );
  }
  if (T === 0) return;
  const rowLoss = rowLossScratch(step.gpu, T);
  const inPlace = dLogits.buffer === logits.buffer;
  const gridX = Math.min(T, 65535);
  step.dispatch(crossEntropySpec, {
    variant: { WG, INPLACE: inPlace },
    bindings: inPlace ? { logits, labels, rowLoss } : { logits, labels, dLogits, rowLoss },
    params: { rows: T, V, gridX, smoothing, scale },
    workgroups: [gridX, Math.ceil(T / gridX)],
  });
  recordLossSum(step, rowLoss, loss, T, lossSlot, scale);
}

/** Options of {@linkcode softCrossEntropyLoss}. */
export interface SoftCrossEntropyOptions {
  /** First row that counts. */
  firstRow: number;
  /** One past the last row that counts (default T). */
  lastRow?: number;
  /** Factor on both the loss added and the gradient (default 1), e.g. 1 / (lastRow − firstRow). */
  scale?: number;
  /** Element of `loss` to add into (default 0). */
  lossSlot?: number;
}

/**
 * Records the soft cross-entropy `l_t = −Σ_v p_v·log q_v` of rows firstRow ≤ t < lastRow, with
 * `p = softmax(targetLogits_t)` (treated as constant) and `q = softmax(logits_t)`: writes
 * `dLogits_t = scale·(q − p)` there and zero rows elsewhere, and adds `scale·Σ_t l_t` into
 * `loss[lossSlot]`. `dLogits` may be `logits` itself.
 *
 * @param step the step to record into
 * @param logits (T, V) logits of the model being trained
 * @param targetLogits (T, V) detached target logits (a different tensor from the others)
 * @param dLogits (T, V) gradient of the scaled loss, overwritten (may be `logits`)
 * @param loss f32 accumulators; `loss[lossSlot]` is added to on the GPU
 * @param options the row range, scale, loss slot
 *
 * @example The CLLM global consistency loss from the first differing position d
 * ```ts ignore
 * softCrossEntropyLoss(step, logitsI, logitsLast, dLogits, loss, {
 *   firstRow: d, lastRow: L - 1, scale: 1 / (L - 1 - d), lossSlot: 1,
 * });
 * ```
 */
export function softCrossEntropyLoss(
  step: Step,
  logits: Tensor,
  targetLogits: Tensor,
  dLogits: Tensor,
  loss: Tensor,
  options: SoftCrossEntropyOptions,
): void {
  const scale = options.scale ?? 1;
  const lossSlot = options.lossSlot ?? 0;
  const [T, V] = checkLossArgs("softCrossEntropyLoss", logits, dLogits, loss, scale, lossSlot);
  const firstRow = options.firstRow;
  const lastRow = options.lastRow ?? T;
  if (
    !Number.isInteger(firstRow) || !Number.isInteger(lastRow) || firstRow < 0 || firstRow > lastRow ||
    lastRow > T
  ) {
    throw new RangeError(
      `softCrossEntropyLoss: rows ${firstRow}..${lastRow} are not a range inside the ${T} rows of ` +
        `"${logits.label}"`,
    );
  }
  if (targetLogits.dtype !== "f32" || targetLogits.size < T * V) {
    throw new RangeError(
      `softCrossEntropyLoss: targetLogits "${targetLogits.label}" [${targetLogits.shape.join(", ")}] ` +
        `${targetLogits.dtype} must be f32 and as large as logits [${logits.shape.join(", ")}]`,
    );
  }
  if (targetLogits.buffer === logits.buffer || targetLogits.buffer === dLogits.buffer) {
    throw new RangeError(
      `softCrossEntropyLoss: targetLogits "${targetLogits.label}" must be a tensor of its own (detached)`,
    );
  }
  if (T === 0) return;
  const rowLoss = rowLossScratch(step.gpu, T);
  const inPlace = dLogits.buffer === logits.buffer;
  const gridX = Math.min(T, 65535);
  step.dispatch(softCrossEntropySpec, {
    variant: { WG, INPLACE: inPlace },
    bindings: inPlace ? { logits, targetLogits, rowLoss } : { logits, targetLogits, dLogits, rowLoss },
    params: { rows: T, V, gridX, firstRow, lastRow, scale },
    workgroups: [gridX, Math.ceil(T / gridX)],
  });
  recordLossSum(step, rowLoss, loss, T, lossSlot, scale);
}

/** A loss and its gradient, as the CPU references return them. */
export interface LossAndGradient {
  /** `scale·Σ_t l_t`, the amount the GPU adds into `loss[lossSlot]` (f64). */
  loss: number;
  /** (T, V) gradient of that scaled loss with respect to the logits. */
  dLogits: Float32Array;
}

/** Log of Σ_v exp(x[o + v]) over one row, with the maximum subtracted (f64). */
function _logSumExp(x: ArrayLike<number>, o: number, V: number): number {
  let max = -Infinity;
  for (let v = 0; v < V; v++) max = Math.max(max, x[o + v]);
  let sum = 0;
  for (let v = 0; v < V; v++) sum += Math.exp(x[o + v] - max);
  return max + Math.log(sum);
}

/**
 * CPU reference of {@linkcode crossEntropyLoss} in f64: the loss from the formula of Hugging
 * Face's `LabelSmoother`, and its gradient from a separate loop.
 *
 * @param logits (T, V) logits (any numeric array, so finite differences can use f64)
 * @param labels (T) target ids; ids ≥ V (such as {@linkcode IGNORE_LABEL}) ignore the row
 * @param V vocabulary size
 * @param options smoothing (default 0) and scale (default 1)
 * @returns the scaled loss sum and the gradient
 *
 * @example Two equal logits: −log(1/2) = log 2
 * ```ts
 * import { crossEntropyLossReference } from "./cross_entropy.ts";
 * crossEntropyLossReference(new Float32Array([0, 0]), new Uint32Array([1]), 2).loss; // ≈ 0.6931
 * ```
 */
export function crossEntropyLossReference(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  V: number,
  options: { smoothing?: number; scale?: number } = {},
): LossAndGradient {
  const eps = options.smoothing ?? 0;
  const scale = options.scale ?? 1;
  const T = logits.length / V;
  const dLogits = new Float32Array(T * V);
  let loss = 0;
  for (let t = 0; t < T; t++) {
    const y = labels[t];
    if (y >= V) continue; // ignored row: no loss, zero gradient
    const o = t * V;
    const logZ = _logSumExp(logits, o, V);
    // Loss: (1−ε)·(−log q_y) + ε·mean_v(−log q_v), with −log q_v = logZ − x_v.
    let meanNll = 0;
    for (let v = 0; v < V; v++) meanNll += logZ - logits[o + v];
    meanNll /= V;
    loss += (1 - eps) * (logZ - logits[o + y]) + eps * meanNll;
    // Gradient: softmax minus the smoothed one-hot target.
    for (let v = 0; v < V; v++) {
      const q = Math.exp(logits[o + v] - logZ);
      const target = eps / V + (v === y ? 1 - eps : 0);
      dLogits[o + v] = scale * (q - target);
    }
  }
  return { loss: scale * loss, dLogits };
}

/**
 * CPU reference of {@linkcode softCrossEntropyLoss} in f64: `−Σ_v p_v·log q_v` per counted row,
 * gradient `scale·(q − p)`.
 *
 * @param logits (T, V) logits (any numeric array, so finite differences can use f64)
 * @param targetLogits (T, V) target logits
 * @param V vocabulary size
 * @param options the row range (lastRow default T) and scale (default 1)
 * @returns the scaled loss sum and the gradient
 *
 * @example Identical uniform rows: the loss is the entropy log V
 * ```ts
 * import { softCrossEntropyLossReference } from "./cross_entropy.ts";
 * const x = new Float32Array(4);
 * softCrossEntropyLossReference(x, x, 4, { firstRow: 0 }).loss; // ≈ 1.3863
 * ```
 */
export function softCrossEntropyLossReference(
  logits: ArrayLike<number>,
  targetLogits: ArrayLike<number>,
  V: number,
  options: { firstRow: number; lastRow?: number; scale?: number },
): LossAndGradient {
  const scale = options.scale ?? 1;
  const T = logits.length / V;
  const lastRow = options.lastRow ?? T;
  const dLogits = new Float32Array(T * V);
  let loss = 0;
  for (let t = options.firstRow; t < lastRow; t++) {
    const o = t * V;
    const logZq = _logSumExp(logits, o, V);
    const logZp = _logSumExp(targetLogits, o, V);
    for (let v = 0; v < V; v++) {
      const p = Math.exp(targetLogits[o + v] - logZp);
      const logQ = logits[o + v] - logZq;
      loss -= p * logQ; // −Σ p·log q
      dLogits[o + v] = scale * (Math.exp(logQ) - p); // q − p
    }
  }
  return { loss: scale * loss, dLogits };
}
