/**
 * Size-bucketed GPU buffer pool with deterministic release: a buffer returns to its bucket when the
 * last tensor that uses it is disposed (never on GC timing), and is reused by the next request of
 * the same bucket. Reuse is safe without fences because every use goes through one queue in order.
 */

export interface MemoryStats {
  /** Bytes held by live tensors (bucket sizes). */
  liveBytes: number;
  /** Bytes kept in the pool for reuse. */
  pooledBytes: number;
  /** Highest `liveBytes` seen since the last {@link BufferPool.resetPeak}. */
  peakLiveBytes: number;
  /** Number of live allocations. */
  liveBuffers: number;
  /** Number of buffers waiting in the pool. */
  pooledBuffers: number;
}

const MIN_BUCKET = 256;

/** Rounds a request up to its bucket: at most 25 % above the request, multiples of 256 bytes. */
export function bucketSize(bytes: number): number {
  if (bytes <= MIN_BUCKET) return MIN_BUCKET;
  const pow = 2 ** Math.floor(Math.log2(bytes));
  const step = Math.max(MIN_BUCKET, pow / 4);
  return Math.ceil(bytes / step) * step;
}

export interface PoolBackend<B> {
  create(bytes: number): B;
  destroy(buffer: B): void;
}

export class BufferPool<B> {
  private readonly free = new Map<number, B[]>();
  private readonly sizes = new Map<B, number>();
  private stats: MemoryStats = { liveBytes: 0, pooledBytes: 0, peakLiveBytes: 0, liveBuffers: 0, pooledBuffers: 0 };

  constructor(
    private readonly backend: PoolBackend<B>,
    /** Largest single allocation the device allows. */
    private readonly maxBufferBytes: number,
    /** Pooled bytes above this are destroyed instead of kept. */
    private readonly maxPooledBytes: number,
  ) {}

  acquire(bytes: number): B {
    let size = bucketSize(bytes);
    if (size > this.maxBufferBytes) size = Math.ceil(bytes / 4) * 4;
    const list = this.free.get(size);
    let buffer = list?.pop();
    if (buffer !== undefined) {
      this.stats.pooledBytes -= size;
      this.stats.pooledBuffers--;
    } else {
      buffer = this.backend.create(size);
      this.sizes.set(buffer, size);
    }
    this.stats.liveBytes += size;
    this.stats.liveBuffers++;
    if (this.stats.liveBytes > this.stats.peakLiveBytes) this.stats.peakLiveBytes = this.stats.liveBytes;
    return buffer;
  }

  release(buffer: B): void {
    const size = this.sizes.get(buffer);
    if (size === undefined) throw new Error('BufferPool.release: buffer does not belong to this pool');
    this.stats.liveBytes -= size;
    this.stats.liveBuffers--;
    if (this.stats.pooledBytes + size > this.maxPooledBytes) {
      this.sizes.delete(buffer);
      this.backend.destroy(buffer);
      return;
    }
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(buffer);
    this.stats.pooledBytes += size;
    this.stats.pooledBuffers++;
  }

  /** Destroys every pooled (unused) buffer. */
  trim(): void {
    for (const list of this.free.values()) {
      for (const b of list) {
        this.sizes.delete(b);
        this.backend.destroy(b);
      }
    }
    this.free.clear();
    this.stats.pooledBytes = 0;
    this.stats.pooledBuffers = 0;
  }

  sizeOf(buffer: B): number {
    return this.sizes.get(buffer) ?? 0;
  }

  memoryStats(): MemoryStats {
    return { ...this.stats };
  }

  resetPeak(): void {
    this.stats.peakLiveBytes = this.stats.liveBytes;
  }
}
