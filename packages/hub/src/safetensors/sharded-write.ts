/**
 * Saving a whole set of weights the way HF's `save_pretrained` lays them out: `model.safetensors`
 * when they fit one shard, else `model-00001-of-0000N.safetensors` files plus
 * `model.safetensors.index.json`. Shards fill greedily in the order tensors come, up to
 * `maxShardSize` bytes (a larger tensor gets a shard of its own).
 *
 * A map, record or array of tensors is written straight from the devices. An iterable is consumed one
 * tensor at a time (a generator may build each tensor and dispose it after the next pull): since a
 * file's header must come first, each shard's data is spilled to a temporary file and the shard is
 * assembled when it is full.
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Tensor } from '@nemotron-ts/kernels';
import { AtomicFile, writeFileAtomically } from '../atomic-file';
import { writeFolderAtomically } from '../atomic-folder';
import { parseByteSize } from '../byte-size';
import { DEFAULT_CHUNK_BYTES, tensorBytes } from '../tensor-io';
import { safetensorsDTypeOf } from './dtype';
import { encodeShardIndex, INDEX_FILE, SINGLE_FILE } from './shard-index';
import { checkNames, DEFAULT_METADATA, itemByteLength, tensorItem, writeSafetensorsTo, type WriteItem } from './write';

/** Named tensors to save: all at hand (map, record) or produced one at a time (iterables). */
export type TensorSource =
  | ReadonlyMap<string, Tensor>
  | Readonly<Record<string, Tensor>>
  | Iterable<readonly [string, Tensor]>
  | AsyncIterable<readonly [string, Tensor]>;

/** Options of {@link saveWeights}. */
export interface SaveWeightsOptions {
  /** Largest shard in bytes, or a string like "5GB" / "500MiB" (default "5GB", as HF). */
  maxShardSize?: number | string;
  /** `__metadata__` of each file (default `{"format": "pt"}`). */
  metadata?: Readonly<Record<string, string>>;
  /** Bytes moved per step between device, host and disk (default 64 MiB). */
  chunkBytes?: number;
}

/** What {@link saveWeights} wrote. */
export interface SavedWeights {
  /** Weight file names written, relative to the folder. */
  readonly files: readonly string[];
  /** The index file name when the weights were sharded. */
  readonly indexFile: string | null;
  /** Sum of the tensors' byte sizes (`metadata.total_size` of the index). */
  readonly totalSize: number;
}

const SHARD_NAME = /^model-\d{5,}-of-\d{5,}\.safetensors$/;

/**
 * Writes the weights into `folder` (created if needed) and removes weight files of an earlier save
 * there, atomically: the folder changes all at once or not at all (see atomic-folder.ts); its other
 * files are kept.
 */
export async function saveWeights(folder: string, tensors: TensorSource, options: SaveWeightsOptions = {}): Promise<SavedWeights> {
  return writeFolderAtomically(folder, (temp) => writeWeightsInto(temp, tensors, options, folder), { keepOtherFiles: true });
}

/** Writes the weights into the existing folder `dir`, in place (errors name `shownAs`); see {@link saveWeights}. */
export async function writeWeightsInto(dir: string, tensors: TensorSource, options: SaveWeightsOptions = {}, shownAs = dir): Promise<SavedWeights> {
  const folder = dir;
  const maxShard = parseByteSize(options.maxShardSize ?? '5GB', 'maxShardSize');
  const metadata = options.metadata ?? DEFAULT_METADATA;
  const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  const shards: { file: AtomicFile; names: string[]; bytes: number }[] = [];
  try {
    if (isAtHand(tensors)) {
      const entries: (readonly [string, Tensor])[] =
        tensors instanceof Map ? [...tensors.entries()] : Array.isArray(tensors) ? tensors : Object.entries(tensors as Record<string, Tensor>);
      checkNames(
        entries.map(([name]) => name),
        shownAs,
      );
      for (const group of groupByShard(
        entries.map(([name, t]) => tensorItem(name, t, chunkBytes)),
        maxShard,
      )) {
        const file = await AtomicFile.create(join(folder, SINGLE_FILE));
        shards.push({ file, names: group.map((i) => i.name), bytes: group.reduce((s, i) => s + itemByteLength(i), 0) });
        await writeSafetensorsTo(file, group, metadata);
        await file.finish();
      }
    } else {
      await spillAndAssemble(folder, tensors, maxShard, chunkBytes, metadata, shards, shownAs);
    }
    return await commit(folder, shards);
  } catch (e) {
    await Promise.all(shards.map((s) => s.file.abort()));
    throw e;
  }
}

function isAtHand(tensors: TensorSource): tensors is ReadonlyMap<string, Tensor> | Readonly<Record<string, Tensor>> | readonly (readonly [string, Tensor])[] {
  if (tensors instanceof Map || Array.isArray(tensors)) return true;
  return Object.getPrototypeOf(tensors) === Object.prototype || Object.getPrototypeOf(tensors) === null;
}

/** HF's greedy split: start a new shard when the next tensor would push the current one past the limit. */
function groupByShard(items: WriteItem[], maxShard: number): WriteItem[][] {
  const groups: WriteItem[][] = [[]];
  let bytes = 0;
  for (const item of items) {
    const size = itemByteLength(item);
    if (groups.at(-1)!.length > 0 && bytes + size > maxShard) {
      groups.push([]);
      bytes = 0;
    }
    groups.at(-1)!.push(item);
    bytes += size;
  }
  return groups;
}

async function spillAndAssemble(
  folder: string,
  tensors: Iterable<readonly [string, Tensor]> | AsyncIterable<readonly [string, Tensor]>,
  maxShard: number,
  chunkBytes: number,
  metadata: Readonly<Record<string, string>>,
  shards: { file: AtomicFile; names: string[]; bytes: number }[],
  shownAs: string,
): Promise<void> {
  const seen = new Set<string>();
  let spill = await AtomicFile.create(join(folder, 'model.spill'));
  let pending: { name: string; item: Omit<WriteItem, 'chunks'>; offset: number; length: number }[] = [];
  const assemble = async () => {
    const spillPath = spill.tempPath;
    await spill.finish();
    const file = await AtomicFile.create(join(folder, SINGLE_FILE));
    shards.push({ file, names: pending.map((p) => p.name), bytes: spill.size });
    const items = pending.map((p) => ({ ...p.item, chunks: () => readRange(spillPath, p.offset, p.length, chunkBytes) }));
    await writeSafetensorsTo(file, items, metadata);
    await file.finish();
    await spill.abort();
    spill = await AtomicFile.create(join(folder, 'model.spill'));
    pending = [];
  };
  try {
    for await (const [name, t] of tensors) {
      checkNames([name], shownAs);
      if (seen.has(name)) throw new Error(`${shownAs}: tensor '${name}' is given twice`);
      seen.add(name);
      const item = { name, dtype: safetensorsDTypeOf(t.dtype), shape: t.shape };
      const length = itemByteLength(item);
      if (pending.length > 0 && spill.size + length > maxShard) await assemble();
      const offset = spill.size;
      for await (const chunk of tensorBytes(t, chunkBytes)) await spill.write(chunk);
      pending.push({ name, item, offset, length });
    }
    if (pending.length > 0 || shards.length === 0) await assemble();
  } finally {
    await spill.abort();
  }
}

async function* readRange(path: string, offset: number, length: number, chunkBytes: number): AsyncGenerator<Uint8Array> {
  const file = Bun.file(path);
  for (let at = 0; at < length; at += chunkBytes) {
    yield new Uint8Array(await file.slice(offset + at, offset + Math.min(length, at + chunkBytes)).arrayBuffer());
  }
}

/** Renames the finished shards to their final names, writes the index, removes stale weight files. */
async function commit(folder: string, shards: { file: AtomicFile; names: string[]; bytes: number }[]): Promise<SavedWeights> {
  const n = shards.length;
  const files = n === 1 ? [SINGLE_FILE] : shards.map((_, i) => `model-${pad(i + 1)}-of-${pad(n)}.safetensors`);
  for (let i = 0; i < n; i++) await shards[i]!.file.commitTo(join(folder, files[i]!));
  const totalSize = shards.reduce((s, shard) => s + shard.bytes, 0);
  let indexFile: string | null = null;
  if (n > 1) {
    const weightMap = new Map<string, string>();
    shards.forEach((shard, i) => shard.names.forEach((name) => weightMap.set(name, files[i]!)));
    await writeFileAtomically(join(folder, INDEX_FILE), encodeShardIndex(weightMap, totalSize));
    indexFile = INDEX_FILE;
  }
  for (const entry of await readdir(folder)) {
    const stale = files.includes(entry) ? false : entry === SINGLE_FILE || SHARD_NAME.test(entry) || (entry === INDEX_FILE && indexFile === null);
    if (stale) await rm(join(folder, entry), { force: true });
  }
  return { files, indexFile, totalSize };
}

function pad(i: number): string {
  return String(i).padStart(5, '0');
}
