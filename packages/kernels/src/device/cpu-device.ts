/** The CPU backend: plain TypeScript over typed arrays. It is also the reference every kernel is checked against. */
import { bytesPerElement, type DType } from '../dtype';
import { OutOfMemoryError } from './errors';
import type { MemoryStats } from '../runtime/pool';
import { Storage, type StorageOwner } from '../runtime/storage';

export class CpuDevice implements StorageOwner {
  readonly kind = 'cpu' as const;
  readonly name = 'cpu';
  /** When set, fresh allocations are filled with NaN / all-ones bits so tests catch unwritten outputs. */
  poisonAllocations = false;
  private stats: MemoryStats = { liveBytes: 0, pooledBytes: 0, peakLiveBytes: 0, liveBuffers: 0, pooledBuffers: 0 };

  allocate(dtype: DType, length: number): Storage {
    const bytes = Math.ceil((length * bytesPerElement(dtype)) / 4) * 4;
    let buffer: ArrayBuffer;
    try {
      buffer = new ArrayBuffer(bytes);
    } catch (e) {
      // The engine's bare "Out of memory" names nothing: say what was being allocated.
      throw new OutOfMemoryError(`a ${dtype} tensor of ${length} elements needs ${bytes} bytes, more than the CPU backend could allocate (${(e as Error).message})`);
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
  }

  memoryStats(): MemoryStats {
    return { ...this.stats };
  }

  resetPeak(): void {
    this.stats.peakLiveBytes = this.stats.liveBytes;
  }

  async sync(): Promise<void> {}

  describe(): string {
    return 'CPU (plain TypeScript reference backend)';
  }
}
