/**
 * `model.safetensors.index.json`, HF's map of a sharded checkpoint: `weight_map` (tensor name →
 * shard file name) and `metadata.total_size`. Shard names come from the file, so they are confined
 * to the checkpoint folder before any is opened.
 */
import { realpath } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, sep } from 'node:path';
import { CheckpointFormatError } from '../errors';
import { parseHfJson, stringifyHfJson, type JsonObject } from '../hf-json';
import { unsafeRelativePath } from '../relative-path';

/** The weights of an unsharded checkpoint. */
export const SINGLE_FILE = 'model.safetensors';
/** The shard index of a sharded checkpoint. */
export const INDEX_FILE = 'model.safetensors.index.json';

/** A validated shard index. */
export interface ShardIndex {
  /** Tensor name → shard file name (relative to the checkpoint folder). */
  readonly weightMap: ReadonlyMap<string, string>;
  /** Shard names in order of first appearance. */
  readonly shards: readonly string[];
  readonly metadata: JsonObject | null;
}

/** Parses and validates an index file's text; `file` names it in errors. */
export function parseShardIndex(text: string, file: string): ShardIndex {
  const root = parseHfJson(text, file);
  if (typeof root !== 'object' || root === null || Array.isArray(root)) throw new CheckpointFormatError(file, undefined, 'must be a JSON object');
  const map = root.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) {
    throw new CheckpointFormatError(file, 'weight_map', 'must be an object mapping tensor names to shard file names');
  }
  const metadata = root.metadata ?? null;
  if (metadata !== null && (typeof metadata !== 'object' || Array.isArray(metadata))) throw new CheckpointFormatError(file, 'metadata', 'must be an object');
  if (
    metadata &&
    metadata.total_size !== undefined &&
    !(typeof metadata.total_size === 'number' && Number.isSafeInteger(metadata.total_size) && metadata.total_size >= 0)
  ) {
    throw new CheckpointFormatError(file, 'metadata.total_size', `must be a non-negative integer, got ${JSON.stringify(metadata.total_size)}`);
  }
  const weightMap = new Map<string, string>();
  const shards: string[] = [];
  for (const [name, shard] of Object.entries(map)) {
    if (typeof shard !== 'string') throw new CheckpointFormatError(file, `weight_map['${name}']`, `must be a file name, got ${JSON.stringify(shard)}`);
    checkShardName(shard, file, `weight_map['${name}']`);
    weightMap.set(name, shard);
    if (!shards.includes(shard)) shards.push(shard);
  }
  if (weightMap.size === 0) throw new CheckpointFormatError(file, 'weight_map', 'is empty');
  return { weightMap, shards, metadata };
}

/** Rejects shard names that could leave the checkpoint folder: absolute, `..`, backslashes, NUL. */
export function checkShardName(name: string, file: string, field: string): void {
  const bad = isAbsolute(name) ? 'is an absolute path' : unsafeRelativePath(name);
  if (bad) throw new CheckpointFormatError(file, field, `shard name ${JSON.stringify(name)} ${bad}: shards must stay inside the checkpoint folder`);
}

/**
 * The path of shard `name` in `folder` (as the user sees it: a snapshot file, not the blob it links
 * to), after checking that its real path lies inside the folder, or, for a snapshot of the HF cache
 * (`…/snapshots/<commit>`, whose files link to `…/blobs`), inside that repo's blobs.
 */
export async function resolveShardPath(folder: string, name: string, indexFile: string): Promise<string> {
  checkShardName(name, indexFile, `shard '${name}'`);
  let real: string;
  try {
    real = await realpath(join(folder, name));
  } catch {
    throw new CheckpointFormatError(indexFile, `shard '${name}'`, `is listed in weight_map but ${join(folder, name)} does not exist`);
  }
  const roots = [await realpath(folder)];
  if (basename(dirname(folder)) === 'snapshots') {
    const blobs = await realpath(join(folder, '..', '..', 'blobs')).catch(() => null);
    if (blobs) roots.push(blobs);
  }
  if (!roots.some((root) => real.startsWith(root + sep))) {
    throw new CheckpointFormatError(indexFile, `shard '${name}'`, `resolves to ${real}, outside the checkpoint folder (symlink escape)`);
  }
  return join(folder, name);
}

/** The index file text HF writes: `{"metadata": {"total_size": …}, "weight_map": {…}}`, sorted keys. */
export function encodeShardIndex(weightMap: ReadonlyMap<string, string>, totalSize: number): string {
  return stringifyHfJson({ metadata: { total_size: totalSize }, weight_map: Object.fromEntries(weightMap) });
}
