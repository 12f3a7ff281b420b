/**
 * The CPU backend: host ArrayBuffers. Without `native` every op runs the plain TypeScript reference
 * (the oracle every kernel is checked against); with it (`cpu:native`) the ops that have a native
 * kernel call it on the same buffers and the rest run the reference.
 */
import { bytesPerElement, type DType } from '../dtype';
import type { NativeKernels } from '../native/library';
import { OutOfMemoryError } from './errors';
import { HostBufferPool } from './host-buffer-pool';
import type { MemoryStats } from '../runtime/pool';
import { Storage, type StorageOwner } from '../runtime/storage';

/**
 * Pooled bytes kept at most: a training step's activations and gradients are reused by the next
 * step instead of being fresh pages again.
 */
const DEFAULT_POOL_BYTES = 2 * 1024 ** 3;

export class CpuDevice implements StorageOwner {
  readonly kind = 'cpu' as const;
  /** `cpu` (reference) or `cpu:native`. */
  readonly name: 'cpu' | 'cpu:native';
  /** When set, fresh allocations are filled with NaN / all-ones bits so tests catch unwritten outputs. */
  poisonAllocations = false;
  private stats: MemoryStats = { liveBytes: 0, pooledBytes: 0, peakLiveBytes: 0, liveBuffers: 0, pooledBuffers: 0 };
  /** Freed buffers for reuse (see host-buffer-pool.ts). */
  private readonly pool = new HostBufferPool(DEFAULT_POOL_BYTES);

  constructor(readonly native: NativeKernels | null = null) {
    this.name = native ? 'cpu:native' : 'cpu';
  }

  /**
   * A storage of `length` elements. Its contents are undefined (a reused buffer keeps its old
   * bytes) unless `zeroed`, which a fresh buffer is already and a reused one is made.
   */
  allocate(dtype: DType, length: number, zeroed = false): Storage {
    const bytes = Math.ceil((length * bytesPerElement(dtype)) / 4) * 4;
    let buffer = this.pool.take(bytes);
    if (buffer && zeroed) new Uint32Array(buffer).fill(0);
    try {
      buffer ??= new ArrayBuffer(bytes);
    } catch (e) {
      // The engine's bare "Out of memory" names nothing: say what was being allocated.
      throw new OutOfMemoryError(
        `a ${dtype} tensor of ${length} elements needs ${bytes} bytes, more than the CPU backend could allocate (${(e as Error).message})`,
      );
    }
    if (this.poisonAllocations) new Uint32Array(buffer).fill(0xffffffff);
    this.stats.liveBytes += bytes;
    this.stats.liveBuffers++;
    this.stats.peakLiveBytes = Math.max(this.stats.peakLiveBytes, this.stats.liveBytes);
    return new Storage(this, dtype, length, null, buffer);
  }

  freeStorage(storage: Storage): void {
    this.stats.liveBytes -= storage.cpu!.byteLength;
    this.stats.liveBuffers--;
    this.pool.give(storage.cpu!);
  }

  memoryStats(): MemoryStats {
    return { ...this.stats, pooledBytes: this.pool.pooledBytes, pooledBuffers: this.pool.pooledBuffers };
  }

  resetPeak(): void {
    this.stats.peakLiveBytes = this.stats.liveBytes;
  }

  async sync(): Promise<void> {}

  describe(): string {
    return this.native ? `CPU ${this.native.describe()}` : 'CPU (plain TypeScript reference backend)';
  }
}
