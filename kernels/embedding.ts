/**
 * Token embedding lookup: `out[t] = table[tokens[tokenOffset + t]]`.
 *
 * Dimension letters: T tokens (rows written), C channels, V vocabulary. The table may be f32 or
 * f16 (f16 needs the adapter's `shader-f16`); the output is f32. A token id ≥ V reads nothing and
 * writes a row of zeros, so a corrupt or out-of-vocabulary id can never read out of bounds.
 *
 * @module
 */

import { type KernelSpec, type Step, Tensor } from "../core/mod.ts";
import { grid1d } from "./add.ts";
import { BF16_WGSL } from "./matmul.ts";

const WG = 64;

/**
 * out[t*C + c] = table[tokens[tokenOffset + t]*C + c] for t < rows, or 0 when the id is ≥ V.
 * One invocation per output element over a 2-D grid (`rowStride` as in {@linkcode grid1d}).
 *
 * Variant: `WG` (workgroup size), `F16` (table stored as f16), `V4` (elements are vec4s, C and n
 * count vec4s; used when C is a multiple of 4: fewer, wider loads).
 *
 * @example Dispatching the spec directly (prefer {@linkcode embeddingForward})
 * ```ts ignore
 * const { workgroups, rowStride } = grid1d((T * C) / 4, 64);
 * step.dispatch(embeddingSpec, {
 *   variant: { WG: 64, F16: false, BF16: false, V4: true },
 *   bindings: { table, tokens, out },
 *   params: { n: (T * C) / 4, rowStride, C: C / 4, V, tokenOffset: 0, vStart: 0, vTotal: V },
 *   workgroups,
 * });
 * ```
 */
export const embeddingSpec: KernelSpec = {
  name: "embedding",
  bindings: (variant) => [
    // (V, C); bf16 is read as packed u32 words: one per 2 values, vec2 per 4.
    {
      name: "table",
      access: "read",
      type: variant.BF16
        ? (variant.V4 ? "vec2<u32>" : "u32")
        : _vec(variant.F16 ? "f16" : "f32", variant.V4 === true),
    },
    { name: "tokens", access: "read", type: "u32" }, // (tokenOffset + T)
    { name: "out", access: "read_write", type: _vec("f32", variant.V4 === true) }, // (T, C)
  ],
  params: [
    { name: "n", type: "u32" }, // rows * C
    { name: "rowStride", type: "u32" },
    { name: "C", type: "u32" },
    { name: "V", type: "u32" }, // rows of this table (part)
    { name: "tokenOffset", type: "u32" },
    { name: "vStart", type: "u32" }, // first token id of this part
    { name: "vTotal", type: "u32" }, // vocabulary of the whole table
  ],
  wgsl: (variant) => `
alias E = ${_vec("f32", variant.V4 === true)};
${variant.BF16 ? BF16_WGSL : ""}
${
    variant.BF16
      ? variant.V4
        ? "fn row(e: u32) -> E { let p = table[e]; return E(unpackBf16(p.x), unpackBf16(p.y)); }"
        : "fn row(e: u32) -> E { return unpackBf16(table[e >> 1u])[e & 1u]; }"
      : "fn row(e: u32) -> E { return E(table[e]); }"
  }

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x + gid.y * P.rowStride;
  if (i >= P.n) { return; }
  let t = i / P.C;
  let c = i - t * P.C;
  let token = tokens[P.tokenOffset + t];
  // A table split by rows: each part writes the rows of its ids. Ids past the vocabulary get zeros
  // (from the first part) instead of a read past the table.
  if (token >= P.vStart && token - P.vStart < P.V) {
    out[i] = row((token - P.vStart) * P.C + c);
  } else if (P.vStart == 0u && token >= P.vTotal) {
    out[i] = E(0.0);
  }
}`,
};

/** `vec4<type>` or `type`. */
function _vec(type: string, v4: boolean): string {
  return v4 ? `vec4<${type}>` : type;
}

/** Options of {@linkcode embeddingForward}. */
export interface EmbeddingOptions {
  /** Index in `tokens` of the id for row 0 (default 0). */
  tokenOffset?: number;
  /** Number of rows to write (default `out.shape[0]`). */
  rows?: number;
}

/**
 * Records `out[t] = table[tokens[tokenOffset + t]]` for t < rows. Ids ≥ V give rows of zeros.
 *
 * @param step the step to record into
 * @param table (V, C) embedding table, f32, f16 or bf16
 * @param tokens u32 token ids; needs at least `tokenOffset + rows` elements
 * @param out (T, C) f32 output, T ≥ rows
 * @param options token offset and row count
 *
 * @example Embedding a block of 16 tokens starting at token 100 of a buffer
 * ```ts ignore
 * const step = new Step(gpu, "embed");
 * embeddingForward(step, table, tokens, x, { tokenOffset: 100, rows: 16 });
 * step.submit();
 * ```
 */
export function embeddingForward(
  step: Step,
  table: Tensor | readonly Tensor[],
  tokens: Tensor,
  out: Tensor,
  options: EmbeddingOptions = {},
): void {
  // A table split by rows (over one storage binding) is a list of parts, in order.
  const parts = table instanceof Tensor ? [table] : table;
  for (const p of parts) {
    if (p.shape.length !== 2 || (p.dtype !== "f32" && p.dtype !== "f16" && p.dtype !== "bf16")) {
      throw new TypeError(
        `embeddingForward: table "${p.label}" must be a (V, C) f32, f16 or bf16 tensor, not ` +
          `[${p.shape.join(", ")}] ${p.dtype}`,
      );
    }
  }
  const C = parts[0].shape[1];
  if (parts.some((p) => p.shape[1] !== C)) {
    throw new RangeError(`embeddingForward: the parts of table "${parts[0].label}" differ in width`);
  }
  const vTotal = parts.reduce((a, p) => a + p.shape[0], 0);
  const rows = options.rows ?? out.shape[0];
  const tokenOffset = options.tokenOffset ?? 0;
  if (tokens.dtype !== "u32") {
    throw new TypeError(`embeddingForward: tokens "${tokens.label}" must be u32, not ${tokens.dtype}`);
  }
  if (out.dtype !== "f32" || out.size < rows * C || out.shape[out.shape.length - 1] !== C) {
    throw new RangeError(
      `embeddingForward: out "${out.label}" [${out.shape.join(", ")}] ${out.dtype} cannot hold ${rows} f32 ` +
        `rows of ${C} channels`,
    );
  }
  if (!Number.isInteger(tokenOffset) || tokenOffset < 0 || tokenOffset + rows > tokens.size) {
    throw new RangeError(
      `embeddingForward: tokens ${tokenOffset}..${tokenOffset + rows - 1} are outside "${tokens.label}" ` +
        `of ${tokens.size} ids`,
    );
  }
  if (rows === 0) return;
  const v4 = C % 4 === 0;
  const width = v4 ? C / 4 : C; // in elements of the variant
  const n = rows * width;
  const { workgroups, rowStride } = grid1d(n, WG);
  let vStart = 0;
  for (const p of parts) {
    step.dispatch(embeddingSpec, {
      variant: { WG, F16: p.dtype === "f16", BF16: p.dtype === "bf16", V4: v4 },
      bindings: { table: p, tokens, out },
      params: { n, rowStride, C: width, V: p.shape[0], tokenOffset, vStart, vTotal },
      workgroups,
    });
    vStart += p.shape[0];
  }
}

/**
 * CPU reference: gathers rows of a (V, C) table; ids ≥ V give zero rows.
 *
 * @param table (V, C) values
 * @param C channels
 * @param tokens token ids
 * @param tokenOffset index of the id for row 0
 * @param rows rows to gather
 * @returns (rows, C) values
 *
 * @example Two tokens, one out of range
 * ```ts
 * import { embeddingReference } from "./embedding.ts";
 * const table = new Float32Array([1, 2, 3, 4]); // V = 2, C = 2
 * embeddingReference(table, 2, new Uint32Array([1, 7]), 0, 2); // Float32Array [3, 4, 0, 0]
 * ```
 */
export function embeddingReference(
  table: Float32Array,
  C: number,
  tokens: Uint32Array,
  tokenOffset: number,
  rows: number,
): Float32Array {
  const V = table.length / C;
  const out = new Float32Array(rows * C);
  for (let t = 0; t < rows; t++) {
    const id = tokens[tokenOffset + t];
    if (id >= V) continue; // out of vocabulary: the row stays zero
    for (let c = 0; c < C; c++) out[t * C + c] = table[id * C + c];
  }
  return out;
}
