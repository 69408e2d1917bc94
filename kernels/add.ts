/**
 * Residual add: `out = a + b`, elementwise (out may alias neither input; use `addInPlace` to
 * accumulate into `a`).
 *
 * @module
 */

import type { KernelSpec, Step, Tensor } from "../core/mod.ts";

const WG = 64;

/** The parameters of an element-wise kernel: the element count and the grid's x-row stride. */
export const ELEMENTWISE_PARAMS: KernelSpec["params"] = [{ name: "n", type: "u32" }, {
  name: "rowStride",
  type: "u32",
}];

/**
 * The WGSL of an element-wise kernel: one invocation per element `i < P.n` over the 2-D grid of
 * {@linkcode grid1d} (so sizes over 65535 workgroups still fit), running `body` for element `i`.
 *
 * @example
 * ```ts
 * import { elementwiseWgsl } from "./add.ts";
 * elementwiseWgsl("out[i] = a[i] + b[i];").includes("if (i >= P.n) { return; }"); // true
 * ```
 */
export function elementwiseWgsl(body: string): string {
  return `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * P.rowStride;
  if (i >= P.n) { return; }
  ${body.trim().split("\n").join("\n  ")}
}`;
}

/** out[i] = a[i] + b[i] for i < n. */
export const addSpec: KernelSpec = {
  name: "add",
  bindings: [
    { name: "a", access: "read" },
    { name: "b", access: "read" },
    { name: "out", access: "read_write" },
  ],
  params: ELEMENTWISE_PARAMS,
  wgsl: () => elementwiseWgsl("out[i] = a[i] + b[i];"),
};

/** a[i] += b[i] for i < n (residual connections update the stream in place). */
export const addInPlaceSpec: KernelSpec = {
  name: "add_in_place",
  bindings: [
    { name: "a", access: "read_write" },
    { name: "b", access: "read" },
  ],
  params: ELEMENTWISE_PARAMS,
  wgsl: () => elementwiseWgsl("a[i] = a[i] + b[i];"),
};

/**
 * Workgroup grid for `n` elements at `wg` invocations per workgroup, 2-D when `n` needs more than
 * 65535 workgroups. Returns the grid and the x-row stride in elements.
 */
export function grid1d(
  n: number,
  wg: number,
  maxPerDim = 65535,
): { workgroups: [number, number]; rowStride: number } {
  const groups = Math.max(1, Math.ceil(n / wg));
  const x = Math.min(groups, maxPerDim);
  const y = Math.ceil(groups / x);
  return { workgroups: [x, y], rowStride: x * wg };
}

/**
 * Records `out = a + b` over all elements of `out`.
 *
 * @example Adding two tensors
 * ```ts ignore
 * const step = new Step(gpu, "add");
 * addForward(step, a, b, out);
 * step.submit();
 * ```
 */
export function addForward(step: Step, a: Tensor, b: Tensor, out: Tensor): void {
  const n = out.size;
  const { workgroups, rowStride } = grid1d(n, WG);
  step.dispatch(addSpec, { variant: { WG }, bindings: { a, b, out }, params: { n, rowStride }, workgroups });
}

/**
 * Records `a += b` over all elements of `a`.
 *
 * @example Residual update
 * ```ts ignore
 * addInPlace(step, residual, attnOut);
 * ```
 */
export function addInPlace(step: Step, a: Tensor, b: Tensor): void {
  const n = a.size;
  const { workgroups, rowStride } = grid1d(n, WG);
  step.dispatch(addInPlaceSpec, {
    variant: { WG },
    bindings: { a, b },
    params: { n, rowStride },
    workgroups,
  });
}

/**
 * CPU reference: elementwise sum.
 *
 * @example
 * ```ts
 * import { addReference } from "./add.ts";
 * addReference(new Float32Array([1]), new Float32Array([2])); // Float32Array [3]
 * ```
 */
export function addReference(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i] + b[i];
  return out;
}
