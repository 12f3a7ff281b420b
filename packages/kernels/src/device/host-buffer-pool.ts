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
  private pooled = 0;
  private count = 0;

  constructor(
    /** Pooled bytes above this are dropped (left to the GC) instead of kept. */
    private readonly maxPooledBytes: number,
  ) {}

  /** A buffer of exactly `bytes` bytes: a pooled one (old contents) or a fresh zeroed one. */
  acquire(bytes: number): ArrayBuffer {
    if (bytes >= MIN_POOLED_BYTES) {
      const buffer = this.free.get(bytes)?.pop();
      if (buffer) {
        this.pooled -= bytes;
        this.count--;
        return buffer;
      }
    }
    return new ArrayBuffer(bytes);
  }

  /** Takes back a buffer no tensor uses any more. */
  release(buffer: ArrayBuffer): void {
    const bytes = buffer.byteLength;
    if (bytes < MIN_POOLED_BYTES || this.pooled + bytes > this.maxPooledBytes) return;
    let list = this.free.get(bytes);
    if (!list) this.free.set(bytes, (list = []));
    list.push(buffer);
    this.pooled += bytes;
    this.count++;
  }

  /** Drops every pooled buffer (the GC frees them). */
  trim(): void {
    this.free.clear();
    this.pooled = 0;
    this.count = 0;
  }

  get pooledBytes(): number {
    return this.pooled;
  }

  get pooledBuffers(): number {
    return this.count;
  }
}
