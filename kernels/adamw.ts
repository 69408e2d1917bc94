/**
 * AdamW, exactly as PyTorch's `torch.optim.AdamW` (single-tensor path, `amsgrad=False`,
 * `maximize=False`), with the gradient multiplied by a GPU-resident scale (gradient clipping):
 *
 *   g  = grad · scale[scaleSlot]
 *   p ← p · (1 − lr·λ)                                  (decoupled weight decay)
 *   m ← β1·m + (1 − β1)·g
 *   v ← β2·v + (1 − β2)·g²
 *   p ← p − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
 *
 * The last line is PyTorch's arrangement of m̂ / (sqrt(v̂) + eps) with m̂ = m/(1 − β1^t),
 * v̂ = v/(1 − β2^t): the bias corrections are folded into a step size and a divisor computed once on
 * the host in f64, as are 1 − β1 and 1 − β2 (PyTorch computes them in Python floats too; in f32,
 * 1 − 0.999 is off by 1.3e-5 relative). t is the 1-based step number.
 *
 * @module
 */

import type { KernelSpec, Step, Tensor } from "../core/mod.ts";
import { grid1d } from "./add.ts";
import { fillForward } from "./fill.ts";

const WG = 64;

/**
 * One AdamW update of n elements, in place on `param`, `m` and `v`.
 *
 * @example Dispatching the spec directly (prefer {@linkcode adamwUpdate})
 * ```ts ignore
 * step.dispatch(adamwSpec, {
 *   variant: { WG: 64 },
 *   bindings: { param, grad, m, v, scale },
 *   params: { n, rowStride, decay: 1 - lr * wd, beta1: 0.9, beta2: 0.999, oneMinusBeta1: 0.1,
 *     oneMinusBeta2: 0.001, stepSize: lr / 0.1, bc2Sqrt: Math.sqrt(0.001), eps: 1e-8, scaleSlot: 0 },
 *   workgroups,
 * });
 * ```
 */
export const adamwSpec: KernelSpec = {
  name: "adamw",
  bindings: [
    { name: "param", access: "read_write" }, // (n) parameters p
    { name: "grad", access: "read" }, // (n) gradient, before the scale
    { name: "m", access: "read_write" }, // (n) first moment
    { name: "v", access: "read_write" }, // (n) second moment
    { name: "scale", access: "read" }, // scale[scaleSlot] multiplies the gradient
  ],
  params: [
    { name: "n", type: "u32" },
    { name: "rowStride", type: "u32" }, // workgroups in x · WG
    { name: "decay", type: "f32" }, // 1 − lr·λ
    { name: "beta1", type: "f32" },
    { name: "beta2", type: "f32" },
    { name: "oneMinusBeta1", type: "f32" }, // 1 − β1 from f64 (1.0 − f32(0.999) is off by 1e-5)
    { name: "oneMinusBeta2", type: "f32" },
    { name: "stepSize", type: "f32" }, // lr / (1 − β1^t)
    { name: "bc2Sqrt", type: "f32" }, // sqrt(1 − β2^t)
    { name: "eps", type: "f32" },
    { name: "scaleSlot", type: "u32" },
  ],
  wgsl: () => `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * P.rowStride;
  if (i >= P.n) { return; }
  let g = grad[i] * scale[P.scaleSlot];
  // Decoupled weight decay, then the moment updates.
  let p = param[i] * P.decay;
  let mi = P.beta1 * m[i] + P.oneMinusBeta1 * g;
  let vi = P.beta2 * v[i] + P.oneMinusBeta2 * g * g;
  m[i] = mi;
  v[i] = vi;
  // Bias-corrected step: p − stepSize · m / (sqrt(v) / sqrt(1 − β2^t) + eps).
  param[i] = p - P.stepSize * mi / (sqrt(vi) / P.bc2Sqrt + P.eps);
}`,
};

/** Hyperparameters of one AdamW step (PyTorch's names and defaults, except lr, which is required). */
export interface AdamWOptions {
  /** Learning rate for this step (e.g. from `cosineSchedule`). */
  lr: number;
  /** First-moment decay β1 (default 0.9). */
  beta1?: number;
  /** Second-moment decay β2 (default 0.999). */
  beta2?: number;
  /** Added to the denominator (default 1e-8). */
  eps?: number;
  /** Decoupled weight decay λ (default 0; PyTorch's AdamW default is 0.01). */
  weightDecay?: number;
  /** 1-based step number, for the bias corrections. */
  t: number;
  /** Index in the scale tensor of the gradient scale (default 0). */
  scaleSlot?: number;
}

/** Host-side constants of a step, computed in f64. */
function _constants(options: AdamWOptions) {
  const { lr, t } = options;
  const beta1 = options.beta1 ?? 0.9;
  const beta2 = options.beta2 ?? 0.999;
  const eps = options.eps ?? 1e-8;
  const weightDecay = options.weightDecay ?? 0;
  if (!Number.isInteger(t) || t < 1) throw new RangeError(`adamw: step t must be an integer ≥ 1, not ${t}`);
  if (!Number.isFinite(lr) || lr < 0) throw new RangeError(`adamw: lr must be finite and ≥ 0, not ${lr}`);
  for (const [name, b] of [["beta1", beta1], ["beta2", beta2]] as const) {
    if (!(b >= 0 && b < 1)) throw new RangeError(`adamw: ${name} must be in [0, 1), not ${b}`);
  }
  if (!(eps >= 0) || !(weightDecay >= 0)) {
    throw new RangeError(`adamw: eps (${eps}) and weightDecay (${weightDecay}) must be ≥ 0`);
  }
  return {
    decay: 1 - lr * weightDecay,
    beta1,
    beta2,
    oneMinusBeta1: 1 - beta1,
    oneMinusBeta2: 1 - beta2,
    stepSize: lr / (1 - beta1 ** t),
    bc2Sqrt: Math.sqrt(1 - beta2 ** t),
    eps,
  };
}

/**
 * Records one AdamW step on a parameter tensor, in place on `param`, `m` and `v`, with the gradient
 * scaled by `scaleBuf[scaleSlot]` (1 without clipping; see `clipScale`).
 *
 * @param step the step to record into
 * @param param (n) f32 parameters
 * @param grad (n) f32 gradient
 * @param m (n) f32 first moment (zero before step 1)
 * @param v (n) f32 second moment (zero before step 1)
 * @param scaleBuf f32 tensor holding the gradient scale at `scaleSlot`
 * @param options lr, betas, eps, weight decay, step number t, scale slot
 *
 * @example One optimiser step over every parameter, after clipping
 * ```ts ignore
 * for (const [i, p] of params.entries()) {
 *   adamwUpdate(step, p, grads[i], ms[i], vs[i], stats, { lr: schedule(t - 1), weightDecay: 0.01, t, scaleSlot: 1 });
 * }
 * ```
 */
export function adamwUpdate(
  step: Step,
  param: Tensor,
  grad: Tensor,
  m: Tensor,
  v: Tensor,
  scaleBuf: Tensor,
  options: AdamWOptions,
): void {
  const constants = _constants(options);
  const scaleSlot = options.scaleSlot ?? 0;
  const n = param.size;
  for (const [name, t] of [["param", param], ["grad", grad], ["m", m], ["v", v]] as const) {
    if (t.dtype !== "f32" || t.size !== n) {
      throw new RangeError(
        `adamwUpdate: ${name} "${t.label}" must be f32 with ${n} elements like param "${param.label}", not ` +
          `[${t.shape.join(", ")}] ${t.dtype}`,
      );
    }
  }
  if (
    scaleBuf.dtype !== "f32" || !Number.isInteger(scaleSlot) || scaleSlot < 0 || scaleSlot >= scaleBuf.size
  ) {
    throw new RangeError(
      `adamwUpdate: scaleSlot ${scaleSlot} is not a slot of f32 tensor "${scaleBuf.label}" ` +
        `([${scaleBuf.shape.join(", ")}] ${scaleBuf.dtype})`,
    );
  }
  if (n === 0) return;
  const { workgroups, rowStride } = grid1d(n, WG);
  step.dispatch(adamwSpec, {
    variant: { WG },
    bindings: { param, grad, m, v, scale: scaleBuf },
    params: { n, rowStride, scaleSlot, ...constants },
    workgroups,
  });
}

/**
 * Records `t[i] = 0` for every element (zeroing gradients, moments, or accumulator slots).
 *
 * @param step the step to record into
 * @param t the tensor to zero (any dtype; f16 needs an even size)
 *
 * @example Zeroing the gradients at the start of a training step
 * ```ts ignore
 * for (const g of grads) zeroTensor(step, g);
 * ```
 */
export function zeroTensor(step: Step, t: Tensor): void {
  fillForward(step, t, 0);
}

/** The state after {@linkcode adamwReference}. */
export interface AdamWState {
  /** Updated parameters. */
  param: Float32Array;
  /** Updated first moment. */
  m: Float32Array;
  /** Updated second moment. */
  v: Float32Array;
}

/**
 * CPU reference: one AdamW step in f64, written as the textbook formula with m̂ and v̂ (not the
 * kernel's folded constants), rounded to f32 like the stored state.
 *
 * @param param parameters
 * @param grad gradient (before the scale)
 * @param m first moment
 * @param v second moment
 * @param scale the gradient scale
 * @param options hyperparameters (scaleSlot is ignored)
 * @returns new param, m and v
 *
 * @example First step: m̂ = g and v̂ = g², so p moves by lr · g / (|g| + eps) ≈ lr · sign(g)
 * ```ts
 * import { adamwReference } from "./adamw.ts";
 * const z = new Float32Array(1);
 * adamwReference(new Float32Array([1]), new Float32Array([0.5]), z, z, 1, { lr: 0.1, t: 1 }).param; // ≈ [0.9]
 * ```
 */
export function adamwReference(
  param: Float32Array,
  grad: Float32Array,
  m: Float32Array,
  v: Float32Array,
  scale: number,
  options: AdamWOptions,
): AdamWState {
  const { lr, t } = options;
  const beta1 = options.beta1 ?? 0.9;
  const beta2 = options.beta2 ?? 0.999;
  const eps = options.eps ?? 1e-8;
  const weightDecay = options.weightDecay ?? 0;
  const out: AdamWState = {
    param: new Float32Array(param.length),
    m: new Float32Array(param.length),
    v: new Float32Array(param.length),
  };
  for (let i = 0; i < param.length; i++) {
    const g = grad[i] * scale;
    // Decoupled weight decay: p ← p − lr·λ·p.
    let p = param[i] - lr * weightDecay * param[i];
    // Moments.
    const mi = beta1 * m[i] + (1 - beta1) * g;
    const vi = beta2 * v[i] + (1 - beta2) * g * g;
    // Bias corrections and the step.
    const mHat = mi / (1 - beta1 ** t);
    const vHat = vi / (1 - beta2 ** t);
    p -= lr * mHat / (Math.sqrt(vHat) + eps);
    out.param[i] = p;
    out.m[i] = mi;
    out.v[i] = vi;
  }
  return out;
}
