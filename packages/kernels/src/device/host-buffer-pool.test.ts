import { describe, expect, test } from 'bun:test';
import { HostBufferPool } from './host-buffer-pool';
import { CpuDevice } from './cpu-device';

describe('HostBufferPool', () => {
  test('a released buffer serves the next request of the same size only', () => {
    const pool = new HostBufferPool(1 << 20);
    const a = pool.acquire(8192);
    pool.release(a);
    expect(pool.acquire(8196)).not.toBe(a);
    expect(pool.acquire(8192)).toBe(a);
    expect(pool.pooledBytes).toBe(0);
  });

  test('small buffers are left to the GC', () => {
    const pool = new HostBufferPool(1 << 20);
    const a = pool.acquire(1024);
    pool.release(a);
    expect(pool.pooledBuffers).toBe(0);
    expect(pool.acquire(1024)).not.toBe(a);
  });

  test('over the limit the oldest pooled buffers go first; one larger than the limit is never kept', () => {
    const pool = new HostBufferPool(3 * 8192);
    const [a, b, c, d] = [pool.acquire(8192), pool.acquire(8192), pool.acquire(8192), pool.acquire(8192)];
    for (const x of [a, b, c, d]) pool.release(x);
    expect(pool.pooledBytes).toBe(3 * 8192);
    const again = [pool.acquire(8192), pool.acquire(8192), pool.acquire(8192)];
    expect(again).toEqual(expect.arrayContaining([b, c, d]));
    expect(again).not.toContain(a);
    pool.release(pool.acquire(4 * 8192));
    expect(pool.pooledBuffers).toBe(0);
  });

  test('the CPU device reuses a disposed tensor’s buffer, and poisons it again when asked', () => {
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
