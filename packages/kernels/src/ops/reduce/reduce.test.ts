import { describe, expect, test } from 'bun:test';
import { getCpuDevice, type Device } from '../../device/device';
import { tensor } from '../../creation';
import { expectClose, gradcheck, onDevice, poisoned, randomData, testGpu } from '../../testing';
import { sumTo } from '../layout/broadcast';
import { max, mean, min, sum, sumAll } from './reduce';

const gpu = await testGpu();
const cpu = getCpuDevice();

describe('reductions: WebGPU vs CPU reference', () => {
  const cases: { shape: number[]; axis?: number | number[]; keepdim?: boolean }[] = [
    { shape: [7, 13] },
    { shape: [5, 3, 11], axis: 1, keepdim: true },
    { shape: [5, 3, 11], axis: [0, 2] },
    { shape: [3, 5000] }, // two passes on the GPU
    { shape: [2, 1, 70001] },
  ];
  for (const op of ['sum', 'mean', 'max', 'min'] as const) {
    for (const dtype of ['f32', 'bf16'] as const) {
      test.if(gpu !== null)(`${op} ${dtype}`, async () => {
        const fn = { sum, mean, max, min }[op];
        for (const c of cases) {
          const v = randomData(c.shape, 21, { dtype });
          const run = (d: Device) => fn(onDevice(v, c.shape, d, dtype), c.axis, { keepdim: c.keepdim });
          const ref = run(cpu);
          const got = poisoned(gpu!, () => run(gpu!));
          expect(got.shape).toEqual(ref.shape);
          // f32 summation error grows with Σ|x|, not with the (possibly cancelling) result.
          const absSum = v.reduce((s, x) => s + Math.abs(x), 0) / (op === 'mean' ? v.length / (ref.size || 1) : 1);
          const atol = op === 'sum' || op === 'mean' ? 1e-7 * absSum : 0;
          expectClose((await got.data()) as Float32Array, (await ref.data()) as Float32Array, { rtol: 2e-6, atol, what: `${op} ${c.shape}` });
        }
      });
    }
  }

  test('CPU reference: hand values, NaN propagation', async () => {
    const x = tensor([1, 5, -2, 4, NaN, 0], [2, 3], { device: cpu });
    expect(Array.from(await sum(x, 0).data())).toEqual([5, NaN, -2]);
    expect(Array.from(await max(x).data())).toEqual([5, NaN]);
    expect(await sumAll(tensor([1, 2, 3.5], [3], { device: cpu })).item()).toBe(6.5);
  });

  test.if(gpu !== null)('NaN propagates through GPU max/min', async () => {
    const x = tensor([1, 5, -2, 4, NaN, 0], [2, 3], { device: gpu! });
    const got = Array.from(await max(x).data());
    expect(got[0]).toBe(5);
    expect(Number.isNaN(got[1])).toBe(true);
  });
});

describe('reduction gradients', () => {
  test('sum, mean, max, sumTo', async () => {
    const x = { values: randomData([4, 5, 3], 9), shape: [4, 5, 3] };
    await gradcheck((a) => sum(a!, 1), [x]);
    await gradcheck((a) => mean(a!, [0, 2], { keepdim: true }), [x]);
    await gradcheck((a) => max(a!, -1), [x]);
    await gradcheck((a) => sumTo(a!, [5, 1]), [x]);
  });
});
