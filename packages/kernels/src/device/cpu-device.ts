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
 * Freed host bytes kept for reuse: as many as are live, at least 64 MiB (a bench-small prefill reuses
 * ~20–25 MB) and at most 2 GiB (a training step reuses its activations and gradients); see
 * host-buffer-pool.ts for why.
 */
const POOL_LIMITS = { floorBytes: 64 * 1024 ** 2, ceilingBytes: 2 * 1024 ** 3 };

export class CpuDevice implements StorageOwner {
  readonly kind = 'cpu' as const;
  /** `cpu` (reference) or `cpu:native`. */
  readonly name: 'cpu' | 'cpu:native';
  /** When set, fresh allocations are filled with NaN / all-ones bits so tests catch unwritten outputs. */
  poisonAllocations = false;
  private stats: MemoryStats = { liveBytes: 0, pooledBytes: 0, peakLiveBytes: 0, liveBuffers: 0, pooledBuffers: 0 };
  /** Freed buffers reused by the next allocation of the same size (a model step repeats its sizes). */
  private readonly pool = new HostBufferPool(POOL_LIMITS);
  /** How long the last full collection of {@link collectGarbage} took (0: none yet). */
  private lastCollectionMs = 0;

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
    this.pool.give(storage.cpu!, this.stats.liveBytes);
  }

  memoryStats(): MemoryStats {
    return { ...this.stats, pooledBytes: this.pool.pooledBytes, pooledBuffers: this.pool.pooledBuffers };
  }

  /** Drops the buffers kept for reuse. */
  trimPool(): void {
    this.pool.trim();
  }

  /**
   * After a long piece of work (a generation or a model build that took `workMs`): drops the pooled
   * buffers and collects garbage (see {@link collectGarbage}).
   */
  releaseIdleMemory(workMs: number): void {
    this.pool.trim();
    this.collectGarbage(workMs);
  }

  /**
   * A full garbage collection, when the last one took at most `maxShare` of `workMs` (the work since
   * the last chance to collect). The engine sizes its collections by the heap, which counts the
   * weights' ArrayBuffers, so the small JS garbage of every op (shape arrays, closures, tensor
   * handles) piled up: bench-small's peak RSS grew ~5–15 MiB per generation, to 308 MiB (bf16) over
   * a benchmark's runs where one run peaks near 200. A collection takes 5–25 ms there.
   */
  collectGarbage(workMs: number, maxShare = 0.05): void {
    const gc = (globalThis as { Bun?: { gc(force: boolean): void } }).Bun?.gc;
    if (!gc || workMs * maxShare < this.lastCollectionMs) return;
    const start = performance.now();
    gc(true);
    this.lastCollectionMs = performance.now() - start;
  }

  resetPeak(): void {
    this.stats.peakLiveBytes = this.stats.liveBytes;
  }

  async sync(): Promise<void> {}

  describe(): string {
    return this.native ? `CPU ${this.native.describe()}` : 'CPU (plain TypeScript reference backend)';
  }
}
