/**
 * Fill: every element of a tensor set to one value (zeroing gradients and accumulators before a
 * training step's backward pass).
 *
 * @module
 */

import { f32ToF16Bits, type KernelSpec, type Step, type Tensor } from "../core/mod.ts";
import { grid1d } from "./add.ts";

const WG = 64;

/**
 * out[i] = bits for i < n, on 32-bit words: the host turns the value into the bit pattern of the
 * tensor's dtype (f32, i32, u32, or two f16 halves per word), so one pipeline serves every dtype.
 *
 * @example Dispatching the spec directly (prefer {@linkcode fillForward})
 * ```ts ignore
 * step.dispatch(fillSpec, { variant: { WG: 64 }, bindings: { out }, params: { n: 100, bits: 0, rowStride: 128 }, workgroups: [2, 1] });
 * ```
 */
export const fillSpec: KernelSpec = {
  name: "fill",
  bindings: [{ name: "out", access: "read_write", type: "u32" }],
  params: [
    { name: "n", type: "u32" }, // 32-bit words to write
    { name: "bits", type: "u32" }, // the word
    { name: "rowStride", type: "u32" }, // workgroups in x · WG (2-D grids for huge tensors)
  ],
  wgsl: () => `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * P.rowStride;
  if (i >= P.n) { return; }
  out[i] = P.bits;
}`,
};

/** The 32-bit word that holds `value` in `tensor`'s dtype (two copies for f16). */
function _fillWord(tensor: Tensor, value: number): number {
  const word = new DataView(new ArrayBuffer(4));
  switch (tensor.dtype) {
    case "f32":
      word.setFloat32(0, value, true);
      break;
    case "i32":
    case "u32": {
      const [lo, hi] = tensor.dtype === "i32" ? [-(2 ** 31), 2 ** 31 - 1] : [0, 2 ** 32 - 1];
      if (!Number.isInteger(value) || value < lo || value > hi) {
        throw new RangeError(`fillForward: ${tensor.dtype} tensor "${tensor.label}" cannot hold ${value}`);
      }
      word.setInt32(0, value | 0, true);
      break;
    }
    case "f16": {
      const bits = f32ToF16Bits(value);
      word.setUint16(0, bits, true);
      word.setUint16(2, bits, true);
      break;
    }
  }
  return word.getUint32(0, true);
}

/**
 * Records `tensor[i] = value` for every element (f32, i32, u32, or f16 with an even size).
 *
 * @param step the step to record into
 * @param tensor the tensor to fill
 * @param value the value (an integer for i32 and u32)
 *
 * @example Zeroing a gradient before accumulating into it
 * ```ts ignore
 * fillForward(step, dWeight, 0);
 * ```
 */
export function fillForward(step: Step, tensor: Tensor, value: number): void {
  if (tensor.dtype === "f16" && tensor.size % 2 !== 0) {
    throw new RangeError(
      `fillForward: f16 tensor "${tensor.label}" has an odd size ${tensor.size}; fills write pairs of halves`,
    );
  }
  const bits = _fillWord(tensor, value);
  const n = tensor.dtype === "f16" ? tensor.size / 2 : tensor.size;
  if (n === 0) return;
  const { workgroups, rowStride } = grid1d(n, WG);
  step.dispatch(fillSpec, {
    variant: { WG },
    bindings: { out: tensor },
    params: { n, bits, rowStride },
    workgroups,
  });
}

/**
 * CPU reference: an array of `n` copies of `value`.
 *
 * @example
 * ```ts
 * import { fillReference } from "./fill.ts";
 * fillReference(3, 0.5); // Float32Array [0.5, 0.5, 0.5]
 * ```
 */
export function fillReference(n: number, value: number): Float32Array {
  return new Float32Array(n).fill(value);
}
