/**
 * A synthetic model for the sampling tests whose exact next-token distributions are known: the
 * logits of a row depend on its input token and its position modulo a period (a first-order
 * Markov chain whose table changes with position), looked up in a random table on the GPU in one
 * dispatch. Rows may sit at per-row positions (lookahead), so every decoder runs on it.
 *
 * @module
 */

import { type Gpu, type KernelSpec, type Step, Tensor } from "../../core/mod.ts";
import { argmaxForward } from "../../kernels/argmax.ts";
import { type ForwardArgs, KvCache } from "../../model/mod.ts";
import type { CausalLM } from "../../decode/generation.ts";
import { randomArray } from "../_assert.ts";

const markovSpec: KernelSpec = {
  name: "test_markov_logits",
  bindings: (variant) => [
    { name: "tokens", access: "read", type: "u32" },
    { name: "st", access: "read", type: "u32" },
    { name: "table", access: "read" },
    { name: "logits", access: "read_write" },
    ...(variant.REL ? [{ name: "rel", access: "read" as const, type: "u32" }] : []),
  ],
  params: [
    { name: "tokenOffset", type: "u32" },
    { name: "rows", type: "u32" },
    { name: "slot", type: "u32" },
    { name: "lastOnly", type: "u32" },
  ],
  wgsl: (variant) => `
@compute @workgroup_size(1)
fn main(@builtin(workgroup_id) wid: vec3<u32>) {
  let t = wid.x;
  if (t >= P.rows || (P.lastOnly == 1u && t != P.rows - 1u)) { return; }
  var pos = st[P.slot] + t;
  ${variant.REL ? "pos = st[P.slot] + rel[t];" : ""}
  let input = tokens[P.tokenOffset + t];
  let row = select(t, 0u, P.lastOnly == 1u);
  let o = ((pos % PERIOD) * VOCAB + input) * VOCAB;
  for (var v = 0u; v < VOCAB; v++) { logits[row * VOCAB + v] = table[o + v]; }
}`,
};

/** The Markov model: `logits(position, input) = table[position % period][input]`. */
export class MarkovModel implements CausalLM {
  readonly gpu: Gpu;
  readonly config: { vocabSize: number };
  readonly maxRows = 64;
  readonly maxLength = 512;
  readonly period: number;
  /** The table on the host: (period, V, V). */
  readonly table: Float32Array;
  readonly #table: Tensor;

  constructor(gpu: Gpu, vocabSize: number, period: number, seed: number, scale = 1.5) {
    this.gpu = gpu;
    this.config = { vocabSize };
    this.period = period;
    this.table = randomArray(period * vocabSize * vocabSize, seed, scale);
    this.#table = Tensor.from(gpu, this.table, [this.table.length], "markov table");
  }

  /** The logits of the token after `input` at `position`. */
  logitsAt(position: number, input: number): Float32Array {
    const V = this.config.vocabSize;
    const o = ((position % this.period) * V + input) * V;
    return this.table.slice(o, o + V);
  }

  createCache(maxLength: number): KvCache {
    return new KvCache(this.gpu, { layers: 0, kvHeads: 1, headDim: 2, maxLength });
  }

  forward(step: Step, args: ForwardArgs): void {
    const rel = args.relPositions;
    step.dispatch(markovSpec, {
      variant: { REL: rel !== undefined, PERIOD: this.period, VOCAB: this.config.vocabSize },
      bindings: {
        tokens: args.tokens,
        st: args.position.state,
        table: this.#table,
        logits: args.logits,
        ...(rel ? { rel } : {}),
      },
      params: {
        tokenOffset: args.tokenOffset,
        rows: args.rows,
        slot: args.position.slot,
        lastOnly: args.lastOnly ? 1 : 0,
      },
      workgroups: [args.rows],
    });
  }

  argmax(step: Step, logits: Tensor, out: Tensor, outOffset: number): void {
    argmaxForward(step, logits, out, { outOffset });
  }
}
