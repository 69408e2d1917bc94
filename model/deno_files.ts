/**
 * The Deno edge of model files: sources over files on disk, model directories, and writing
 * safetensors files. Everything else in model/ runs in a browser too; this is the one module of the
 * model layer that touches the file system (the browser entry point, browser.ts, leaves it out).
 *
 * @module
 */

import { type ByteSource, checkRange, type OpenByName } from "./byte_source.ts";
import { FormatError } from "./format_error.ts";
import type { ModelFiles } from "./model_files.ts";
import { safetensorsChunks, type TensorToWrite } from "./safetensors.ts";

/**
 * A source over a file on disk (Deno only). Each read opens the file, seeks and reads exactly the
 * requested range, so no handle stays open between reads (nothing to close, nothing leaks in tests)
 * and concurrent reads cannot disturb each other's file position.
 *
 * @param path the file path
 * @returns the source; its `size` is the file size when it was opened
 *
 * @example Reading a header from disk
 * ```ts ignore
 * import { fileSource } from "./deno_files.ts";
 * const src = await fileSource("weights/model.safetensors");
 * const lengthBytes = await src.read(0, 8);
 * ```
 */
export async function fileSource(path: string): Promise<ByteSource> {
  const info = await Deno.stat(path);
  if (!info.isFile) {
    throw new FormatError(path, "is not a regular file", "pass the path of a file, not a directory");
  }
  const size = info.size;
  const readInto = async (offset: number, out: Uint8Array): Promise<void> => {
    const length = out.length;
    checkRange(path, size, offset, length);
    using file = await Deno.open(path, { read: true });
    await file.seek(offset, Deno.SeekMode.Start);
    // read() may return fewer bytes than asked; loop until the range is filled.
    let filled = 0;
    while (filled < length) {
      const n = await file.read(out.subarray(filled));
      if (n === null) {
        throw new FormatError(
          path,
          `file ended at byte ${offset + filled} while reading ${length} bytes at offset ${offset}`,
          `the file shrank from ${size} bytes since it was opened; was it overwritten during loading?`,
        );
      }
      filled += n;
    }
  };
  return {
    name: path,
    size,
    async read(offset: number, length: number): Promise<Uint8Array> {
      const out = new Uint8Array(length);
      await readInto(offset, out);
      return out;
    },
    readInto,
  };
}

/**
 * An {@link OpenByName} over a directory on disk (Deno only): missing files resolve to `null`.
 *
 * @param dir the checkpoint directory
 *
 * @example Opening a checkpoint directory
 * ```ts ignore
 * import { directoryOpener } from "./deno_files.ts";
 * const open = directoryOpener("weights/TinyLlama");
 * const config = await open("config.json"); // ByteSource or null
 * ```
 */
export function directoryOpener(dir: string): OpenByName {
  const sep = dir.endsWith("/") || dir.endsWith("\\") ? "" : "/";
  return async (name: string): Promise<ByteSource | null> => {
    try {
      return await fileSource(`${dir}${sep}${name}`);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return null;
      throw err;
    }
  };
}

/**
 * The files of a directory on disk (the only Deno-specific part of model loading).
 *
 * @example Opening a model directory
 * ```ts ignore
 * const files = directoryFiles("models/demo-cllm");
 * console.log(await files.text("config.json"));
 * ```
 */
export function directoryFiles(dir: string): ModelFiles {
  const path = (file: string) => `${dir.replace(/\/+$/, "")}/${file}`;
  return {
    name: dir,
    async source(file) {
      try {
        const stat = await Deno.stat(path(file));
        if (!stat.isFile) return null;
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return null;
        throw e;
      }
      return await fileSource(path(file));
    },
    async text(file) {
      try {
        return await Deno.readTextFile(path(file));
      } catch (e) {
        if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.IsADirectory) return null;
        throw e;
      }
    },
  };
}

/**
 * Writes a safetensors file atomically (Deno only): the bytes go to a temporary file in the same
 * directory, are flushed to disk, then renamed over `path`, so a crash never leaves a partial file at
 * `path`. Tensors are streamed one at a time, so the whole file is never built in memory.
 *
 * @param path destination path
 * @param tensors the tensors to store, in layout order
 * @param metadata string key/value pairs for `__metadata__`
 * @throws TypeError or RangeError for a bad argument; file system errors pass through
 *
 * @example Saving a checkpoint
 * ```ts ignore
 * import { writeSafetensors } from "./deno_files.ts";
 * await writeSafetensors("out/model.safetensors", [
 *   { name: "model.norm.weight", dtype: "F16", shape: [4], data: new Float32Array([1, 1, 1, 1]) },
 * ], { format: "pt" });
 * ```
 */
export async function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  metadata: Record<string, string> = {},
): Promise<void> {
  const chunks = safetensorsChunks(tensors, metadata, path); // validates before touching the disk
  const slash = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  const dir = path.slice(0, slash + 1);
  const base = path.slice(slash + 1);
  // Same directory as the target: rename is only atomic within one file system.
  const tmp = `${dir}.${base}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    {
      using handle = await Deno.open(tmp, { write: true, createNew: true });
      for (const chunk of chunks) await writeAll(handle, chunk);
      await handle.syncData(); // the data must be on disk before the rename makes it visible
    }
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {}); // best effort: the temp file may not exist
    throw err;
  }
}

async function writeAll(handle: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await handle.write(bytes.subarray(written));
}
