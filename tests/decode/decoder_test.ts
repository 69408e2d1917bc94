import assert from "node:assert/strict";
import { type Decoder, decoderLabel, parseDecoder } from "../../decode/decoder.ts";

Deno.test("decoder labels and text forms: multiblock and recycling round-trip, bad settings are named", () => {
  const cases: [string, Decoder, string][] = [
    ["jacobi:n=8,blocks=2", { kind: "jacobi", blockSize: 8, blocks: 2 }, "jacobi n=8 blocks=2"],
    ["jacobi:n=16,recycle=2", { kind: "jacobi", blockSize: 16, recycle: 2 }, "jacobi n=16 recycle=2"],
    [
      "jacobi:n=8,blocks=2,recycle=1x4",
      { kind: "jacobi", blockSize: 8, blocks: 2, recycle: 1, recycleLength: 4 },
      "jacobi n=8 blocks=2 recycle=1x4",
    ],
    ["jacobi:n=8,blocks=1", { kind: "jacobi", blockSize: 8, blocks: 1 }, "jacobi n=8"],
  ];
  for (const [text, decoder, label] of cases) {
    assert.deepEqual(parseDecoder(text), decoder, text);
    assert.equal(decoderLabel(decoder), label, text);
    // The label parses back to a decoder with the same label.
    assert.equal(decoderLabel(parseDecoder(label)), label, label);
  }
  assert.throws(() => parseDecoder("jacobi:blocks=0"), /blocks needs a positive integer/);
  assert.throws(() => parseDecoder("jacobi:recycle=2xa"), /recycle length needs a positive integer/);
  assert.throws(() => parseDecoder("jacobi:pool=3"), /recycle=G/);
});
