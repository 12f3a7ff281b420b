/**
 * Freed host ArrayBuffers kept for reuse by the next allocation of the same byte size. A model step
 * asks for the same sizes every time, so reuse skips what a fresh `new ArrayBuffer` costs on every
 * op: the engine's zero-fill, the kernel's page faults on first touch (faulting in an 8 MB buffer
 * took 3–4× the write itself on a busy 2-core Zen 3), and garbage waiting for the GC to return it
 * (RSS grew to ~1 GB without reuse). Exact sizes only: no bucket rounding, so long-lived tensors
 * (weights) waste nothing.
 *
 * How much to keep: as much as is live, between a floor and a ceiling. Training frees on the order
 * of what stays live every step (activations against weights, gradients and AdamW's moments: ~1 GB
 * for bench-small in f32) and ran up to 1.6–2.7× faster keeping it; inference holds its weights live
 * but frees only a step's activations (~20–25 MB for a bench-small prefill piece), so the pool stays that
 * small and peak RSS near llama.cpp's. A disposed model's weights find the live bytes gone, so the
 * limit falls and they are dropped (oldest first) instead of held.
 *
 * A dropped buffer's bytes are returned at once (`transfer(0)` detaches it and frees its memory)
 * rather than left to the GC: the engine collects ArrayBuffers late, and a 2048-token prefill's
 * evicted temporaries held ~200 MB of RSS, once per generate, until it did.
 */

/** Buffers below this size are left to the GC: cheap to create, not worth the bookkeeping. */
const MIN_POOLED_BYTES = 4096;

export interface HostBufferPoolLimits {
  /** Bytes the pool may keep however little is live (a prefill's activations fit). */
  floorBytes: number;
  /** Bytes the pool keeps at most however much is live. */
  ceilingBytes: number;
}

export class HostBufferPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  /** Every pooled buffer, oldest release first: the first to go when the pool is over its limit. */
  private readonly order = new Set<ArrayBuffer>();
  private pooled = 0;

  constructor(private readonly limits: HostBufferPoolLimits) {}

  /** A pooled buffer of exactly `bytes` (contents left from its last use), or null: allocate a fresh one. */
  take(bytes: number): ArrayBuffer | null {
    if (bytes < MIN_POOLED_BYTES) return null;
    const buffer = this.free.get(bytes)?.pop();
    if (!buffer) return null;
    this.order.delete(buffer);
    this.pooled -= bytes;
    return buffer;
  }

  /**
   * Takes back a buffer no tensor uses any more while `liveBytes` are still in use. Over the limit,
   * the oldest pooled buffers are dropped first: the sizes a loop keeps asking for stay, and those of
   * a disposed model age out. A transferred (detached) buffer has no bytes left and is not kept.
   */
  give(buffer: ArrayBuffer, liveBytes: number): void {
    const bytes = buffer.byteLength;
    const limit = Math.min(this.limits.ceilingBytes, Math.max(this.limits.floorBytes, liveBytes));
    const keep = bytes >= MIN_POOLED_BYTES && bytes <= limit;
    while (this.pooled + (keep ? bytes : 0) > limit) this.evictOldest();
    if (!keep) {
      if (bytes >= MIN_POOLED_BYTES) release(buffer);
      return;
    }
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
    release(oldest);
  }

  /** Drops every pooled buffer, returning its memory now. */
  trim(): void {
    for (const buffer of this.order) release(buffer);
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

/** Frees a buffer's memory now instead of when the GC gets to it; the buffer is left detached. */
function release(buffer: ArrayBuffer): void {
  const transferable = buffer as TransferableArrayBuffer;
  if (!transferable.detached) transferable.transfer(0);
}

/** ES2024's ArrayBuffer members (Bun has them; the project's `lib` predates them). */
interface TransferableArrayBuffer extends ArrayBuffer {
  readonly detached: boolean;
  transfer(newByteLength?: number): ArrayBuffer;
}
