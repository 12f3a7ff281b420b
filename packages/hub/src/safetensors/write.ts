/**
 * Writing one safetensors file: the header first, then each tensor's bytes streamed in turn (read
 * from its device a chunk at a time), into a temporary file that is renamed into place when whole.
 *
 * Layout as the reference writer makes it, so PyTorch/HF load the file unchanged: tensors ordered by
 * element size (largest first), then by name, so every tensor starts aligned to its element size;
 * data contiguous from offset 0 with no gaps; header JSON padded with spaces to a multiple of 8.
 */
import { sizeOf, type Tensor } from '@nemotron-ts/kernels';
import { AtomicFile } from '../atomic-file';
import { compareCodePoints } from '../code-point-order';
import { DEFAULT_CHUNK_BYTES, tensorBytes } from '../tensor-io';
import { safetensorsBytesPerElement, safetensorsDTypeOf, type SafetensorsDType } from './dtype';
import { encodeHeader, type TensorEntry } from './header';

/** A tensor as the writer sees it: type and shape known up front, bytes produced on demand. */
export interface WriteItem {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  /** Produces exactly `sizeOf(shape) × element size` bytes in row-major order; called once. */
  chunks(): AsyncIterable<Uint8Array>;
}

/** The metadata every file gets: PyTorch loaders check `format`. */
export const DEFAULT_METADATA: Readonly<Record<string, string>> = { format: 'pt' };

/** A device tensor as a write item (its bytes are read from the device while the file is written). */
export function tensorItem(name: string, t: Tensor, chunkBytes = DEFAULT_CHUNK_BYTES): WriteItem {
  t.assertAlive(`tensor '${name}'`);
  return { name, dtype: safetensorsDTypeOf(t.dtype), shape: t.shape, chunks: () => tensorBytes(t, chunkBytes) };
}

/** Bytes the item occupies in the data area. */
export function itemByteLength(item: Pick<WriteItem, 'dtype' | 'shape'>): number {
  return sizeOf(item.shape) * safetensorsBytesPerElement(item.dtype);
}

/** Orders items as the reference writer does and assigns contiguous data offsets. */
export function layout<T extends Pick<WriteItem, 'name' | 'dtype' | 'shape'>>(items: readonly T[]): { item: T; entry: TensorEntry }[] {
  const sorted = [...items].sort((a, b) => safetensorsBytesPerElement(b.dtype) - safetensorsBytesPerElement(a.dtype) || compareCodePoints(a.name, b.name));
  let offset = 0;
  return sorted.map((item) => {
    const begin = offset;
    offset += itemByteLength(item);
    return { item, entry: { name: item.name, dtype: item.dtype, shape: item.shape, begin, end: offset } };
  });
}

/** Checks names before anything is written: unique, and not the reserved metadata key. */
export function checkNames(names: Iterable<string>, file: string): void {
  const seen = new Set<string>();
  for (const name of names) {
    if (name === '__metadata__') throw new Error(`${file}: '__metadata__' is reserved and cannot name a tensor`);
    if (seen.has(name)) throw new Error(`${file}: tensor '${name}' is given twice`);
    seen.add(name);
  }
}

/**
 * Writes `items` as a safetensors file into `out` (not yet committed: the caller renames it into
 * place). `metadata` is stored as `__metadata__` (default `{"format": "pt"}`).
 */
export async function writeSafetensorsTo(
  out: AtomicFile,
  items: readonly WriteItem[],
  metadata: Readonly<Record<string, string>> | null = DEFAULT_METADATA,
): Promise<void> {
  checkNames(
    items.map((i) => i.name),
    out.tempPath,
  );
  const planned = layout(items);
  const header = encodeHeader(
    planned.map((p) => p.entry),
    metadata,
  );
  await out.write(header);
  for (const { item, entry } of planned) {
    const expected = entry.end - entry.begin;
    let written = 0;
    for await (const chunk of item.chunks()) {
      written += chunk.byteLength;
      if (written > expected) break;
      await out.write(chunk);
    }
    if (written !== expected) throw new Error(`tensor '${item.name}' ${item.dtype} [${item.shape.join(', ')}] produced ${written} bytes, expected ${expected}`);
  }
}

/** Options of {@link saveSafetensors}. */
export interface SaveSafetensorsOptions {
  /** `__metadata__` of the file (default `{"format": "pt"}`). */
  metadata?: Readonly<Record<string, string>>;
  /** Bytes read back from a device per step (default 64 MiB). */
  chunkBytes?: number;
}

/** Saves named device tensors as one safetensors file, atomically. The tensors stay the caller's. */
export async function saveSafetensors(
  path: string,
  tensors: ReadonlyMap<string, Tensor> | Readonly<Record<string, Tensor>>,
  options: SaveSafetensorsOptions = {},
): Promise<void> {
  const entries = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const items = entries.map(([name, t]) => tensorItem(name, t, options.chunkBytes));
  const out = await AtomicFile.create(path);
  try {
    await writeSafetensorsTo(out, items, options.metadata ?? DEFAULT_METADATA);
    await out.commitTo(path);
  } catch (e) {
    await out.abort();
    throw e;
  }
}
