/**
 * Where safetensors bytes come from: a file read range by range (never whole), or bytes already in
 * memory (tests, small files).
 */
import { stat } from 'node:fs/promises';
import { CheckpointFormatError } from '../errors';

/** Random access to the bytes of a safetensors file. */
export interface ByteSource {
  /** Shown in error messages (the file path). */
  readonly name: string;
  readonly size: number;
  /** Reads bytes [begin, end); the result may be shorter only when the source shrank. */
  read(begin: number, end: number): Promise<Uint8Array>;
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
