import { seededRandom } from "../../core/random.ts";
import assert from "node:assert/strict";
import { blobSource, bufferSource, type ByteSource } from "../../model/byte_source.ts";
import { directoryOpener, fileSource, writeSafetensors } from "../../model/deno_files.ts";
import { FormatError } from "../../model/format_error.ts";
import {
  bf16ToF32,
  encodeSafetensors,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  openCheckpointTensors,
  openSafetensors,
  type TensorToWrite,
} from "../../model/safetensors.ts";

// ---------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------

const mulberry32 = seededRandom;

/** f32 value of a bit pattern. */
function fromBits(bits: number): number {
  return new Float32Array(new Uint32Array([bits >>> 0]).buffer)[0];
}

/** A safetensors file from an arbitrary header value (not necessarily valid) and data bytes. */
function rawFile(header: unknown, data: Uint8Array | number, lengthOverride?: bigint): Uint8Array {
  const json = new TextEncoder().encode(typeof header === "string" ? header : JSON.stringify(header));
  const body = typeof data === "number" ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + json.length + body.length);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(body, 8 + json.length);
  return out;
}

/** Asserts that `fn` rejects with a FormatError whose message contains every fragment. */
async function rejectsFormat(fn: () => Promise<unknown>, ...fragments: string[]): Promise<FormatError> {
  let caught: unknown = undefined;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(
    caught !== undefined,
    `expected a FormatError containing ${JSON.stringify(fragments)}, got success`,
  );
  assert.ok(caught instanceof FormatError, `expected FormatError, got ${String(caught)}`);
  for (const frag of fragments) {
    assert.ok(
      caught.message.includes(frag),
      `message ${JSON.stringify(caught.message)} lacks ${JSON.stringify(frag)}`,
    );
  }
  return caught;
}

function open(name: string, bytes: Uint8Array): Promise<unknown> {
  return openSafetensors(bufferSource(name, bytes));
}

const product = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** A small valid file: mixed dtypes, a 2-D tensor, a scalar and an empty tensor. */
function sampleTensors(): TensorToWrite[] {
  return [
    { name: "a", dtype: "F32", shape: [2, 3], data: new Float32Array([1, -2, 3.5, 1e-40, -3e38, 0]) },
    { name: "b", dtype: "F16", shape: [4], data: new Float32Array([0.5, -1, 65504, 2 ** -24]) },
    { name: "c", dtype: "BF16", shape: [3, 1], data: new Float32Array([1, -256, 1e30]) },
    { name: "s", dtype: "F32", shape: [], data: new Float32Array([7]) },
    { name: "empty", dtype: "F16", shape: [0, 5], data: new Float32Array(0) },
  ];
}

// ---------------------------------------------------------------------------------------------------
// Float conversions
// ---------------------------------------------------------------------------------------------------

Deno.test("f16ToF32 decodes zeros, subnormals, normals, inf and NaN", () => {
  const h = new Uint16Array([
    0x0000,
    0x8000,
    0x0001,
    0x03ff,
    0x0400,
    0x3c00,
    0xc000,
    0x7bff,
    0x7c00,
    0xfc00,
    0x7e00,
  ]);
  const f = f16ToF32(h);
  assert.deepEqual(Array.from(f.subarray(0, 10)), [
    0,
    -0,
    2 ** -24,
    1023 * 2 ** -24,
    2 ** -14,
    1,
    -2,
    65504,
    Infinity,
    -Infinity,
  ]);
  assert.ok(Object.is(f[1], -0), "negative zero keeps its sign");
  assert.ok(Number.isNaN(f[10]));
});

/** Independent reference: the nearest of all f16 values by brute-force search, ties to even bits. */
function f16Reference(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const ax = Math.abs(x);
  // Candidates: every non-negative f16 bit pattern in value order; 0x7c00 stands for the step past
  // 65504 (2^16), which is what IEEE rounding compares against before overflowing to inf.
  let best = 0;
  let bestDist = Infinity;
  for (let h = 0; h <= 0x7c00; h++) {
    const v = h === 0x7c00
      ? 65536
      : (h >> 10 === 0 ? (h & 0x3ff) * 2 ** -24 : (1 + (h & 0x3ff) / 1024) * 2 ** ((h >> 10) - 15));
    const d = Math.abs(v - ax);
    if (d < bestDist || (d === bestDist && (h & 1) === 0)) {
      best = h;
      bestDist = d;
    }
  }
  return sign | best;
}

Deno.test("f32ToF16 rounds to nearest even, matching a brute-force reference", () => {
  const rng = mulberry32(1234);
  const inputs: number[] = [
    1 + 2 ** -11, // tie → 1 (even)
    1 + 3 * 2 ** -11, // tie → 1 + 2^-9 (even)
    65519,
    65520, // tie between 65504 and 2^16 → inf
    2 ** -25, // half the smallest subnormal: tie → 0
    1.5 * 2 ** -25,
    3 * 2 ** -25, // tie between 1 and 2 ulps → 2
    2 ** -14 - 2 ** -25, // rounds up into the smallest normal
    -0,
    1e-8,
    -1e9,
    Infinity,
    -Infinity,
  ];
  for (let i = 0; i < 3000; i++) {
    // Exponents from deep-subnormal f16 to beyond the f16 range, random fraction and sign.
    const exp = 127 - 28 + Math.floor(rng() * 46);
    const bits = ((rng() < 0.5 ? 1 : 0) << 31) | (exp << 23) | Math.floor(rng() * 0x800000);
    inputs.push(fromBits(bits));
  }
  const got = f32ToF16(new Float32Array(inputs));
  for (let i = 0; i < inputs.length; i++) {
    const want = Math.abs(inputs[i]) === Infinity
      ? (inputs[i] > 0 ? 0x7c00 : 0xfc00)
      : f16Reference(inputs[i]);
    assert.equal(
      got[i],
      want,
      `f32ToF16(${inputs[i]}) = 0x${got[i].toString(16)}, want 0x${want.toString(16)}`,
    );
  }
});

Deno.test("f16 → f32 → f16 is the identity on every non-NaN pattern; NaN stays NaN", () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const back = f32ToF16(f16ToF32(all));
  for (let h = 0; h < 65536; h++) {
    const isNaN = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
    if (isNaN) assert.ok((back[h] & 0x7c00) === 0x7c00 && (back[h] & 0x3ff) !== 0, `NaN 0x${h.toString(16)}`);
    else assert.equal(back[h], h, `pattern 0x${h.toString(16)}`);
  }
});

Deno.test("bf16 conversions: exact decode, round to nearest even, NaN stays NaN", () => {
  assert.deepEqual(Array.from(bf16ToF32(new Uint16Array([0x3f80, 0xc000, 0x7f80, 0x0001]))), [
    1,
    -2,
    Infinity,
    fromBits(0x00010000),
  ]);
  const bits = [
    0x3f808000,
    0x3f818000,
    0x3f808001,
    0x3f807fff,
    0x7f7fffff,
    0x7f800001,
    0xffc00000,
    0x80000000,
  ];
  const want = [0x3f80, 0x3f82, 0x3f81, 0x3f80, 0x7f80];
  const got = f32ToBf16(new Float32Array(new Uint32Array(bits).buffer));
  assert.deepEqual(Array.from(got.subarray(0, 5)), want);
  assert.ok(Number.isNaN(bf16ToF32(got.subarray(5, 6))[0]), "signalling NaN must not become inf");
  assert.ok(Number.isNaN(bf16ToF32(got.subarray(6, 7))[0]));
  assert.equal(got[7], 0x8000, "negative zero keeps its sign");
  // Every non-NaN bf16 pattern survives bf16 → f32 → bf16.
  const all = new Uint16Array(65536).map((_, i) => i);
  const back = f32ToBf16(bf16ToF32(all));
  for (let h = 0; h < 65536; h++) {
    if ((h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0) continue;
    assert.equal(back[h], h);
  }
});

// ---------------------------------------------------------------------------------------------------
// Byte sources
// ---------------------------------------------------------------------------------------------------

Deno.test("byte sources read exact ranges and refuse ranges outside the source", async () => {
  const bytes = new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/x.bin`, bytes);
    const sources: ByteSource[] = [
      bufferSource("x.bin", bytes),
      bufferSource("x.bin", bytes.buffer),
      blobSource(new Blob([bytes])),
      blobSource(new File([bytes], "x.bin")),
      await fileSource(`${dir}/x.bin`),
    ];
    for (const src of sources) {
      assert.equal(src.size, 10);
      assert.deepEqual(Array.from(await src.read(3, 4)), [3, 4, 5, 6]);
      assert.deepEqual(Array.from(await src.read(10, 0)), []);
      await assert.rejects(() => src.read(8, 3), RangeError);
      await assert.rejects(() => src.read(-1, 2), RangeError);
    }
    assert.equal(sources[3].name, "x.bin", "blobSource uses File.name");
    // A file that shrinks after opening is reported, not padded with zeros.
    const src = await fileSource(`${dir}/x.bin`);
    await Deno.truncate(`${dir}/x.bin`, 5);
    await rejectsFormat(() => src.read(2, 6), "x.bin", "file ended at byte 5");
    // Directory opener: missing files are null.
    const openByName = directoryOpener(dir);
    assert.equal(await openByName("missing.bin"), null);
    assert.equal((await openByName("x.bin"))?.size, 5);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------------

Deno.test("write → read round trip for F32, F16 and BF16 through a file on disk", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/model.safetensors`;
    const f16Values = [
      0,
      -0,
      1,
      -1.5,
      65504,
      -65504,
      2 ** -24,
      1023 * 2 ** -24,
      1e-8,
      70000,
      Infinity,
      -Infinity,
      0.1,
    ];
    const bf16Values = [1, -2, 1e-30, 3e38, -1e-38, 0.1, Infinity, 12345.678];
    const f32Values = [0, -1, 1e-45, 1e-40, 3.4e38, -3.4e38, Math.PI, -0.1, Infinity];
    await writeSafetensors(path, [
      { name: "f32", dtype: "F32", shape: [3, 3], data: new Float32Array(f32Values) },
      { name: "f16", dtype: "F16", shape: [f16Values.length], data: new Float32Array(f16Values) },
      { name: "bf16", dtype: "BF16", shape: [2, 4], data: new Float32Array(bf16Values) },
      { name: "raw16", dtype: "F16", shape: [2], data: new Uint16Array([0x3c00, 0x7bff]) },
    ], { format: "pt", note: "round trip" });
    // Only the final file is left: the temporary file was renamed away.
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["model.safetensors"]);

    const file = await openSafetensors(await fileSource(path));
    assert.deepEqual(file.metadata, { format: "pt", note: "round trip" });
    assert.equal(file.dataStart % 8, 0, "header is padded to a multiple of 8");
    assert.deepEqual([...file.tensors.keys()], ["f32", "f16", "bf16", "raw16"]);

    const f32 = await file.readTensor("f32");
    assert.deepEqual(f32.shape, [3, 3]);
    assert.equal(f32.dtype, "F32");
    assert.deepEqual(Array.from(f32.data), Array.from(new Float32Array(f32Values)));

    const f16 = await file.readTensor("f16");
    const f16Want = [
      0,
      -0,
      1,
      -1.5,
      65504,
      -65504,
      2 ** -24,
      1023 * 2 ** -24,
      0,
      Infinity,
      Infinity,
      -Infinity,
    ];
    assert.deepEqual(Array.from(f16.data.subarray(0, 12)), f16Want);
    assert.ok(Object.is(f16.data[1], -0));
    assert.ok(
      Math.abs(f16.data[12] - 0.1) < 1e-4 && f16.data[12] !== Math.fround(0.1),
      "0.1 is rounded to f16",
    );

    const bf16 = await file.readTensor("bf16");
    for (let i = 0; i < bf16Values.length; i++) {
      const v = bf16Values[i];
      if (v === Infinity) assert.equal(bf16.data[i], Infinity);
      else {assert.ok(
          Math.abs(bf16.data[i] - v) <= Math.abs(v) * 2 ** -8,
          `bf16[${i}] = ${bf16.data[i]} vs ${v}`,
        );}
    }
    assert.equal(bf16.data[0], 1);
    assert.equal(bf16.data[1], -2);

    assert.deepEqual(Array.from((await file.readTensor("raw16")).data), [1, 65504]);
    assert.deepEqual(Array.from(await file.readRaw("raw16")), [0x00, 0x3c, 0xff, 0x7b]);

    // The same bytes through a Blob give the same tensors.
    const blobFile = await openSafetensors(
      blobSource(new Blob([await Deno.readFile(path)]), "blob.safetensors"),
    );
    assert.deepEqual((await blobFile.readTensor("bf16")).data, bf16.data);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("encodeSafetensors lays tensors out in order and its header parses", async () => {
  const bytes = encodeSafetensors(sampleTensors());
  const file = await openSafetensors(bufferSource("sample.safetensors", bytes));
  assert.deepEqual(file.metadata, {});
  let offset = 0;
  for (const t of sampleTensors()) {
    const info = file.tensors.get(t.name)!;
    assert.equal(info.begin, offset);
    offset = info.end;
    const back = await file.readTensor(t.name);
    assert.deepEqual(back.shape, t.shape);
    assert.equal(back.data.length, product(t.shape));
  }
  assert.equal(file.dataStart + offset, bytes.length, "data section ends at the end of the file");
  assert.deepEqual(Array.from((await file.readTensor("s")).data), [7]);
});

Deno.test("openSafetensors reads only the header, then only the requested tensor's bytes", async () => {
  const bytes = encodeSafetensors([
    { name: "big", dtype: "F32", shape: [1000], data: new Float32Array(1000) },
    { name: "small", dtype: "F16", shape: [3], data: new Float32Array([1, 2, 3]) },
  ]);
  const inner = bufferSource("count.safetensors", bytes);
  const reads: [number, number][] = [];
  const counting: ByteSource = {
    name: inner.name,
    size: inner.size,
    read(offset, length) {
      reads.push([offset, length]);
      return inner.read(offset, length);
    },
  };
  const file = await openSafetensors(counting);
  assert.deepEqual(reads, [[0, 8], [8, file.dataStart - 8]]);
  reads.length = 0;
  assert.deepEqual(Array.from((await file.readTensor("small")).data), [1, 2, 3]);
  assert.deepEqual(reads, [[file.dataStart + 4000, 6]]);
});

Deno.test("encodeSafetensors refuses bad arguments with errors that name the output", () => {
  const t = (over: Partial<TensorToWrite>): TensorToWrite[] => [
    { name: "w", dtype: "F32", shape: [2], data: new Float32Array(2), ...over },
  ];
  assert.throws(() => encodeSafetensors(t({ shape: [3] }), {}, "out.safetensors"), /out\.safetensors.*3/);
  assert.throws(() => encodeSafetensors(t({ shape: [-2] })), RangeError);
  assert.throws(() => encodeSafetensors(t({ data: new Uint16Array(2) })), TypeError);
  assert.throws(() => encodeSafetensors(t({ name: "__metadata__" })), /reserved/);
  assert.throws(() => encodeSafetensors([...t({}), ...t({})]), /repeated/);
  assert.throws(() => encodeSafetensors(t({}), { n: 1 as unknown as string }), /metadata "n"/);
  assert.throws(() => encodeSafetensors(t({ dtype: "I32" as "F32" })), /F32, F16 or BF16/);
});

Deno.test("writeSafetensors validates before touching the disk", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(() =>
      writeSafetensors(`${dir}/bad.safetensors`, [
        { name: "w", dtype: "F16", shape: [3], data: new Float32Array(2) },
      ]), RangeError);
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------------
// Sharded checkpoints
// ---------------------------------------------------------------------------------------------------

Deno.test("openCheckpointTensors reads a sharded checkpoint through its index", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const s1 = "model-00001-of-00002.safetensors";
    const s2 = "model-00002-of-00002.safetensors";
    await writeSafetensors(`${dir}/${s1}`, [
      {
        name: "model.embed_tokens.weight",
        dtype: "F16",
        shape: [4, 2],
        data: new Float32Array([1, 2, 3, 4, 5, 6, 7, 8]),
      },
      { name: "model.norm.weight", dtype: "F32", shape: [2], data: new Float32Array([0.5, 0.25]) },
    ]);
    await writeSafetensors(`${dir}/${s2}`, [
      {
        name: "lm_head.weight",
        dtype: "BF16",
        shape: [4, 2],
        data: new Float32Array([-1, -2, -3, -4, -5, -6, -7, -8]),
      },
    ]);
    const index = {
      metadata: { total_size: 40 },
      weight_map: { "model.embed_tokens.weight": s1, "model.norm.weight": s1, "lm_head.weight": s2 },
    };
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify(index));

    const ckpt = await openCheckpointTensors(directoryOpener(dir));
    assert.deepEqual(ckpt.names(), ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]);
    assert.ok(ckpt.has("lm_head.weight"));
    assert.ok(!ckpt.has("model.layers.0.mlp.up_proj.weight"));
    assert.equal(ckpt.get("lm_head.weight")?.shard, s2);
    assert.deepEqual(ckpt.get("lm_head.weight")?.shape, [4, 2]);
    assert.equal(ckpt.get("nope"), undefined);
    assert.deepEqual(Array.from((await ckpt.readTensor("lm_head.weight")).data), [
      -1,
      -2,
      -3,
      -4,
      -5,
      -6,
      -7,
      -8,
    ]);
    assert.deepEqual(Array.from((await ckpt.readTensor("model.norm.weight")).data), [0.5, 0.25]);
    assert.equal(ckpt.files.size, 2);
    await rejectsFormat(() => ckpt.readTensor("nope"), "model.safetensors.index.json", 'tensor "nope"');

    // A single model.safetensors wins over the index.
    await writeSafetensors(`${dir}/model.safetensors`, [
      { name: "only", dtype: "F32", shape: [1], data: new Float32Array([9]) },
    ]);
    const single = await openCheckpointTensors(directoryOpener(dir));
    assert.deepEqual(single.names(), ["only"]);
    assert.equal(single.get("only")?.shard, "model.safetensors");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openCheckpointTensors refuses missing files, missing shards and bad indexes", async () => {
  const shard = encodeSafetensors([{ name: "w", dtype: "F32", shape: [1], data: new Float32Array([1]) }]);
  const opener = (files: Record<string, Uint8Array | string>) => (name: string) => {
    const f = files[name];
    if (f === undefined) return Promise.resolve(null);
    return Promise.resolve(bufferSource(name, typeof f === "string" ? new TextEncoder().encode(f) : f));
  };
  const idx = "model.safetensors.index.json";
  await rejectsFormat(() => openCheckpointTensors(opener({})), "neither model.safetensors nor");
  await rejectsFormat(
    () => openCheckpointTensors(opener({ [idx]: JSON.stringify({ weight_map: { w: "a.safetensors" } }) })),
    idx,
    'shard "a.safetensors"',
    "missing",
  );
  await rejectsFormat(
    () =>
      openCheckpointTensors(
        opener({ [idx]: JSON.stringify({ weight_map: { v: "a.safetensors" } }), "a.safetensors": shard }),
      ),
    idx,
    'tensor "v"',
    "does not contain it",
  );
  await rejectsFormat(
    () => openCheckpointTensors(opener({ [idx]: "{not json" })),
    idx,
    "not valid UTF-8 JSON",
  );
  await rejectsFormat(() => openCheckpointTensors(opener({ [idx]: "[]" })), idx, "must be a JSON object");
  await rejectsFormat(
    () => openCheckpointTensors(opener({ [idx]: "{}" })),
    idx,
    '"weight_map" must be an object',
  );
  await rejectsFormat(
    () => openCheckpointTensors(opener({ [idx]: JSON.stringify({ weight_map: { w: 3 } }) })),
    idx,
    'tensor "w"',
    "must be a file name",
  );
  await rejectsFormat(
    () =>
      openCheckpointTensors(
        opener({ [idx]: JSON.stringify({ weight_map: { w: "../secret.safetensors" } }) }),
      ),
    idx,
    "not a plain file name",
  );
  await rejectsFormat(
    () => openCheckpointTensors(opener({ [idx]: JSON.stringify({ weight_map: {} }) })),
    idx,
    "is empty",
  );
  // A corrupt shard is reported under the shard's own name.
  await rejectsFormat(
    () =>
      openCheckpointTensors(
        opener({
          [idx]: JSON.stringify({ weight_map: { w: "a.safetensors" } }),
          "a.safetensors": shard.slice(0, 20),
        }),
      ),
    '"a.safetensors"',
    "exceeds file size",
  );
});

// ---------------------------------------------------------------------------------------------------
// Bad input: one test per problem, each naming the file and the problem
// ---------------------------------------------------------------------------------------------------

Deno.test("openSafetensors refuses truncated prefixes and bad header lengths", async () => {
  await rejectsFormat(
    () => open("t.safetensors", new Uint8Array(5)),
    '"t.safetensors"',
    "5 bytes, shorter than",
  );
  await rejectsFormat(() => open("t.safetensors", new Uint8Array(0)), "0 bytes");
  await rejectsFormat(
    () => open("t.safetensors", rawFile({}, 0, 100n)),
    "header length 100 exceeds file size 10",
  );
  await rejectsFormat(
    () => open("t.safetensors", rawFile({}, 0, 1n << 63n)),
    "over the 100000000-byte limit",
  );
  // Truncating a valid file anywhere inside the header or data fails.
  const good = encodeSafetensors(sampleTensors());
  for (const len of [8, 9, 40, good.length - 1]) {
    await rejectsFormat(() => open("t.safetensors", good.slice(0, len)), '"t.safetensors"', "truncated");
  }
});

Deno.test("openSafetensors refuses headers that are not UTF-8 JSON objects", async () => {
  const bad = rawFile("{}", 0);
  bad[8] = 0xff;
  await rejectsFormat(() => open("h.safetensors", bad), '"h.safetensors"', "not valid UTF-8");
  await rejectsFormat(() => open("h.safetensors", rawFile('{"a": ', 0)), "header is not valid JSON");
  await rejectsFormat(() => open("h.safetensors", rawFile("", 0)), "header is not valid JSON");
  await rejectsFormat(() => open("h.safetensors", rawFile("[1, 2]", 0)), "header must be a JSON object");
  await rejectsFormat(() => open("h.safetensors", rawFile("null", 0)), "header must be a JSON object");
  await rejectsFormat(() => open("h.safetensors", rawFile('"x"', 0)), "header must be a JSON object");
  await rejectsFormat(
    () => open("h.safetensors", rawFile("[".repeat(100000), 0)),
    "header is not valid JSON",
  );
});

Deno.test("openSafetensors validates __metadata__", async () => {
  await rejectsFormat(
    () => open("m.safetensors", rawFile({ __metadata__: [] }, 0)),
    '"__metadata__" must be an object',
  );
  await rejectsFormat(
    () => open("m.safetensors", rawFile({ __metadata__: "pt" }, 0)),
    '"__metadata__" must be an object',
  );
  await rejectsFormat(
    () => open("m.safetensors", rawFile({ __metadata__: { format: "pt", step: 3 } }, 0)),
    '"m.safetensors"',
    '"__metadata__" value for "step" must be a string',
  );
  const file = await openSafetensors(
    bufferSource("m", rawFile('{"__metadata__": {"__proto__": "x", "a": "b"}}', 0)),
  );
  assert.deepEqual(Object.keys(file.metadata).sort(), ["__proto__", "a"]);
  assert.equal(Object.getPrototypeOf(file.metadata), Object.prototype);
});

Deno.test("openSafetensors validates every tensor entry field", async () => {
  const entry = (over: Record<string, unknown>) => ({
    w: { dtype: "F32", shape: [2], data_offsets: [0, 8], ...over },
  });
  const cases: [Record<string, unknown>, string][] = [
    [{ w: 5 }, "header entry must be an object"],
    [{ w: null }, "header entry must be an object"],
    [{ w: [1] }, "header entry must be an object"],
    [entry({ dtype: undefined }), '"dtype" must be a string'],
    [entry({ dtype: 4 }), '"dtype" must be a string'],
    [entry({ dtype: "F8_E4M3" }), 'unknown dtype "F8_E4M3"'],
    [entry({ dtype: "f32" }), 'unknown dtype "f32"'],
    [entry({ shape: undefined }), '"shape" must be an array'],
    [entry({ shape: "2" }), '"shape" must be an array'],
    [entry({ shape: [-2] }), "not a non-negative integer"],
    [entry({ shape: [2.5] }), "not a non-negative integer"],
    [entry({ shape: ["2"] }), "not a non-negative integer"],
    [entry({ shape: [2 ** 30, 2 ** 30, 2 ** 30] }), "too many elements"],
    [entry({ data_offsets: undefined }), '"data_offsets" must be [begin, end]'],
    [entry({ data_offsets: [0] }), '"data_offsets" must be [begin, end]'],
    [entry({ data_offsets: [0, 8, 9] }), '"data_offsets" must be [begin, end]'],
    [entry({ data_offsets: [-1, 7] }), '"data_offsets" must be [begin, end]'],
    [entry({ data_offsets: [0, "8"] }), '"data_offsets" must be [begin, end]'],
    [entry({ data_offsets: [0, 8.5] }), '"data_offsets" must be [begin, end]'],
    [entry({ data_offsets: [8, 0] }), "begin after end"],
    [entry({ data_offsets: [8, 16] }), "end beyond the 8-byte data section"],
    [entry({ data_offsets: [0, 2 ** 52] }), "end beyond"],
    [entry({ data_offsets: [0, 2 ** 60] }), '"data_offsets" must be [begin, end]'],
    [entry({ shape: [3] }), "span 8 bytes but shape [3] of F32 needs 12"],
    [entry({ dtype: "F16" }), "span 8 bytes but shape [2] of F16 needs 4"],
  ];
  for (const [header, problem] of cases) {
    await rejectsFormat(() => open("e.safetensors", rawFile(header, 8)), '"e.safetensors"', problem);
  }
  // Tensor-level problems name the tensor.
  await rejectsFormat(() => open("e.safetensors", rawFile(entry({ dtype: "Q4" }), 8)), 'tensor "w"', "Q4");
});

Deno.test("openSafetensors refuses overlapping tensors but allows gaps and empty tensors", async () => {
  const t = (begin: number, end: number) => ({
    dtype: "U8",
    shape: [end - begin],
    data_offsets: [begin, end],
  });
  await rejectsFormat(
    () => open("o.safetensors", rawFile({ a: t(0, 8), b: t(4, 12) }, 16)),
    '"o.safetensors"',
    'tensor "b" data_offsets [4, 12] overlap tensor "a" [0, 8]',
  );
  await rejectsFormat(() => open("o.safetensors", rawFile({ a: t(4, 12), b: t(0, 8) }, 16)), "overlap");
  await rejectsFormat(() => open("o.safetensors", rawFile({ a: t(0, 16), b: t(4, 6) }, 16)), "overlap");
  await rejectsFormat(() => open("o.safetensors", rawFile({ a: t(2, 6), b: t(2, 6) }, 16)), "overlap");
  const ok = await openSafetensors(
    bufferSource("o", rawFile({ a: t(0, 4), gap: t(8, 8), b: t(8, 12), z: t(12, 12) }, 16)),
  );
  assert.equal(ok.tensors.size, 4);
});

Deno.test("readTensor refuses non-float dtypes and unknown names", async () => {
  const header = {
    i: { dtype: "I32", shape: [2], data_offsets: [0, 8] },
    flag: { dtype: "BOOL", shape: [1], data_offsets: [8, 9] },
  };
  const file = await openSafetensors(bufferSource("i.safetensors", rawFile(header, 9)));
  assert.equal((await file.readRaw("i")).length, 8);
  await rejectsFormat(() => file.readTensor("i"), '"i.safetensors"', 'tensor "i" has dtype I32');
  await rejectsFormat(() => file.readTensor("flag"), "BOOL");
  await rejectsFormat(() => file.readTensor("missing"), 'tensor "missing" is not in the file');
  await rejectsFormat(() => file.readRaw("missing"), 'tensor "missing"');
});

// ---------------------------------------------------------------------------------------------------
// Randomised corruption
// ---------------------------------------------------------------------------------------------------

/** Opens and fully reads a file; returns "ok" or throws whatever the reader threw. */
async function openAndCheck(bytes: Uint8Array): Promise<"ok"> {
  const file = await openSafetensors(bufferSource("fuzz.safetensors", bytes));
  const dataSize = bytes.length - file.dataStart;
  const ranges: [number, number][] = [];
  for (const [name, info] of file.tensors) {
    // A parse that succeeds must be self-consistent.
    assert.ok(0 <= info.begin && info.begin <= info.end && info.end <= dataSize, `${name} offsets in range`);
    ranges.push([info.begin, info.end]);
    const raw = await file.readRaw(name);
    assert.equal(raw.length, info.end - info.begin);
    if (info.dtype === "F32" || info.dtype === "F16" || info.dtype === "BF16") {
      const t = await file.readTensor(name);
      assert.equal(t.data.length, product(info.shape));
    } else {
      await assert.rejects(() => file.readTensor(name), FormatError);
    }
  }
  ranges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  for (let i = 1; i < ranges.length; i++) assert.ok(ranges[i][0] >= ranges[i - 1][1], "no overlap");
  return "ok";
}

Deno.test("randomised header corruption gives a consistent parse or a FormatError, nothing else", async () => {
  const seed = 20240611;
  const rng = mulberry32(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)];
  const base = encodeSafetensors(sampleTensors(), { format: "pt" });
  const headerLen = Number(new DataView(base.buffer).getBigUint64(0, true));
  const headerText = new TextDecoder().decode(base.subarray(8, 8 + headerLen)).trimEnd();
  const data = base.subarray(8 + headerLen);
  const numbers = [-1, 0, 1, 2, 3, 4, 7, 8, 12, 16, 24, 31, 32, 33, 40, 2 ** 31, 2 ** 53, 1.5, 1e300];
  const oddValues = [null, "4", true, [], {}, [1, 2], -0.5];
  const randomValue = () => (rng() < 0.7 ? pick(numbers) : pick(oddValues));
  const dtypes = ["F32", "F16", "BF16", "I32", "I64", "U8", "BOOL", "F64", "F8_E4M3", "f16", "", 7, null];

  let parsed = 0;
  let refused = 0;
  const attempts = 400;
  for (let attempt = 0; attempt < attempts; attempt++) {
    let bytes: Uint8Array;
    let how: string;
    const kind = Math.floor(rng() * 4);
    if (kind === 0) {
      // Flip 1-3 bytes in the prefix, header or the start of the data.
      bytes = base.slice();
      const flips = 1 + Math.floor(rng() * 3);
      const positions = [];
      for (let i = 0; i < flips; i++) {
        const pos = Math.floor(rng() * Math.min(bytes.length, 8 + headerLen + 16));
        bytes[pos] ^= 1 + Math.floor(rng() * 255);
        positions.push(pos);
      }
      how = `byte flips at ${positions}`;
    } else if (kind === 1) {
      const len = Math.floor(rng() * base.length);
      bytes = base.slice(0, len);
      how = `truncated to ${len}`;
    } else if (kind === 2) {
      // Structured JSON edits of 1-3 fields.
      const header = JSON.parse(headerText) as Record<string, Record<string, unknown>>;
      const names = Object.keys(header).filter((k) => k !== "__metadata__");
      const edits: string[] = [];
      for (let e = 0, n = 1 + Math.floor(rng() * 3); e < n; e++) {
        const name = pick(names);
        // An earlier edit may have replaced the entry with a non-object; start it afresh then.
        if (typeof header[name] !== "object" || header[name] === null || Array.isArray(header[name])) {
          header[name] = {};
        }
        const entry = header[name];
        const offsets = Array.isArray(entry.data_offsets)
          ? entry.data_offsets
          : (entry.data_offsets = [0, 0]);
        const shape = Array.isArray(entry.shape) ? entry.shape : (entry.shape = []);
        const op = Math.floor(rng() * 9);
        if (op === 0) entry.data_offsets = [randomValue(), randomValue()];
        else if (op === 1) offsets[Math.floor(rng() * 2)] = randomValue();
        else if (op === 2) entry.dtype = pick(dtypes);
        else if (op === 3) entry.shape = rng() < 0.8 ? [randomValue()] : randomValue();
        else if (op === 4) shape.push(randomValue());
        else if (op === 5) delete entry[pick(["dtype", "shape", "data_offsets"])];
        else if (op === 6) (header as Record<string, unknown>)[name] = randomValue();
        else if (op === 7) {
          (header as Record<string, unknown>).__metadata__ = pick([{}, { a: 1 }, [], "x", { a: "b" }, null]);
        } else {
          header[`extra${e}`] = {
            dtype: pick(dtypes),
            shape: [randomValue()],
            data_offsets: [randomValue(), randomValue()],
          };
        }
        edits.push(`op${op} on ${name}`);
      }
      // Usually a correct length prefix (to reach the field checks), sometimes an off one.
      const json = JSON.stringify(header);
      const len = BigInt(new TextEncoder().encode(json).length) +
        (rng() < 0.85 ? 0n : BigInt(pick([-3, -1, 1, 5])));
      bytes = rawFile(json, data, len < 0n ? 0n : len);
      how = `JSON edits ${edits.join(", ")}: ${json}`;
    } else {
      // Character-level edits of the JSON text, keeping the length prefix right.
      let text = headerText;
      const pos = Math.floor(rng() * text.length);
      const ch = pick(['"', "{", "}", "[", "]", ",", ":", "0", "9", "-", " ", "\\", "e", "\u00e9"]);
      text = rng() < 0.5
        ? text.slice(0, pos) + text.slice(pos + 1)
        : text.slice(0, pos) + ch + text.slice(pos);
      bytes = rawFile(text, data);
      how = `text edit at ${pos}: ${text}`;
    }

    try {
      await openAndCheck(bytes);
      parsed++;
    } catch (err) {
      if (!(err instanceof FormatError)) {
        throw new Error(
          `seed ${seed} attempt ${attempt} (${how}) threw ${err instanceof Error ? err.stack : err}`,
        );
      }
      assert.ok(err.message.startsWith('Cannot load "fuzz.safetensors": '), err.message);
      refused++;
    }
  }
  assert.equal(parsed + refused, attempts);
  // Both outcomes must occur, or the mutations are not exercising the parser.
  assert.ok(parsed >= 5, `only ${parsed} corrupted files parsed`);
  assert.ok(refused > 100, `only ${refused} corrupted files refused`);
});
