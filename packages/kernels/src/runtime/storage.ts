/**
 * Reference-counted memory behind one or more tensors (views share it). The last `release` returns a
 * GPU buffer to the pool or drops the CPU array — deterministically, never on GC timing.
 *
 * A storage can also carry derived resources: device-side copies of its contents in another layout
 * (e.g. a weight re-laid out as a texture by matmul). They are released with the storage, and
 * dropped by `invalidateDerived()`, which every path that writes an existing storage in place must
 * call (uploads and `into` writes do).
 */
import type { DType } from '../dtype';

export interface StorageOwner {
  /** Called once when the last reference is released. */
  freeStorage(storage: Storage): void;
}

/** A resource computed from a storage's contents, owned by that storage. */
export interface DerivedResource {
  /** Frees the resource (called once: when the storage is freed or written in place). */
  release(): void;
}

export class Storage {
  private refs = 1;
  private derived: Map<string, DerivedResource> | null = null;

  constructor(
    readonly owner: StorageOwner,
    readonly dtype: DType,
    /** Number of elements the storage holds. */
    readonly length: number,
    readonly gpu: GPUBuffer | null,
    readonly cpu: ArrayBuffer | null,
  ) {}

  get alive(): boolean {
    return this.refs > 0;
  }

  retain(): void {
    if (this.refs <= 0) throw new Error('Storage.retain: storage was already freed');
    this.refs++;
  }

  release(): void {
    if (this.refs <= 0) return;
    if (--this.refs === 0) {
      this.invalidateDerived();
      this.owner.freeStorage(this);
    }
  }

  /** The derived resource stored under `key`, if any. */
  getDerived(key: string): DerivedResource | undefined {
    return this.derived?.get(key);
  }

  /** Attaches a derived resource under `key` (releasing any previous one under that key). */
  setDerived(key: string, resource: DerivedResource): void {
    if (!this.alive) throw new Error('Storage.setDerived: storage was already freed');
    this.derived ??= new Map();
    this.derived.get(key)?.release();
    this.derived.set(key, resource);
  }

  /** Releases and forgets the derived resource under `key`, if any. */
  deleteDerived(key: string): void {
    const r = this.derived?.get(key);
    if (!r) return;
    this.derived!.delete(key);
    r.release();
  }

  /** Releases every derived resource: the contents changed (or the storage is being freed). */
  invalidateDerived(): void {
    if (!this.derived) return;
    const all = [...this.derived.values()];
    this.derived = null;
    for (const r of all) r.release();
  }
}
