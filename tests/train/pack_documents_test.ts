import assert from "node:assert/strict";
import { packDocuments } from "../../train/pack_documents.ts";

Deno.test("packDocuments keeps whole documents, in order, within the length", () => {
  const docs = [[1, 5, 2], [1, 6, 2], [1, 7, 8, 2], [1, 9, 9, 9, 9, 9, 9, 2], [1, 3, 2]];
  const packed = packDocuments(docs, 6);
  assert.deepEqual(packed, [[1, 5, 2, 1, 6, 2], [1, 7, 8, 2], [1, 9, 9, 9, 9, 9], [1, 3, 2]]);
  for (const s of packed) assert.ok(s.length <= 6);
  assert.equal(packed[0][0], 1);
});

Deno.test("packDocuments refuses a length under 2", () => {
  assert.throws(() => packDocuments([[1, 2]], 1), /at least 2/);
});
