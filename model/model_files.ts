/**
 * Where a model's files come from: a set of in-memory files (browser `File`/`Blob`/`ArrayBuffer`)
 * here, or a directory on disk (`directoryFiles`, model/deno_files.ts). Loading code only sees
 * {@linkcode ModelFiles}.
 *
 * @module
 */

import { blobSource, bufferSource, type ByteSource } from "./byte_source.ts";

/** The files of one model directory. */
export interface ModelFiles {
  /** A name for messages (the directory path). */
  name: string;
  /** Opens a file for ranged reads, or null when it does not exist. */
  source(file: string): Promise<ByteSource | null>;
  /** Reads a text file, or null when it does not exist. */
  text(file: string): Promise<string | null>;
}

/**
 * Files given in memory, e.g. from a browser file picker.
 *
 * @example Files from memory
 * ```ts
 * import { memoryFiles } from "./model_files.ts";
 * const files = memoryFiles("upload", { "config.json": new TextEncoder().encode("{}") });
 * console.log(await files.text("config.json")); // {}
 * ```
 */
export function memoryFiles(
  name: string,
  files: Record<string, Blob | ArrayBuffer | Uint8Array>,
): ModelFiles {
  return {
    name,
    source(file) {
      const f = files[file];
      if (f === undefined) return Promise.resolve(null);
      return Promise.resolve(
        f instanceof Blob ? blobSource(f, `${name}/${file}`) : bufferSource(`${name}/${file}`, f),
      );
    },
    async text(file) {
      const f = files[file];
      if (f === undefined) return null;
      if (f instanceof Blob) return await f.text();
      return new TextDecoder().decode(f);
    },
  };
}
