/**
 * Reference-counted memory behind one or more tensors (views share it). The last `release` returns a
 * GPU buffer to the pool or drops the CPU array — deterministically, never on GC timing.
 */
import type { DType } from '../dtype';

export interface StorageOwner {
  /** Called once when the last reference is released. */
  freeStorage(storage: Storage): void;
}

export class Storage {
  private refs = 1;

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
    if (--this.refs === 0) this.owner.freeStorage(this);
  }
}
