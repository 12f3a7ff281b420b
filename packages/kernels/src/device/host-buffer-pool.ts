/**
 * Freed host ArrayBuffers kept for reuse by the next allocation of the same byte size. A model step
 * asks for the same sizes every time, so reuse skips what a fresh `new ArrayBuffer` costs on every
 * op: the engine's zero-fill, the kernel's page faults on first touch (a few ms per MB-sized output
 * on a busy host), and garbage waiting for the GC to return it (RSS grew to ~1 GB without reuse).
 * Exact sizes only: no bucket rounding, so long-lived tensors (weights) waste nothing.
 */

/** Buffers below this size are left to the GC: cheap to create, not worth the bookkeeping. */
const MIN_POOLED_BYTES = 4096;

export class HostBufferPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  /** Every pooled buffer, oldest release first: the first to go when the pool is over its limit. */
  private readonly order = new Set<ArrayBuffer>();
  private pooled = 0;

  constructor(
    /** Pooled bytes above this evict the oldest pooled buffers (left to the GC). */
    private readonly maxPooledBytes: number,
  ) {}

  /** A buffer of exactly `bytes` bytes: a pooled one (old contents) or a fresh zeroed one. */
  acquire(bytes: number): ArrayBuffer {
    if (bytes >= MIN_POOLED_BYTES) {
      const buffer = this.free.get(bytes)?.pop();
      if (buffer) {
        this.order.delete(buffer);
        this.pooled -= bytes;
        return buffer;
      }
    }
    return new ArrayBuffer(bytes);
  }

  /**
   * Takes back a buffer no tensor uses any more. Over the limit, the oldest pooled buffers are
   * dropped first: the sizes a loop keeps asking for stay, and those of a disposed model age out.
   */
  release(buffer: ArrayBuffer): void {
    const bytes = buffer.byteLength;
    if (bytes < MIN_POOLED_BYTES || bytes > this.maxPooledBytes) return;
    while (this.pooled + bytes > this.maxPooledBytes) this.evictOldest();
    let list = this.free.get(bytes);
    if (!list) this.free.set(bytes, (list = []));
    list.push(buffer);
    this.order.add(buffer);
    this.pooled += bytes;
  }

  private evictOldest(): void {
    const oldest = this.order.values().next().value as ArrayBuffer;
    this.order.delete(oldest);
    const list = this.free.get(oldest.byteLength)!;
    list.splice(list.indexOf(oldest), 1);
    this.pooled -= oldest.byteLength;
  }

  /** Drops every pooled buffer (the GC frees them). */
  trim(): void {
    this.free.clear();
    this.order.clear();
    this.pooled = 0;
  }

  get pooledBytes(): number {
    return this.pooled;
  }

  get pooledBuffers(): number {
    return this.order.size;
  }
}
