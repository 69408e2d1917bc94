/**
 * A synthetic "model" for decoder tests whose predictions are known exactly: at position p it
 * predicts target[p+1], except at one blind position where it is right only when its own input
 * token is right (otherwise it predicts a wrong token). Implements the decoders' CausalLM.
 *
 * @module
 */

import { type Gpu, type KernelSpec, type Step, Tensor } from "../../core/mod.ts";
import { argmaxForward } from "../../kernels/argmax.ts";
import { type ForwardArgs, KvCache } from "../../model/mod.ts";
import type { CausalLM } from "../../decode/generation.ts";

const oracleSpec: KernelSpec = {
  name: "oracle_logits",
  bindings: [
    { name: "tokens", access: "read", type: "u32" },
    { name: "st", access: "read", type: "u32" },
    { name: "goal", access: "read", type: "u32" },
    { name: "logits", access: "read_write" },
  ],
  params: [
    { name: "tokenOffset", type: "u32" },
    { name: "rows", type: "u32" },
    { name: "baseSlot", type: "u32" },
    { name: "V", type: "u32" },
    { name: "blind", type: "u32" },
    { name: "lastOnly", type: "u32" },
    { name: "wrong", type: "u32" },
  ],
  wgsl: () => `
@compute @workgroup_size(1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let t = gid.x;
  if (t >= P.rows || (P.lastOnly == 1u && t != P.rows - 1u)) { return; }
  let pos = st[P.baseSlot] + t;
  let input = tokens[P.tokenOffset + t];
  var predicted = goal[pos + 1u];
  if (pos == P.blind && input != goal[pos]) { predicted = P.wrong; }
  let row = select(t, 0u, P.lastOnly == 1u);
  for (var v = 0u; v < P.V; v++) { logits[row * P.V + v] = select(-1.0, 1.0, v == predicted); }
}`,
};

/** The oracle model over `target` (prompt followed by the text it "knows"). */
export class OracleModel implements CausalLM {
  readonly gpu: Gpu;
  readonly config: { vocabSize: number };
  readonly maxRows = 64;
  readonly maxLength: number;
  readonly #target: Tensor;
  readonly #blind: number;

  /**
   * @param gpu the device
   * @param target tokens by position: the prompt, then the continuation
   * @param vocabSize logit width (every target token must be below it, and V-1 is the wrong token)
   * @param blind the position whose prediction needs a correct input (-1 for none)
   */
  constructor(gpu: Gpu, target: number[], vocabSize: number, blind = -1) {
    this.gpu = gpu;
    this.config = { vocabSize };
    this.maxLength = target.length + 128;
    const padded = [...target, ...new Array(256).fill(vocabSize - 2)];
    this.#target = Tensor.from(gpu, Uint32Array.from(padded), [padded.length], "oracle target");
    this.#blind = blind < 0 ? 0xffffffff : blind;
  }

  createCache(maxLength: number): KvCache {
    return new KvCache(this.gpu, { layers: 0, kvHeads: 1, headDim: 2, maxLength });
  }

  forward(step: Step, args: ForwardArgs): void {
    step.dispatch(oracleSpec, {
      bindings: { tokens: args.tokens, st: args.position.state, goal: this.#target, logits: args.logits },
      params: {
        tokenOffset: args.tokenOffset,
        rows: args.rows,
        baseSlot: args.position.slot,
        V: this.config.vocabSize,
        blind: this.#blind,
        lastOnly: args.lastOnly ? 1 : 0,
        wrong: this.config.vocabSize - 1,
      },
      workgroups: [args.rows],
    });
  }

  argmax(step: Step, logits: Tensor, out: Tensor, outOffset: number): void {
    argmaxForward(step, logits, out, { outOffset });
  }
}

// ----------------------------------------------------------------------------------------------
// The oracle model with per-row positions

/** pos[t] = state[slot] + rel[t]: each row's absolute position, for the per-row oracle calls. */
const rowPositionsSpec: KernelSpec = {
  name: "test_row_positions",
  bindings: [
    { name: "state", access: "read", type: "u32" },
    { name: "rel", access: "read", type: "u32" },
    { name: "pos", access: "read_write", type: "u32" },
  ],
  params: [{ name: "slot", type: "u32" }, { name: "rows", type: "u32" }],
  wgsl: () => `
@compute @workgroup_size(1)
fn main() {
  for (var t = 0u; t < P.rows; t++) { pos[t] = state[P.slot] + rel[t]; }
}`,
};

/**
 * The OracleModel (it predicts target[p+1] at position p) where a forward with `relPositions`
 * places row t at base + rel[t]: each row is one oracle call at its own position, its logits
 * copied into row t. Without relPositions it is the plain oracle.
 */
export class RowOracle implements CausalLM {
  readonly gpu: Gpu;
  readonly config: { vocabSize: number };
  readonly maxRows: number;
  readonly maxLength: number;
  readonly #inner: OracleModel;
  readonly #pos: Tensor;
  readonly #row: Tensor;

  constructor(gpu: Gpu, target: number[], vocabSize: number) {
    this.#inner = new OracleModel(gpu, target, vocabSize);
    this.gpu = gpu;
    this.config = this.#inner.config;
    this.maxRows = this.#inner.maxRows;
    this.maxLength = this.#inner.maxLength;
    this.#pos = new Tensor(gpu, [this.maxRows], "u32", "oracle row positions");
    this.#row = new Tensor(gpu, [1, vocabSize], "f32", "oracle row logits");
  }

  createCache(maxLength: number): KvCache {
    return this.#inner.createCache(maxLength);
  }

  forward(step: Step, args: ForwardArgs): void {
    if (!args.relPositions) return this.#inner.forward(step, args);
    step.dispatch(rowPositionsSpec, {
      bindings: { state: args.position.state, rel: args.relPositions, pos: this.#pos },
      params: { slot: args.position.slot, rows: args.rows },
      workgroups: [1],
    });
    const V = this.config.vocabSize;
    for (let t = 0; t < args.rows; t++) {
      this.#inner.forward(step, {
        ...args,
        tokenOffset: args.tokenOffset + t,
        rows: 1,
        position: { state: this.#pos, slot: t },
        logits: this.#row,
        relPositions: undefined,
        mask: undefined,
      });
      step.copy(this.#row, 0, args.logits, t * V * 4, V * 4);
    }
  }

  argmax(step: Step, logits: Tensor, out: Tensor, outOffset: number): void {
    this.#inner.argmax(step, logits, out, outOffset);
  }
}
