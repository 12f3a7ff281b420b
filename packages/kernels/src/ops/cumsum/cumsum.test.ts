import { describe, expect, test } from 'bun:test';
import { backward } from '../../autograd/backward';
import { tensor } from '../../creation';
import { getCpuDevice, type Device } from '../../device/device';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { expectClose, gradcheck, onDevice, poisoned, randomData, testGpu, withBindingLimit } from '../../testing';
import { cumsum } from './cumsum';

const gpu = await testGpu();
const cpu = getCpuDevice();

async function forwardBackward(device: Device, values: Float32Array, shape: number[], g: Float32Array, dtype: 'f32' | 'bf16', axis = -1) {
  const x = onDevice(values, shape, device, dtype).requiresGrad_();
  const y = poisoned(device, () => cumsum(x, axis));
  poisoned(device, () => backward(y, { grad: onDevice(g, shape, device) }));
  return { y: await y.toFloat32(), dx: await x.grad!.toFloat32() };
}

/** f32 prefix sums drift with the running Σ|x|: the bound scales with the longest row's. */
function sumAbsBound(values: Float32Array, cols: number): number {
  let worst = 0;
  for (let r = 0; r < values.length / cols; r++) {
    let s = 0;
    for (let c = 0; c < cols; c++) s += Math.abs(values[r * cols + c]!);
    worst = Math.max(worst, s);
  }
  return 2e-7 * worst;
}

describe('cumsum: WebGPU vs CPU reference', () => {
  // 5000 and 70001 columns take the chunked two-dispatch path.
  const shapes = [
    [1, 1],
    [7, 13],
    [37, 129],
    [3, 5000],
    [2, 70001],
  ];
  for (const dtype of ['f32', 'bf16'] as const) {
    test.if(gpu !== null)(`${dtype} forward and backward (reversed prefix sums)`, async () => {
      for (const shape of shapes) {
        const cols = shape[1]!;
        const v = randomData(shape, 3, { dtype });
        const g = randomData(shape, 4);
        const ref = await forwardBackward(cpu, v, shape, g, dtype);
        const got = await forwardBackward(gpu!, v, shape, g, dtype);
        expectClose(got.y, ref.y, { rtol: 1e-6, atol: sumAbsBound(v, cols), what: `cumsum ${shape}` });
        expectClose(got.dx, ref.dx, { rtol: 1e-6, atol: sumAbsBound(g, cols), what: `cumsum grad ${shape}` });
      }
    });
  }

  test.if(gpu !== null)('along axis 0 and 1 of a 3-d tensor', async () => {
    const shape = [9, 4, 5];
    const v = randomData(shape, 5);
    for (const axis of [0, 1]) {
      const ref = await forwardBackward(cpu, v, shape, v, 'f32', axis);
      const got = await forwardBackward(gpu!, v, shape, v, 'f32', axis);
      expectClose(got.y, ref.y, { rtol: 1e-6, what: `axis ${axis}` });
      expectClose(got.dx, ref.dx, { rtol: 1e-6, what: `grad axis ${axis}` });
    }
  });

  test.if(gpu !== null)('i32 and u32 stay exact integers (and wrap), also across chunks', async () => {
    const n = 3000;
    const ints = Int32Array.from({ length: 2 * n }, (_, i) => ((i * 7919) % 2001) - 1000);
    for (const device of [gpu!, cpu]) {
      const got = poisoned(device, () => cumsum(tensor(ints, [2, n], { device })));
      expect(got.dtype).toBe('i32');
      const data = await got.data<'i32'>();
      let s = 0;
      for (let c = 0; c < n; c++) s += ints[n + c]!;
      expect(data[2 * n - 1]).toBe(s);
      expect(Array.from(await cumsum(tensor(Int32Array.from([2147483647, 1, 1]), [3], { device })).data())).toEqual([2147483647, -2147483648, -2147483647]);
      const u = cumsum(tensor(Uint32Array.from([4294967295, 2, 3]), [3], { device }));
      expect(u.dtype).toBe('u32');
      expect(Array.from(await u.data())).toEqual([4294967295, 1, 4]);
    }
  });

  test.if(gpu !== null)('rows larger than one storage binding are processed in blocks', async () => {
    const device = gpu as WebGpuDevice;
    const shape = [37, 5000];
    const v = randomData(shape, 6);
    const ref = await forwardBackward(cpu, v, shape, v, 'f32');
    await withBindingLimit(device, 64 * 1024, async () => {
      const got = await forwardBackward(device, v, shape, v, 'f32');
      expectClose(got.y, ref.y, { rtol: 1e-6, atol: sumAbsBound(v, 5000) });
      expectClose(got.dx, ref.dx, { rtol: 1e-6, atol: sumAbsBound(v, 5000) });
    });
  });
});

describe('cumsum CPU reference and gradient', () => {
  test('hand-checked values', async () => {
    expect(Array.from(await cumsum(tensor([1, 2, 3, 4, 5, 6], [2, 3], { device: cpu })).data())).toEqual([1, 3, 6, 4, 9, 15]);
    expect(Array.from(await cumsum(tensor([1, 2, 3, 4, 5, 6], [2, 3], { device: cpu }), 0).data())).toEqual([1, 2, 3, 5, 7, 9]);
    expect(() => cumsum(tensor([1], [1], { device: cpu }), 2)).toThrow(/cumsum: axis 2 is out of range/);
  });

  test('gradcheck', async () => {
    const x = { values: randomData([3, 8], 7), shape: [3, 8] };
    await gradcheck((a) => cumsum(a!), [x]);
    await gradcheck((a) => cumsum(a!, 0), [x]);
  });
});
