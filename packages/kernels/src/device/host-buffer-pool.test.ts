// The CPU backend's pool of freed host buffers: exact-size reuse, a byte limit, small buffers left
// to the engine, and zeros() never seeing a reused buffer's old contents.
import { expect, test } from 'bun:test';
import { empty, zeros } from '../creation';
import { CpuDevice } from './cpu-device';
import { HostBufferPool } from './host-buffer-pool';

test('reuses buffers of exactly the freed size, up to its byte limit; small ones are not kept', () => {
  const pool = new HostBufferPool(300 * 1024);
  const a = new ArrayBuffer(128 * 1024);
  const b = new ArrayBuffer(128 * 1024);
  const c = new ArrayBuffer(128 * 1024);
  pool.give(a);
  pool.give(b);
  pool.give(c); // over the limit: dropped
  pool.give(new ArrayBuffer(1024)); // small: dropped
  expect([pool.pooledBuffers, pool.pooledBytes]).toEqual([2, 256 * 1024]);
  expect(pool.take(64 * 1024)).toBeNull();
  expect(pool.take(128 * 1024)).toBe(b);
  expect(pool.take(128 * 1024)).toBe(a);
  expect(pool.take(128 * 1024)).toBeNull();
  expect(pool.pooledBytes).toBe(0);
});

test('CpuDevice: a freed tensor buffer comes back; zeros() clears it, empty() need not', async () => {
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
