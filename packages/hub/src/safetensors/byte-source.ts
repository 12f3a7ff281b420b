/**
 * Where safetensors bytes come from: a file read range by range (never whole), or bytes already in
 * memory (tests, small files).
 */
import { open, stat, type FileHandle } from 'node:fs/promises';
import { CheckpointFormatError } from '../errors';

/** Random access to the bytes of a safetensors file. */
export interface ByteSource {
  /** Shown in error messages (the file path). */
  readonly name: string;
  readonly size: number;
  /** Reads bytes [begin, end); the result may be shorter only when the source shrank. */
  read(begin: number, end: number): Promise<Uint8Array>;
  /**
   * Reads bytes from `begin` straight into `dst` (all of it unless the source ends first) and
   * returns how many were read: a tensor's host memory is filled with no chunk copy in between.
   */
  readInto?(begin: number, dst: Uint8Array): Promise<number>;
}

/** A file read lazily through ranged reads. */
export async function fileSource(path: string): Promise<ByteSource> {
  let size: number;
  try {
    const info = await stat(path);
    if (!info.isFile()) throw new CheckpointFormatError(path, undefined, 'is not a regular file');
    size = info.size;
  } catch (e) {
    if (e instanceof CheckpointFormatError) throw e;
    throw new CheckpointFormatError(path, undefined, `cannot be opened (${(e as Error).message})`);
  }
  const file = Bun.file(path);
  return {
    name: path,
    size,
    async read(begin, end) {
      return new Uint8Array(await file.slice(begin, end).arrayBuffer());
    },
    async readInto(begin, dst) {
      let handle: FileHandle;
      try {
        handle = await open(path, 'r');
      } catch (e) {
        throw new CheckpointFormatError(path, undefined, `cannot be opened (${(e as Error).message})`);
      }
      try {
        let done = 0;
        while (done < dst.byteLength) {
          const { bytesRead } = await handle.read(dst, done, dst.byteLength - done, begin + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        return done;
      } finally {
        await handle.close();
      }
    },
  };
}

/** Bytes already in memory, named `name` in errors. */
export function memorySource(bytes: Uint8Array, name: string): ByteSource {
  return {
    name,
    size: bytes.byteLength,
    async read(begin, end) {
      return bytes.slice(begin, Math.min(end, bytes.byteLength));
    },
  };
}

/** Fills `dst` from `begin` through {@link ByteSource.readInto}, or throws as {@link readExactly} does. */
export async function readExactlyInto(
  source: ByteSource & Required<Pick<ByteSource, 'readInto'>>,
  begin: number,
  dst: Uint8Array,
  what: string,
): Promise<void> {
  const n = await source.readInto(begin, dst);
  if (n !== dst.byteLength) {
    throw new CheckpointFormatError(
      source.name,
      what,
      `read ${n} of ${dst.byteLength} bytes at offset ${begin}: the file is shorter than its header says (modified while open?)`,
    );
  }
}

/** Reads exactly [begin, end) or throws naming the source and what was being read. */
export async function readExactly(source: ByteSource, begin: number, end: number, what: string): Promise<Uint8Array> {
  const bytes = await source.read(begin, end);
  if (bytes.byteLength !== end - begin) {
    throw new CheckpointFormatError(
      source.name,
      what,
      `read ${bytes.byteLength} of ${end - begin} bytes at offset ${begin}: the file is shorter than its header says (modified while open?)`,
    );
  }
  return bytes;
}
