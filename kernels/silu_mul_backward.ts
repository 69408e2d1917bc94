/**
 * Backward of the gated product of the Llama MLP ({@linkcode siluMulForward} in `silu_mul.ts`):
 * `out = silu(gate)·up` with `silu(g) = g·σ(g)`, σ the logistic sigmoid. Elementwise:
 *
 *     dUp   = dOut·silu(g) = dOut·g·σ(g)
 *     dGate = dOut·up·silu'(g),   silu'(g) = σ(g)·(1 + g·(1 − σ(g)))
 *
 * Dimension letters: T rows, I intermediate channels.
 *
 * @module
 */

import type { KernelSpec, Step, Tensor } from "../core/mod.ts";
import { ELEMENTWISE_PARAMS, elementwiseWgsl, grid1d } from "./add.ts";

const WG = 64;

/**
 * dGate[i], dUp[i] for i < n, one invocation per element over a 2-D grid (`rowStride` as in
 * {@linkcode grid1d}).
 *
 * @example Dispatching the spec directly (prefer {@linkcode siluMulBackward})
 * ```ts ignore
 * const { workgroups, rowStride } = grid1d(n, 64);
 * step.dispatch(siluMulBackwardSpec, {
 *   variant: { WG: 64 },
 *   bindings: { gate, up, dOut, dGate, dUp },
 *   params: { n, rowStride },
 *   workgroups,
 * });
 * ```
 */
export const siluMulBackwardSpec: KernelSpec = {
  name: "silu_mul_backward",
  bindings: [
    { name: "gate", access: "read" }, // (T, I) forward input
    { name: "up", access: "read" }, // (T, I) forward input
    { name: "dOut", access: "read" }, // (T, I)
    { name: "dGate", access: "read_write" }, // (T, I)
    { name: "dUp", access: "read_write" }, // (T, I)
  ],
  params: ELEMENTWISE_PARAMS,
  wgsl: () =>
    elementwiseWgsl(`
let g = gate[i];
let d = dOut[i];
// σ(g); for g << 0, exp(-g) overflows to inf and σ is 0, so both gradients go to 0 cleanly.
let sig = 1.0 / (1.0 + exp(-g));
dUp[i] = d * (g * sig);
dGate[i] = d * up[i] * (sig * (1.0 + g * (1.0 - sig)));`),
};

/**
 * Records the backward of `out = silu(gate)·up`: writes `dGate` and `dUp` (no accumulate) over
 * `dOut.size` elements.
 *
 * @param step the step to record into
 * @param gate (T, I) forward gate input
 * @param up (T, I) forward up input
 * @param dOut (T, I) gradient of the output
 * @param dGate (T, I) gradient of gate (a different tensor from every input)
 * @param dUp (T, I) gradient of up (a different tensor from every input and from dGate)
 *
 * @example Backward through the middle of the MLP
 * ```ts ignore
 * siluMulBackward(step, gate, up, dHidden, dGate, dUp);
 * ```
 */
export function siluMulBackward(
  step: Step,
  gate: Tensor,
  up: Tensor,
  dOut: Tensor,
  dGate: Tensor,
  dUp: Tensor,
): void {
  const n = dOut.size;
  const named = [["gate", gate], ["up", up], ["dOut", dOut], ["dGate", dGate], ["dUp", dUp]] as const;
  for (const [name, t] of named) {
    if (t.dtype !== "f32") {
      throw new TypeError(`siluMulBackward: ${name} "${t.label}" must be f32, not ${t.dtype}`);
    }
    if (t.size < n) {
      throw new RangeError(
        `siluMulBackward: ${name} "${t.label}" has ${t.size} elements, fewer than dOut's ${n}`,
      );
    }
  }
  if (
    [gate, up, dOut, dUp].some((t) => t.buffer === dGate.buffer) ||
    [gate, up, dOut].some((t) => t.buffer === dUp.buffer)
  ) {
    throw new RangeError(
      `siluMulBackward: dGate "${dGate.label}" and dUp "${dUp.label}" must be tensors of their own`,
    );
  }
  if (n === 0) return;
  const { workgroups, rowStride } = grid1d(n, WG);
  step.dispatch(siluMulBackwardSpec, {
    variant: { WG },
    bindings: { gate, up, dOut, dGate, dUp },
    params: { n, rowStride },
    workgroups,
  });
}

/** Gradients returned by {@linkcode siluMulBackwardReference}. */
export interface SiluMulGradients {
  /** Gradient of gate. */
  dGate: Float32Array;
  /** Gradient of up. */
  dUp: Float32Array;
}

/**
 * CPU reference: the gradients of `silu(gate)·up` in f64, rounded to f32.
 *
 * @param gate gate values
 * @param up up values
 * @param dOut gradient of the output
 * @returns dGate and dUp
 *
 * @example At gate = 0, silu'(0) = 1/2 and silu(0) = 0
 * ```ts
 * import { siluMulBackwardReference } from "./silu_mul_backward.ts";
 * siluMulBackwardReference(new Float32Array([0]), new Float32Array([4]), new Float32Array([1]));
 * // { dGate: [2], dUp: [0] }
 * ```
 */
export function siluMulBackwardReference(
  gate: ArrayLike<number>,
  up: ArrayLike<number>,
  dOut: ArrayLike<number>,
): SiluMulGradients {
  const n = dOut.length;
  const dGate = new Float32Array(n);
  const dUp = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const g = gate[i];
    const sigmoid = 1 / (1 + Math.exp(-g));
    const silu = g * sigmoid;
    // d silu/dg = σ + g·σ·(1 − σ)
    const dSilu = sigmoid + g * sigmoid * (1 - sigmoid);
    dUp[i] = dOut[i] * silu;
    dGate[i] = dOut[i] * up[i] * dSilu;
  }
  return { dGate, dUp };
}
