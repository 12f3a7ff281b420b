/**
 * Freed host ArrayBuffers kept for reuse by the CPU backend, matched by exact byte size (a training
 * step allocates the same shapes every step). A fresh large ArrayBuffer is fresh pages from the
 * OS: the first write to each page faults and the kernel zeroes it, which measured 3–4× the time of
 * the write itself (an 8 MB scale: 19–25 ms fresh, 5–7 ms into a reused buffer, on a busy 2-core
 * Zen 3). Small buffers come from the engine's heap cheaply and are not pooled.
 */

/** Buffers below this size are left to the engine. */
const MIN_POOLED_BYTES = 64 * 1024;

export class HostBufferPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  pooledBytes = 0;
  pooledBuffers = 0;

  constructor(
    /** Bytes kept at most; buffers freed beyond it are left to the garbage collector. */
    private readonly maxPooledBytes: number,
  ) {}

  /** A pooled buffer of exactly `bytes` (contents left from its last use), or null. */
  take(bytes: number): ArrayBuffer | null {
    const buffer = this.free.get(bytes)?.pop();
    if (!buffer) return null;
    this.pooledBytes -= bytes;
    this.pooledBuffers--;
    return buffer;
  }

  /** Keeps `buffer` for reuse when it is large enough and the pool has room. */
  give(buffer: ArrayBuffer): void {
    const bytes = buffer.byteLength;
    // A transferred (detached) buffer has no bytes left to reuse.
    if (bytes < MIN_POOLED_BYTES || this.pooledBytes + bytes > this.maxPooledBytes) return;
    let list = this.free.get(bytes);
    if (!list) this.free.set(bytes, (list = []));
    list.push(buffer);
    this.pooledBytes += bytes;
    this.pooledBuffers++;
  }
}
