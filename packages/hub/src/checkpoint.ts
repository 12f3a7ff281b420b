/**
 * A checkpoint folder's weights, single-file (`model.safetensors`) or sharded
 * (`model.safetensors.index.json` + shards), read lazily tensor by tensor.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Tensor } from '@nemotron-ts/kernels';
import { CheckpointFormatError } from './errors';
import type { SafetensorsDType } from './safetensors/dtype';
import { SafetensorsReader, type HostTensor, type LoadOptions } from './safetensors/read';
import { INDEX_FILE, parseShardIndex, resolveShardPath, SINGLE_FILE } from './safetensors/shard-index';

/** Where a tensor lives and what it is. */
export interface CheckpointEntry {
  readonly name: string;
  /** Path of the safetensors file holding it. */
  readonly file: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
}

/** The weights of one checkpoint folder, opened lazily: headers in memory, data read per tensor. */
export class Checkpoint {
  private constructor(
    readonly folder: string,
    /** The index file's path for a sharded checkpoint, else null. */
    readonly indexFile: string | null,
    private readonly readers: readonly SafetensorsReader[],
    private readonly owner: ReadonlyMap<string, SafetensorsReader>,
  ) {}

  /**
   * Opens the weights in `folder`: validates every file's header (and the index: shard names stay
   * inside the folder, every listed tensor is in its shard). No tensor data is read yet.
   */
  static async open(folder: string): Promise<Checkpoint> {
    const indexPath = join(folder, INDEX_FILE);
    if (await isFile(indexPath)) {
      const index = parseShardIndex(await Bun.file(indexPath).text(), indexPath);
      const readers = new Map<string, SafetensorsReader>();
      for (const shard of index.shards) readers.set(shard, await SafetensorsReader.open(await resolveShardPath(folder, shard, indexPath)));
      const owner = new Map<string, SafetensorsReader>();
      for (const [name, shard] of index.weightMap) {
        const reader = readers.get(shard)!;
        if (!reader.has(name)) throw new CheckpointFormatError(indexPath, `weight_map['${name}']`, `names shard '${shard}', which has no tensor '${name}'`);
        owner.set(name, reader);
      }
      return new Checkpoint(folder, indexPath, [...readers.values()], owner);
    }
    const single = join(folder, SINGLE_FILE);
    if (await isFile(single)) {
      const reader = await SafetensorsReader.open(single);
      return new Checkpoint(folder, null, [reader], new Map(reader.names().map((n) => [n, reader])));
    }
    throw new CheckpointFormatError(folder, undefined, `has no ${SINGLE_FILE} and no ${INDEX_FILE}`);
  }

  /** The weight files' paths. */
  get files(): string[] {
    return this.readers.map((r) => r.file);
  }

  /** Tensor names, in the order the files hold them (reading in this order is sequential on disk). */
  names(): string[] {
    return this.readers.flatMap((r) =>
      [...r.header.tensors.values()]
        .filter((e) => this.owner.get(e.name) === r)
        .sort((a, b) => a.begin - b.begin)
        .map((e) => e.name),
    );
  }

  has(name: string): boolean {
    return this.owner.has(name);
  }

  entry(name: string): CheckpointEntry {
    const reader = this.reader(name);
    const e = reader.entry(name);
    return { name, file: reader.file, dtype: e.dtype, shape: e.shape };
  }

  /** Reads one tensor onto a device; the caller owns (and disposes) it. */
  load(name: string, options: LoadOptions = {}): Promise<Tensor> {
    return this.reader(name).load(name, options);
  }

  /** Reads one tensor of any dtype into host memory. */
  readHost(name: string): Promise<HostTensor> {
    return this.reader(name).readHost(name);
  }

  /**
   * Loads tensors one at a time in file order (default: all of them). Each is the caller's as soon
   * as it is yielded, so a consumer can place or dispose it before the next is read.
   */
  async *tensors(options: LoadOptions & { names?: Iterable<string> } = {}): AsyncGenerator<[string, Tensor]> {
    const wanted = options.names ? new Set(options.names) : null;
    if (wanted) for (const name of wanted) this.reader(name);
    for (const name of this.names()) {
      if (wanted && !wanted.has(name)) continue;
      yield [name, await this.load(name, options)];
    }
  }

  /** Loads every tensor (the caller owns them all). */
  async loadAll(options: LoadOptions = {}): Promise<Map<string, Tensor>> {
    const out = new Map<string, Tensor>();
    try {
      for await (const [name, t] of this.tensors(options)) out.set(name, t);
    } catch (e) {
      for (const t of out.values()) t.dispose();
      throw e;
    }
    return out;
  }

  private reader(name: string): SafetensorsReader {
    const r = this.owner.get(name);
    if (!r) throw new CheckpointFormatError(this.indexFile ?? this.files[0]!, `tensor '${name}'`, `is not in the checkpoint at ${this.folder}`);
    return r;
  }
}

async function isFile(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isFile(),
    () => false,
  );
}
