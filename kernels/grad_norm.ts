/**
 * Global gradient norm and clipping, on the GPU with no readback (as PyTorch's
 * `torch.nn.utils.clip_grad_norm_`): the squared L2 norm over many tensors, then the clip factor
 *
 *   norm = sqrt(Σ_tensors Σ_i x_i²),   scale = min(1, maxNorm / (norm + 1e-6)),
 *
 * which `adamwUpdate` multiplies into the gradients (instead of rescaling them in place).
 *
 * Deterministic: every tensor's elements are summed by a fixed set of invocations in a fixed order
 * into per-invocation partial sums (`sum_squares_partial`), and one workgroup adds all the partials
 * in a fixed order (`sum_squares_reduce`). No float atomics.
 *
 * @module
 */

import { type KernelSpec, type Step, Tensor } from "../core/mod.ts";

/** Invocations per workgroup of the partial-sum kernel. */
const WG = 64;
/** Invocations of the reduction (one workgroup). */
const REDUCE_WG = 64;
/** Target elements per invocation of the partial-sum kernel. */
const ITEMS = 256;
/** Most invocations (partials) per tensor; bigger tensors give each invocation more elements. */
const MAX_PARTIALS = 4096;

/**
 * Partial sums of squares of one tensor: invocation i of `count` writes
 * partials[base + i] = Σ_k x[i + k·count]², summing blocks of 64 terms first so the rounding
 * error grows with 64 + n/(64·count) rather than n/count.
 *
 * @example Dispatching the spec directly (prefer {@linkcode sumSquares})
 * ```ts ignore
 * step.dispatch(sumSquaresPartialSpec, { variant: { WG: 64 }, bindings: { x, partials },
 *   params: { n: 1000, count: 4, base: 0 }, workgroups: [1] });
 * ```
 */
export const sumSquaresPartialSpec: KernelSpec = {
  name: "sum_squares_partial",
  bindings: [
    { name: "x", access: "read" }, // (n) the tensor
    { name: "partials", access: "read_write" }, // scratch; this tensor's slots are base..base+count-1
  ],
  params: [
    { name: "n", type: "u32" },
    { name: "count", type: "u32" }, // invocations (partials) for this tensor
    { name: "base", type: "u32" },
  ],
  wgsl: () => `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= P.count) { return; }
  var total = 0.0;
  var j = i;
  while (j < P.n) {
    // One block of up to 64 strided terms, then add the block to the total.
    var block = 0.0;
    for (var b = 0u; b < 64u && j < P.n; b++) {
      let value = x[j];
      block += value * value;
      j += P.count;
    }
    total += block;
  }
  partials[P.base + i] = total;
}`,
};

/**
 * Adds partials[0..count-1] into out[slot]: invocation l sums partials l, l + RWG, … in order, one
 * barrier, then invocation 0 adds the RWG sums in order.
 *
 * @example Dispatching the spec directly (prefer {@linkcode sumSquares})
 * ```ts ignore
 * step.dispatch(sumSquaresReduceSpec, { variant: { RWG: 64 }, bindings: { partials, out },
 *   params: { count: 10, slot: 0 }, workgroups: [1] });
 * ```
 */
export const sumSquaresReduceSpec: KernelSpec = {
  name: "sum_squares_reduce",
  bindings: [
    { name: "partials", access: "read" },
    { name: "out", access: "read_write" }, // out[slot] += Σ partials
  ],
  params: [
    { name: "count", type: "u32" },
    { name: "slot", type: "u32" },
  ],
  wgsl: () => `
var<workgroup> sums: array<f32, RWG>;

@compute @workgroup_size(RWG)
fn main(@builtin(local_invocation_index) lid: u32) {
  var total = 0.0;
  for (var j = lid; j < P.count; j += RWG) { total += partials[j]; }
  sums[lid] = total;
  workgroupBarrier();
  if (lid == 0u) {
    var all = 0.0;
    for (var l = 0u; l < RWG; l++) { all += sums[l]; }
    out[P.slot] = out[P.slot] + all;
  }
}`,
};

/** Options of {@linkcode sumSquares}. */
export interface SumSquaresOptions {
  /** Index in `out` that receives the sum (added to what is there). */
  slot: number;
  /** f32 scratch for the partial sums (default: one per device, grown as needed). */
  scratch?: Tensor;
}

/** Partials (invocations) used for a tensor of n elements. */
function _partials(n: number): number {
  return Math.max(1, Math.min(MAX_PARTIALS, Math.ceil(n / ITEMS)));
}

/**
 * Records `out[slot] += Σ_t Σ_i t[i]²` over all the given f32 tensors (zero the slot first for a
 * fresh sum, e.g. with `fillForward`). One dispatch per tensor plus one reduction; deterministic.
 *
 * @param step the step to record into
 * @param tensors f32 tensors (e.g. every parameter gradient)
 * @param out f32 tensor receiving the sum at `slot`
 * @param options slot, optional scratch
 *
 * @example Squared global gradient norm into stats[0]
 * ```ts ignore
 * fillForward(step, stats, 0);
 * sumSquares(step, grads, stats, { slot: 0 });
 * clipScale(step, stats, stats, { maxNorm: 1, sumSlot: 0, scaleSlot: 1, normSlot: 2 });
 * ```
 */
export function sumSquares(
  step: Step,
  tensors: readonly Tensor[],
  out: Tensor,
  options: SumSquaresOptions,
): void {
  const { slot } = options;
  if (out.dtype !== "f32" || !Number.isInteger(slot) || slot < 0 || slot >= out.size) {
    throw new RangeError(
      `sumSquares: slot ${slot} is not a slot of f32 tensor "${out.label}" ([${
        out.shape.join(", ")
      }] ${out.dtype})`,
    );
  }
  for (const t of tensors) {
    if (t.dtype !== "f32") throw new TypeError(`sumSquares: tensor "${t.label}" must be f32, not ${t.dtype}`);
    if (options.scratch && t.buffer === options.scratch.buffer) {
      throw new RangeError(`sumSquares: tensor "${t.label}" shares its buffer with the scratch`);
    }
  }
  const counts = tensors.map((t) => (t.size === 0 ? 0 : _partials(t.size)));
  const total = counts.reduce((a, b) => a + b, 0);
  let partials = options.scratch;
  if (partials) {
    if (partials.dtype !== "f32" || partials.size < total) {
      throw new RangeError(
        `sumSquares: scratch "${partials.label}" must be f32 with at least ${total} values, not ` +
          `${partials.size} ${partials.dtype}`,
      );
    }
  } else {
    const caches = step.gpu.caches;
    partials = caches.get("sumSquares.partials") as Tensor | undefined;
    if (!partials || partials.size < total) {
      // The old scratch is not destroyed: dispatches already recorded in this step may use it.
      partials = new Tensor(
        step.gpu,
        [Math.max(total, 2 * (partials?.size ?? 0))],
        "f32",
        "sum of squares partials",
      );
      caches.set("sumSquares.partials", partials);
    }
  }
  if (total === 0) return;
  // 1. Partial sums of each tensor, into consecutive slots of the scratch.
  let base = 0;
  tensors.forEach((x, i) => {
    const count = counts[i];
    if (count === 0) return;
    step.dispatch(sumSquaresPartialSpec, {
      variant: { WG },
      bindings: { x, partials },
      params: { n: x.size, count, base },
      workgroups: [Math.ceil(count / WG)],
    });
    base += count;
  });
  // 2. One workgroup adds them all into out[slot].
  step.dispatch(sumSquaresReduceSpec, {
    variant: { RWG: REDUCE_WG },
    bindings: { partials, out },
    params: { count: total, slot },
    workgroups: [1],
  });
}

/**
 * scale[scaleSlot] = min(1, maxNorm / (sqrt(sum[sumSlot]) + 1e-6)) and, with WRITE_NORM,
 * scale[normSlot] = sqrt(sum[sumSlot]). With ALIAS the sum and the scale are slots of one buffer
 * `stats` (WebGPU forbids binding one buffer as both read and read-write).
 *
 * @example Dispatching the spec directly (prefer {@linkcode clipScale})
 * ```ts ignore
 * step.dispatch(clipScaleSpec, { variant: { ALIAS: true, WRITE_NORM: true }, bindings: { stats },
 *   params: { maxNorm: 1, sumSlot: 0, scaleSlot: 1, normSlot: 2 }, workgroups: [1] });
 * ```
 */
export const clipScaleSpec: KernelSpec = {
  name: "clip_scale",
  bindings: (variant) =>
    variant.ALIAS
      ? [{ name: "stats", access: "read_write" }]
      : [{ name: "sumSq", access: "read" }, { name: "scaleOut", access: "read_write" }],
  params: [
    { name: "maxNorm", type: "f32" },
    { name: "sumSlot", type: "u32" },
    { name: "scaleSlot", type: "u32" },
    { name: "normSlot", type: "u32" },
  ],
  wgsl: (variant) => {
    const [sum, dst] = variant.ALIAS ? ["stats", "stats"] : ["sumSq", "scaleOut"];
    return `
@compute @workgroup_size(1)
fn main() {
  // PyTorch's clip_grad_norm_: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1.
  let norm = sqrt(${sum}[P.sumSlot]);
  let scale = min(1.0, P.maxNorm / (norm + 1e-6));
  ${dst}[P.scaleSlot] = scale;
  if (WRITE_NORM) { ${dst}[P.normSlot] = norm; }
}`;
  },
};

/** Options of {@linkcode clipScale}. */
export interface ClipScaleOptions {
  /** Largest allowed global norm. */
  maxNorm: number;
  /** Index in `sumSq` of the sum of squares. */
  sumSlot: number;
  /** Index in `scaleOut` that receives the scale. */
  scaleSlot: number;
  /** Index in `scaleOut` that receives the norm itself (optional). */
  normSlot?: number;
}

/**
 * Records `scaleOut[scaleSlot] = min(1, maxNorm / (sqrt(sumSq[sumSlot]) + 1e-6))` and, when
 * `normSlot` is given, `scaleOut[normSlot] = sqrt(sumSq[sumSlot])`. `sumSq` and `scaleOut` may be
 * the same tensor (distinct slots).
 *
 * @param step the step to record into
 * @param sumSq f32 tensor holding the sum of squares (from {@linkcode sumSquares})
 * @param scaleOut f32 tensor receiving the scale (and the norm)
 * @param options max norm and slots
 *
 * @example Clip to norm 1, keep the norm for logging
 * ```ts ignore
 * clipScale(step, stats, stats, { maxNorm: 1, sumSlot: 0, scaleSlot: 1, normSlot: 2 });
 * adamwUpdate(step, p, g, m, v, stats, { lr, t, scaleSlot: 1 });
 * ```
 */
export function clipScale(step: Step, sumSq: Tensor, scaleOut: Tensor, options: ClipScaleOptions): void {
  const { maxNorm, sumSlot, scaleSlot, normSlot } = options;
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm)) {
    throw new RangeError(`clipScale: maxNorm must be finite and > 0, not ${maxNorm}`);
  }
  const slots: [string, Tensor, number | undefined][] = [
    ["sumSlot", sumSq, sumSlot],
    ["scaleSlot", scaleOut, scaleSlot],
    ["normSlot", scaleOut, normSlot],
  ];
  for (const [name, t, s] of slots) {
    if (t.dtype !== "f32") throw new TypeError(`clipScale: tensor "${t.label}" must be f32, not ${t.dtype}`);
    if (s !== undefined && (!Number.isInteger(s) || s < 0 || s >= t.size)) {
      throw new RangeError(`clipScale: ${name} ${s} is not a slot of "${t.label}" (${t.size} values)`);
    }
  }
  const alias = sumSq.buffer === scaleOut.buffer;
  step.dispatch(clipScaleSpec, {
    variant: { ALIAS: alias, WRITE_NORM: normSlot !== undefined },
    bindings: alias ? { stats: scaleOut } : { sumSq, scaleOut },
    params: { maxNorm, sumSlot, scaleSlot, normSlot: normSlot ?? 0 },
    workgroups: [1],
  });
}

/**
 * CPU reference: Σ over the arrays of Σ x², in f64.
 *
 * @example
 * ```ts
 * import { sumSquaresReference } from "./grad_norm.ts";
 * sumSquaresReference([new Float32Array([3]), new Float32Array([4])]); // 25
 * ```
 */
export function sumSquaresReference(arrays: readonly Float32Array[]): number {
  let sum = 0;
  for (const a of arrays) for (const x of a) sum += x * x;
  return sum;
}

/**
 * CPU reference of {@linkcode clipScale}: the norm and min(1, maxNorm / (norm + 1e-6)).
 *
 * @example
 * ```ts
 * import { clipScaleReference } from "./grad_norm.ts";
 * clipScaleReference(25, 1); // ≈ { norm: 5, scale: 0.2 }
 * ```
 */
export function clipScaleReference(sumSq: number, maxNorm: number): { norm: number; scale: number } {
  const norm = Math.sqrt(sumSq);
  return { norm, scale: Math.min(1, maxNorm / (norm + 1e-6)) };
}
