import { describe, expect, test } from 'bun:test';
import { getCpuDevice, type Device } from '../../device/device';
import { tensor } from '../../creation';
import { expectClose, gradcheck, onDevice, poisoned, randomData, testDevices, testGpu } from '../../testing';
import { mul, exp } from '../elementwise/elementwise';
import { expand } from './broadcast';
import { cast, concat, contiguous, flatten, narrow, permute, reshape, slice, squeeze, transpose, unsqueeze } from './layout';

const gpu = await testGpu();
const cpu = getCpuDevice();
const devices = await testDevices();

describe('views and copies', () => {
  for (const device of devices) {
    test(`permute + contiguous on ${device.kind}`, async () => {
      const shape = [3, 5, 7];
      const v = randomData(shape, 1);
      const p = poisoned(device, () => contiguous(permute(onDevice(v, shape, device), [2, 0, 1])));
      expect(p.shape).toEqual([7, 3, 5]);
      const got = (await p.data()) as Float32Array;
      for (let a = 0; a < 7; a++)
        for (let b = 0; b < 3; b++)
          for (let c = 0; c < 5; c++) {
            expect(got[a * 15 + b * 5 + c]).toBe(v[b * 35 + c * 7 + a]!);
          }
    });

    test(`narrow, slice, expand, reshape of a view on ${device.kind}`, async () => {
      const v = randomData([6, 9], 2);
      const x = onDevice(v, [6, 9], device);
      const n = (await narrow(x, 1, 2, 5).data()) as Float32Array;
      expect(n[0]).toBe(v[2]!);
      expect(n[6]).toBe(v[9 + 3]!);
      const s = (await slice(x, 0, -2).data()) as Float32Array;
      expect(Array.from(s)).toEqual(Array.from(v.subarray(36)));
      const e = (await expand(reshape(narrow(x, 0, 1, 1), [1, 9]), [4, 9]).data()) as Float32Array;
      expect(Array.from(e.subarray(27))).toEqual(Array.from(v.subarray(9, 18)));
      const r = reshape(transpose(x), [-1]);
      expect(r.shape).toEqual([54]);
      expect(((await r.data()) as Float32Array)[1]).toBe(v[9]!);
      expect(squeeze(unsqueeze(x, 1)).shape).toEqual([6, 9]);
      expect(flatten(reshape(x, [2, 3, 9]), 1).shape).toEqual([2, 27]);
    });

    test(`concat (f32 and bf16) on ${device.kind}`, async () => {
      const a = randomData([3, 5], 3, { dtype: 'bf16' });
      const b = randomData([3, 2], 4, { dtype: 'bf16' });
      for (const dtype of ['f32', 'bf16'] as const) {
        const c = poisoned(device, () => concat([onDevice(a, [3, 5], device, dtype), onDevice(b, [3, 2], device, dtype)], 1));
        expect(c.dtype).toBe(dtype);
        const got = await c.toFloat32();
        for (let r = 0; r < 3; r++) {
          expect(Array.from(got.subarray(r * 7, r * 7 + 5))).toEqual(Array.from(a.subarray(r * 5, r * 5 + 5)));
          expect(Array.from(got.subarray(r * 7 + 5, r * 7 + 7))).toEqual(Array.from(b.subarray(r * 2, r * 2 + 2)));
        }
      }
      const rows = concat([onDevice(a, [3, 5], device, 'bf16'), onDevice(a, [3, 5], device, 'bf16')], 0);
      expect(Array.from(await rows.toFloat32())).toEqual([...a, ...a]);
    });
  }
});

describe('cast', () => {
  test('f32 → bf16 rounds to nearest even like the host, on every device', async () => {
    const v = Float32Array.from([1, 1.00390625, 1.01171875, -3.3e-5, 65504.5, Number.POSITIVE_INFINITY, 1e-40, 3.14159]);
    const want = await cast(tensor(v, [v.length], { device: cpu }), 'bf16').data();
    for (const device of devices) {
      const got = await poisoned(device, () => cast(onDevice(v, [v.length], device), 'bf16')).data();
      expect(Array.from(got)).toEqual(Array.from(want));
    }
    expect(Array.from(want.subarray(0, 3))).toEqual([0x3f80, 0x3f80, 0x3f82]);
  });

  test.if(gpu !== null)('odd-length bf16 results and i32 ↔ f32', async () => {
    const v = randomData([1, 13], 5);
    const run = (d: Device) => cast(cast(narrow(onDevice(v, [1, 13], d), 1, 1, 11), 'bf16'), 'f32');
    expectClose((await run(gpu!).data()) as Float32Array, (await run(cpu).data()) as Float32Array, { rtol: 0 });
    const ints = await cast(tensor([1.7, -2.2, 3], [3], { device: gpu! }), 'i32').data();
    expect(Array.from(ints)).toEqual([1, -2, 3]);
  });
});

describe('layout gradients (finite differences on the CPU reference)', () => {
  test('permute, narrow, expand, concat, reshape', async () => {
    const x = { values: randomData([3, 4], 6), shape: [3, 4] };
    const y = { values: randomData([3, 2], 7), shape: [3, 2] };
    await gradcheck(
      (a, b) =>
        mul(
          concat([permute(reshape(a!, [2, 2, 3]), [2, 1, 0]), expand(reshape(narrow(b!, 1, 1, 1), [3, 1, 1]), [3, 2, 1])], 2),
          exp(a!.rank === 2 ? reshape(narrow(a!, 1, 0, 3), [3, 1, 3]) : a!),
        ),
      [x, y],
    );
  });
});
