/**
 * Backward of the token embedding lookup ({@linkcode embeddingForward} in `embedding.ts`):
 * `dTable[tokens[tokenOffset + t]] += dOut[t]` for every row t.
 *
 * Dimension letters: T tokens (rows), C channels, V vocabulary. Repeated tokens must add up, and
 * deterministically, so there are no float atomics: one invocation owns one channel c and walks the
 * rows in order, adding `dOut[t, c]` into `dTable[token_t, c]`. Two rows with the same token are
 * therefore summed by the same invocation, in row order, every run. Ids ≥ V contribute nothing,
 * matching the forward, which gives them rows of zeros.
 *
 * @module
 */

import type { KernelSpec, Step, Tensor } from "../core/mod.ts";
import { grid1d } from "./add.ts";

const WG = 64;

/**
 * For each channel c < C (one invocation each, 2-D grid as in {@linkcode grid1d}) and each row
 * t < rows in order: `dTable[tokens[tokenOffset + t]*C + c] += dOut[t*C + c]` when the id is < V.
 *
 * @example Dispatching the spec directly (prefer {@linkcode embeddingBackward})
 * ```ts ignore
 * const { workgroups, rowStride } = grid1d(C, 64);
 * step.dispatch(embeddingBackwardSpec, {
 *   variant: { WG: 64 },
 *   bindings: { tokens, dOut, dTable },
 *   params: { rows: T, rowStride, C, V, tokenOffset: 0 },
 *   workgroups,
 * });
 * ```
 */
export const embeddingBackwardSpec: KernelSpec = {
  name: "embedding_backward",
  bindings: [
    { name: "tokens", access: "read", type: "u32" }, // (tokenOffset + T)
    { name: "dOut", access: "read" }, // (T, C)
    { name: "dTable", access: "read_write" }, // (V, C), accumulated
  ],
  params: [
    { name: "rows", type: "u32" }, // T
    { name: "rowStride", type: "u32" },
    { name: "C", type: "u32" },
    { name: "V", type: "u32" },
    { name: "tokenOffset", type: "u32" },
  ],
  wgsl: () => `
@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x + gid.y * P.rowStride;
  if (c >= P.C) { return; }
  // Rows in order: repeated tokens are summed by this invocation alone, in the same order every run.
  for (var t = 0u; t < P.rows; t++) {
    let token = tokens[P.tokenOffset + t];
    if (token < P.V) {
      let i = token * P.C + c;
      dTable[i] = dTable[i] + dOut[t * P.C + c];
    }
  }
}`,
};

/** Options of {@linkcode embeddingBackward} (those of the forward it undoes). */
export interface EmbeddingBackwardOptions {
  /** Index in `tokens` of the id for row 0 (default 0). */
  tokenOffset?: number;
  /** Number of rows (default `dOut.shape[0]`). */
  rows?: number;
}

/**
 * Records `dTable[tokens[tokenOffset + t]] += dOut[t]` for t < rows (always accumulates; zero
 * `dTable` first for a fresh gradient). Ids ≥ V are skipped.
 *
 * @param step the step to record into
 * @param tokens u32 token ids; needs at least `tokenOffset + rows` elements
 * @param dOut (T, C) gradient of the embedding output, T ≥ rows
 * @param dTable (V, C) f32 gradient of the table, accumulated into
 * @param options token offset and row count (default `dOut.shape[0]` rows)
 *
 * @example The embedding's share of a training step's backward pass
 * ```ts ignore
 * const step = new Step(gpu, "backward");
 * // ... backward through the layers down to dx (T, C) ...
 * embeddingBackward(step, tokens, dx, dEmbed, { tokenOffset: 0, rows: T });
 * step.submit();
 * ```
 */
export function embeddingBackward(
  step: Step,
  tokens: Tensor,
  dOut: Tensor,
  dTable: Tensor,
  options: EmbeddingBackwardOptions = {},
): void {
  const [V, C] = dTable.shape;
  const rows = options.rows ?? dOut.shape[0];
  const tokenOffset = options.tokenOffset ?? 0;
  if (dTable.shape.length !== 2 || dTable.dtype !== "f32") {
    throw new TypeError(
      `embeddingBackward: dTable "${dTable.label}" must be a (V, C) f32 tensor, not ` +
        `[${dTable.shape.join(", ")}] ${dTable.dtype}`,
    );
  }
  if (tokens.dtype !== "u32") {
    throw new TypeError(`embeddingBackward: tokens "${tokens.label}" must be u32, not ${tokens.dtype}`);
  }
  if (dOut.dtype !== "f32" || dOut.size < rows * C || dOut.shape[dOut.shape.length - 1] !== C) {
    throw new RangeError(
      `embeddingBackward: dOut "${dOut.label}" [${dOut.shape.join(", ")}] ${dOut.dtype} does not hold ` +
        `${rows} f32 rows of ${C} channels`,
    );
  }
  if (!Number.isInteger(rows) || rows < 0) {
    throw new RangeError(`embeddingBackward: rows must be a non-negative integer, not ${rows}`);
  }
  if (!Number.isInteger(tokenOffset) || tokenOffset < 0 || tokenOffset + rows > tokens.size) {
    throw new RangeError(
      `embeddingBackward: tokens ${tokenOffset}..${tokenOffset + rows - 1} are outside "${tokens.label}" ` +
        `of ${tokens.size} ids`,
    );
  }
  if (dTable.buffer === dOut.buffer || dTable.buffer === tokens.buffer) {
    throw new RangeError(`embeddingBackward: dTable "${dTable.label}" must be a tensor of its own`);
  }
  if (rows === 0 || C === 0) return;
  const { workgroups, rowStride } = grid1d(C, WG);
  step.dispatch(embeddingBackwardSpec, {
    variant: { WG },
    bindings: { tokens, dOut, dTable },
    params: { rows, rowStride, C, V, tokenOffset },
    workgroups,
  });
}

/**
 * CPU reference: scatter-adds rows of `dOut` into a copy of `dTable`, in f64 per element.
 *
 * @param tokens token ids
 * @param dOut (rows, C) gradient of the embedding output
 * @param dTable (V, C) initial gradient of the table (not modified)
 * @param C channels
 * @param options token offset (default 0) and row count (default `dOut.length / C`)
 * @returns (V, C) `dTable` plus the scattered rows; ids ≥ V add nothing
 *
 * @example A repeated token sums its rows
 * ```ts
 * import { embeddingBackwardReference } from "./embedding_backward.ts";
 * const dTable = new Float32Array(4); // V = 2, C = 2
 * embeddingBackwardReference(new Uint32Array([1, 1]), new Float32Array([1, 2, 3, 4]), dTable, 2);
 * // Float32Array [0, 0, 4, 6]
 * ```
 */
export function embeddingBackwardReference(
  tokens: Uint32Array,
  dOut: ArrayLike<number>,
  dTable: ArrayLike<number>,
  C: number,
  options: EmbeddingBackwardOptions = {},
): Float32Array {
  const tokenOffset = options.tokenOffset ?? 0;
  const rows = options.rows ?? dOut.length / C;
  const V = dTable.length / C;
  // Accumulate in f64, starting from the given gradient, then round once.
  const acc = Float64Array.from(dTable);
  for (let t = 0; t < rows; t++) {
    const id = tokens[tokenOffset + t];
    if (id >= V) continue; // out of vocabulary: the forward read nothing
    for (let c = 0; c < C; c++) acc[id * C + c] += dOut[t * C + c];
  }
  return Float32Array.from(acc);
}
