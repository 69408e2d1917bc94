/**
 * The gated product of the Llama MLP: `out = silu(gate) * up`, elementwise, where
 * `silu(g) = g * sigmoid(g)`. The MLP is `down(silu(gate(x)) * up(x))`; the three matmuls are
 * separate kernels.
 *
 * Dimension letters: T rows, I intermediate channels.
 *
 * @module
 */

import type { KernelSpec, Step, Tensor } from "../core/mod.ts";
import { ELEMENTWISE_PARAMS, elementwiseWgsl, grid1d } from "./add.ts";

const WG = 64;

/**
 * out[i] = gate[i] * sigmoid(gate[i]) * up[i] for i < n, one invocation per element over a 2-D
 * grid (`rowStride` as in {@linkcode grid1d}). With variant `V4` the elements are vec4s (n counts
 * vec4s): on llvmpipe a vec4 load costs about 1.5 scalar loads, so this is ~2.5x faster.
 *
 * @example Dispatching the spec directly (prefer {@linkcode siluMulForward})
 * ```ts ignore
 * const { workgroups, rowStride } = grid1d(n / 4, 64);
 * step.dispatch(siluMulSpec, {
 *   variant: { WG: 64, V4: true },
 *   bindings: { gate, up, out },
 *   params: { n: n / 4, rowStride },
 *   workgroups,
 * });
 * ```
 */
export const siluMulSpec: KernelSpec = {
  name: "silu_mul",
  bindings: (variant) => [
    { name: "gate", access: "read", type: variant.V4 ? "vec4<f32>" : "f32" }, // (T, I)
    { name: "up", access: "read", type: variant.V4 ? "vec4<f32>" : "f32" }, // (T, I)
    { name: "out", access: "read_write", type: variant.V4 ? "vec4<f32>" : "f32" }, // (T, I)
  ],
  params: ELEMENTWISE_PARAMS,
  wgsl: () =>
    elementwiseWgsl(`
let g = gate[i];
// sigmoid(g) = 1 / (1 + exp(-g)); for g << 0, exp(-g) overflows to inf and the product is 0.
out[i] = g / (1.0 + exp(-g)) * up[i];`),
};

/**
 * Records `out = silu(gate) * up` over all elements of `out`.
 *
 * @param step the step to record into
 * @param gate (T, I) gate projection
 * @param up (T, I) up projection
 * @param out (T, I) output (a different tensor from both inputs)
 *
 * @example The middle of the MLP
 * ```ts ignore
 * matmulForward(step, xn, wGate, gate);
 * matmulForward(step, xn, wUp, up);
 * siluMulForward(step, gate, up, hidden);
 * matmulForward(step, hidden, wDown, proj);
 * ```
 */
export function siluMulForward(step: Step, gate: Tensor, up: Tensor, out: Tensor): void {
  const n = out.size;
  for (const [name, t] of [["gate", gate], ["up", up], ["out", out]] as const) {
    if (t.dtype !== "f32") {
      throw new TypeError(`siluMulForward: ${name} "${t.label}" must be f32, not ${t.dtype}`);
    }
    if (t.size < n) {
      throw new RangeError(
        `siluMulForward: ${name} "${t.label}" has ${t.size} elements, fewer than out's ${n}`,
      );
    }
  }
  if (n === 0) return;
  // vec4 elements when they tile n exactly (a view into a larger buffer must not be overrun).
  const v4 = n % 4 === 0;
  const count = v4 ? n / 4 : n;
  const { workgroups, rowStride } = grid1d(count, WG);
  step.dispatch(siluMulSpec, {
    variant: { WG, V4: v4 },
    bindings: { gate, up, out },
    params: { n: count, rowStride },
    workgroups,
  });
}

/**
 * CPU reference: `gate * sigmoid(gate) * up` in f64, rounded to f32.
 *
 * @param gate gate values
 * @param up up values
 * @returns the products
 *
 * @example
 * ```ts
 * import { siluMulReference } from "./silu_mul.ts";
 * siluMulReference(new Float32Array([0, 1]), new Float32Array([5, 2])); // ≈ [0, 1.4621]
 * ```
 */
export function siluMulReference(gate: Float32Array, up: Float32Array): Float32Array {
  const out = new Float32Array(gate.length);
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i];
    const sigmoid = 1 / (1 + Math.exp(-g));
    out[i] = g * sigmoid * up[i];
  }
  return out;
}
