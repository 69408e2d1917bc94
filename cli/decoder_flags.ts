/**
 * The decoder flags every command that decodes shares (`generate`, `chat`, `eval`, `bench
 * decode`), turned into one typed `Decoder` description (decode/decoder.ts), so each flag has one
 * meaning everywhere.
 *
 * @module
 */

import type { Decoder } from "../decode/decoder.ts";
import { parseDecoder } from "../decode/decoder.ts";
import type { ReadbackOptions } from "../decode/cadence.ts";
import { choiceOption, CliError, numberOption, type Options } from "./args.ts";

/** The flags, for `parse`. */
export const DECODER_FLAGS: Options = {
  decoder: { type: "string" },
  block: { type: "string" },
  sliding: { type: "boolean" },
  blocks: { type: "string" },
  recycle: { type: "string" },
  "recycle-length": { type: "string" },
  "guess-source": { type: "string" },
  ngram: { type: "string" },
  window: { type: "string" },
  candidates: { type: "string" },
  temperature: { type: "string" },
  "top-k": { type: "string" },
  "top-p": { type: "string" },
  seed: { type: "string" },
  "iterations-per-readback": { type: "string" },
  "iterations-behind-readback": { type: "string" },
};

/** Help lines of the flags (indent 2, as the commands' help texts). */
export const DECODER_HELP = `  --decoder ar|jacobi|lookahead
                            AR (default), Jacobi or lookahead decoding; greedy Jacobi and lookahead give
                            exactly greedy AR's text. The text form works too: jacobi:n=8,sliding
  --block N                 Jacobi block size n (default 16)
  --sliding                 Jacobi with a sliding window: refill the block after each partial acceptance
  --blocks K                Jacobi with K blocks in flight (multiblock): K·n rows per forward, a new
                            block entering whenever n places are free (default 1; not with --sliding)
  --recycle G               Jacobi with rejection recycling (greedy): G branches per forward continuing the
                            next token with the model's predictions from earlier iterations (default 0)
  --recycle-length C        tokens per recycled branch (default the block size)
  --guess-source random|context
                            new Jacobi guesses: random context tokens (default) or copied spans
  --ngram N --window W --candidates G
                            lookahead n-gram size, window and candidates per step (default 4, 5, 5)
  --temperature T           0 = greedy (default); > 0 samples, with any decoder (lossless: AR's law)
  --top-k K                 sample among the K most likely tokens, K ≥ 1 (default: all)
  --top-p P                 nucleus sampling mass in (0, 1] (default 1)
  --seed S                  seed of sampling and of the guesses (default 0)
  --iterations-per-readback N
                            decoder iterations (AR steps, Jacobi iterations, lookahead steps) before each
                            GPU readback, fixed (default: adaptive, as many as fill each readback's wait)
  --iterations-behind-readback N
                            iterations submitted behind each readback (fixed cadence; default 2-3)`;

/** The decoder, seed and readback cadence the flags describe. */
export interface DecoderChoice {
  /** The decoder. */
  decoder: Decoder;
  /** Seed of sampling and of the guesses. */
  seed: number;
  /** Readback cadence. */
  readback: ReadbackOptions;
}

/**
 * Builds the decoder from parsed flags; `defaults` gives the command's default decoder. Settings of
 * another decoder (e.g. `--block` with `--decoder lookahead`) are usage errors.
 */
export function decoderFromFlags(
  command: string,
  v: Record<string, unknown>,
  defaults: Decoder = { kind: "ar" },
): DecoderChoice {
  let decoder: Decoder;
  const raw = v.decoder as string | undefined;
  try {
    decoder = raw === undefined ? { ...defaults } : parseDecoder(raw);
  } catch (e) {
    throw new CliError(`${command}: --decoder: ${(e as Error).message}`);
  }
  const given = (name: string) => v[name] !== undefined && v[name] !== false;
  const only = (names: string[], kind: Decoder["kind"]) => {
    for (const n of names) {
      if (given(n) && decoder.kind !== kind) {
        throw new CliError(`${command}: --${n} is a ${kind} setting; it needs --decoder ${kind}`);
      }
    }
  };
  only(["block", "sliding", "blocks", "recycle", "recycle-length", "guess-source"], "jacobi");
  only(["ngram", "window", "candidates"], "lookahead");
  if (decoder.kind === "jacobi") {
    if (given("block")) decoder.blockSize = numberOption(v, "block", 16, { integer: true, min: 1, max: 64 });
    if (given("sliding")) decoder.sliding = true;
    if (given("blocks")) decoder.blocks = numberOption(v, "blocks", 1, { integer: true, min: 1, max: 8 });
    if (given("recycle")) decoder.recycle = numberOption(v, "recycle", 0, { integer: true, min: 0, max: 8 });
    if (given("recycle-length")) {
      decoder.recycleLength = numberOption(v, "recycle-length", 16, { integer: true, min: 2, max: 64 });
    }
    if (given("guess-source")) {
      decoder.guessSource = choiceOption(v, "guess-source", ["random", "context"] as const, "random");
    }
  } else if (decoder.kind === "lookahead") {
    if (given("ngram")) decoder.ngram = numberOption(v, "ngram", 4, { integer: true, min: 3 });
    if (given("window")) decoder.window = numberOption(v, "window", 5, { integer: true, min: 1 });
    if (given("candidates")) decoder.candidates = numberOption(v, "candidates", 5, { integer: true, min: 1 });
  }
  const temperature = numberOption(v, "temperature", 0, { min: 0 });
  const topK = given("top-k") ? numberOption(v, "top-k", 0, { integer: true, min: 1 }) : undefined;
  const topP = numberOption(v, "top-p", 1, { min: 0, max: 1 });
  if (given("top-p") && topP <= 0) throw new CliError(`${command}: --top-p must be in (0, 1], not ${topP}`);
  const seed = numberOption(v, "seed", 0, { integer: true });
  if (temperature > 0) decoder.sampling = { temperature, topK, topP, seed };
  else if (given("top-k") || given("top-p")) {
    throw new CliError(
      `${command}: --top-k and --top-p filter sampling; add --temperature T > 0 (0 is greedy)`,
    );
  }
  const count = (name: string) =>
    given(name)
      ? numberOption(v, name, 1, { integer: true, min: name.includes("behind") ? 0 : 1 })
      : undefined;
  return {
    decoder,
    seed,
    readback: {
      iterationsPerReadback: count("iterations-per-readback"),
      iterationsBehindReadback: count("iterations-behind-readback"),
    },
  };
}
