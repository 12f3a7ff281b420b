import { describe, expect, test } from 'bun:test';
import { tensor } from '../../creation';
import { getCpuDevice, type Device } from '../../device/device';
import { testGpu } from '../../testing';
import { incrementInPlace } from './increment';

const gpu = await testGpu();
const devices: Device[] = gpu ? [getCpuDevice(), gpu] : [getCpuDevice()];

describe('incrementInPlace', () => {
  for (const device of devices) {
    test(`${device.kind}: adds to every element in place, i32 and u32`, async () => {
      const t = tensor(Int32Array.of(5, -3, 0, 7, 100), [5], { device });
      incrementInPlace(t, 2);
      incrementInPlace(t, -10);
      expect(Array.from(await t.data())).toEqual([-3, -11, -8, -1, 92]);
      const u = tensor(Uint32Array.of(1, 2), [2], { device });
      incrementInPlace(u, 3);
      expect(Array.from(await u.data())).toEqual([4, 5]);
    });
  }

  test('clear errors', () => {
    const cpu = getCpuDevice();
    expect(() => incrementInPlace(tensor([1, 2], [2], { device: cpu }), 1)).toThrow(/dense i32 or u32/);
    expect(() => incrementInPlace(tensor(Int32Array.of(1), [1], { device: cpu }), 0.5)).toThrow(/by must be an i32/);
  });
});
