// The CPU backend's pool of freed host buffers: exact-size reuse, a limit that follows the live
// bytes between a floor and a ceiling (oldest evicted first), small buffers left to the GC, and
// zeros() never seeing a reused buffer's old contents while empty() and poisoning may.
import { describe, expect, test } from 'bun:test';
import { empty, zeros } from '../creation';
import { CpuDevice } from './cpu-device';
import { HostBufferPool } from './host-buffer-pool';

const fixed = (bytes: number) => new HostBufferPool({ floorBytes: bytes, ceilingBytes: bytes });

describe('HostBufferPool', () => {
  test('a given-back buffer serves the next request of exactly its size', () => {
    const pool = fixed(1 << 20);
    const a = new ArrayBuffer(8192);
    const b = new ArrayBuffer(8192);
    pool.give(a, 0);
    pool.give(b, 0);
    expect([pool.pooledBuffers, pool.pooledBytes]).toEqual([2, 16384]);
    expect(pool.take(8196)).toBeNull();
    expect(pool.take(8192)).toBe(b);
    expect(pool.take(8192)).toBe(a);
    expect(pool.take(8192)).toBeNull();
    expect(pool.pooledBytes).toBe(0);
  });

  test('small buffers are left to the GC', () => {
    const pool = fixed(1 << 20);
    pool.give(new ArrayBuffer(1024), 0);
    expect(pool.pooledBuffers).toBe(0);
    expect(pool.take(1024)).toBeNull();
  });

  test('over the limit the oldest pooled buffers go first; one larger than the limit is never kept', () => {
    const pool = fixed(3 * 8192);
    const [a, b, c, d] = [0, 1, 2, 3].map(() => new ArrayBuffer(8192));
    for (const x of [a, b, c, d]) pool.give(x!, 0);
    expect(pool.pooledBytes).toBe(3 * 8192);
    const again = [pool.take(8192), pool.take(8192), pool.take(8192)];
    expect(again).toEqual(expect.arrayContaining([b, c, d]));
    expect(again).not.toContain(a);
    pool.give(new ArrayBuffer(4 * 8192), 0);
    expect(pool.pooledBuffers).toBe(0);
  });

  test('the limit follows the live bytes between floor and ceiling: a freed model ages out', () => {
    const pool = new HostBufferPool({ floorBytes: 2 * 8192, ceilingBytes: 6 * 8192 });
    const buffers = [0, 1, 2, 3, 4, 5, 6].map(() => new ArrayBuffer(8192));
    // Plenty live (a training step's weights and moments): up to the ceiling is kept.
    for (const x of buffers) pool.give(x, 100 * 8192);
    expect(pool.pooledBytes).toBe(6 * 8192);
    // Live bytes gone (the model disposed): the next release trims the pool to the floor, newest kept.
    pool.give(new ArrayBuffer(3 * 8192), 0);
    expect(pool.pooledBuffers).toBe(2);
    expect([pool.take(8192), pool.take(8192)]).toEqual(expect.arrayContaining([buffers[5], buffers[6]]));
    // In between, the live bytes are the limit (fresh buffers: evicted ones were freed).
    for (const _ of buffers) pool.give(new ArrayBuffer(8192), 4 * 8192);
    expect(pool.pooledBytes).toBe(4 * 8192);
    pool.trim();
    expect([pool.pooledBuffers, pool.pooledBytes]).toEqual([0, 0]);
  });

  test('a dropped buffer frees its bytes at once (detached) instead of waiting for the GC', () => {
    const pool = fixed(2 * 8192);
    const [a, b, c] = [0, 1, 2].map(() => new ArrayBuffer(8192));
    const big = new ArrayBuffer(3 * 8192);
    const small = new ArrayBuffer(1024);
    for (const x of [a, b, c, big, small]) pool.give(x!, 0);
    // a evicted by c, big over the limit: both freed; small is the GC's, b and c stay usable.
    const detached = (x: ArrayBuffer) => x.byteLength === 0;
    expect([a!, big, small, b!, c!].map(detached)).toEqual([true, true, false, false, false]);
    pool.trim();
    expect([b!, c!].map(detached)).toEqual([true, true]);
    // A buffer already detached elsewhere (sent to a worker) is skipped, not an error.
    const sent = new ArrayBuffer(8192);
    structuredClone(sent, { transfer: [sent] });
    expect(() => pool.give(sent, 0)).not.toThrow();
    expect(pool.pooledBuffers).toBe(0);
  });
});

describe('CpuDevice', () => {
  test('a freed tensor buffer comes back; zeros() clears it, empty() need not', async () => {
    const device = new CpuDevice();
    const n = 50_000; // 200 kB: pooled
    const first = empty([n], { device });
    new Float32Array(first.storage.cpu!).fill(7);
    const buffer = first.storage.cpu;
    first.dispose();
    expect(device.memoryStats().pooledBuffers).toBe(1);
    const again = empty([n], { device });
    expect(again.storage.cpu).toBe(buffer);
    again.dispose();
    const z = zeros([n], { device });
    expect(z.storage.cpu).toBe(buffer);
    expect((await z.data<'f32'>()).every((v) => v === 0)).toBe(true);
    expect(device.memoryStats()).toMatchObject({ liveBuffers: 1, pooledBuffers: 0 });
    z.dispose();
  });

  test('a reused buffer is poisoned again when asked', () => {
    const device = new CpuDevice();
    const first = device.allocate('f32', 4096);
    new Float32Array(first.cpu!).fill(3);
    first.release();
    expect(device.memoryStats().pooledBytes).toBe(16384);
    device.poisonAllocations = true;
    const second = device.allocate('f32', 4096);
    expect(second.cpu).toBe(first.cpu);
    expect(Number.isNaN(new Float32Array(second.cpu!)[0])).toBe(true);
    expect(device.memoryStats()).toMatchObject({ liveBytes: 16384, pooledBytes: 0 });
  });
});
