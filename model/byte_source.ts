/**
 * Random-access byte sources: the one way model code reads checkpoint bytes.
 *
 * A checkpoint can be larger than memory (a 7B model in f16 is 13 GB), so readers ask for byte ranges
 * and never for "the whole file". The same interface is served by an in-memory buffer, a browser
 * `Blob`/`File`, or (on Deno only) a path on disk, so the parsers in `model/` stay free of `Deno.*`.
 *
 * @module
 */

/**
 * Something that can hand out byte ranges of a fixed-size file.
 *
 * @example Reading the first 8 bytes
 * ```ts
 * import { bufferSource, type ByteSource } from "./byte_source.ts";
 * const src: ByteSource = bufferSource("a.bin", new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9]));
 * const head = await src.read(0, 8); // Uint8Array(8)
 * ```
 */
export interface ByteSource {
  /** Name used in error messages (a file name or path). */
  readonly name: string;
  /** Total size in bytes. */
  readonly size: number;
  /**
   * Read exactly `length` bytes starting at `offset`. The result is a fresh array the caller may keep
   * or modify. Throws `RangeError` if the range is outside `[0, size]`.
   */
  read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Optional: fill `into` with the bytes starting at `offset`, without an intermediate copy (a file
   * reads straight into the destination, e.g. a GPU buffer mapped at creation).
   */
  readInto?(offset: number, into: Uint8Array): Promise<void>;
}

/**
 * Opens a file by its name inside a checkpoint directory; resolves to `null` when there is no such
 * file (so callers can try `model.safetensors`, then the sharded index).
 *
 * @example A map of in-memory files
 * ```ts
 * import { bufferSource, type OpenByName } from "./byte_source.ts";
 * const files = new Map([["config.json", bufferSource("config.json", new Uint8Array(2))]]);
 * const open: OpenByName = (name) => Promise.resolve(files.get(name) ?? null);
 * ```
 */
export type OpenByName = (name: string) => Promise<ByteSource | null>;

/**
 * Throws unless `[offset, offset + length)` lies inside a source of `size` bytes.
 * @internal
 */
export function checkRange(name: string, size: number, offset: number, length: number): void {
  if (
    !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
    offset + length > size
  ) {
    throw new RangeError(
      `Cannot read "${name}": range [${offset}, ${offset} + ${length}) is outside the ${size}-byte source; ` +
        "this is a bug in the caller, which must validate offsets first",
    );
  }
}

/**
 * A source over bytes already in memory (tests, or a file the browser fetched whole).
 *
 * @param name name used in error messages
 * @param bytes the file contents; not copied, so do not modify it while the source is in use
 * @returns a source whose reads return copies
 *
 * @example Wrapping a buffer
 * ```ts
 * import { bufferSource } from "./byte_source.ts";
 * const src = bufferSource("x.safetensors", new ArrayBuffer(16));
 * console.log(src.size); // 16
 * ```
 */
export function bufferSource(name: string, bytes: ArrayBuffer | Uint8Array): ByteSource {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  return {
    name,
    size: view.byteLength,
    read(offset: number, length: number): Promise<Uint8Array> {
      try {
        checkRange(name, view.byteLength, offset, length);
      } catch (err) {
        return Promise.reject(err); // reject like the async sources instead of throwing synchronously
      }
      // slice (not subarray): callers own the result and may reinterpret it as aligned typed arrays.
      return Promise.resolve(view.slice(offset, offset + length));
    },
  };
}

/**
 * A source over a `Blob` or `File` (a browser file picker or drag-and-drop). Only the requested
 * slice is read, so large files are never loaded whole.
 *
 * @param blob the blob or file
 * @param name name for error messages; defaults to `File.name`, else `"blob"`
 *
 * @example Wrapping a Blob
 * ```ts
 * import { blobSource } from "./byte_source.ts";
 * const src = blobSource(new Blob([new Uint8Array([1, 2, 3])]), "tiny.bin");
 * const bytes = await src.read(1, 2); // Uint8Array [2, 3]
 * ```
 */
export function blobSource(blob: Blob, name?: string): ByteSource {
  const label = name ?? (typeof File !== "undefined" && blob instanceof File ? blob.name : "blob");
  return {
    name: label,
    size: blob.size,
    async read(offset: number, length: number): Promise<Uint8Array> {
      checkRange(label, blob.size, offset, length);
      return new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer());
    },
  };
}
