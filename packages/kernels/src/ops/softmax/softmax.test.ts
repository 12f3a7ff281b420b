import { describe, expect, test } from 'bun:test';
import { backward } from '../../autograd/backward';
import { tensor } from '../../creation';
import { getCpuDevice, type Device } from '../../device/device';
import type { WebGpuDevice } from '../../device/webgpu-device';
import type { Tensor } from '../../tensor';
import { expectClose, gradcheck, onDevice, poisoned, randomData, testGpu, withBindingLimit } from '../../testing';
import { logSoftmax, softmax } from './softmax';

const gpu = await testGpu();
const cpu = getCpuDevice();
const ops = { softmax, logSoftmax };

/** Runs `f` on `device` with x requiring grad, backpropagates `gValues`, returns output and input gradient. */
async function forwardBackward(
  device: Device,
  f: (x: Tensor) => Tensor,
  values: Float32Array,
  shape: number[],
  gValues: Float32Array,
  dtype: 'f32' | 'bf16' = 'f32',
) {
  const x = onDevice(values, shape, device, dtype).requiresGrad_();
  const y = poisoned(device, () => f(x));
  poisoned(device, () => backward(y, { grad: onDevice(gValues, y.shape, device) }));
  return { y: await y.toFloat32(), dx: await x.grad!.toFloat32() };
}

describe('softmax / logSoftmax: WebGPU vs CPU reference', () => {
  // 5000 and 131072 columns take the chunked two-dispatch path.
  const shapes = [
    [1, 1],
    [7, 13],
    [37, 129],
    [3, 5000],
    [1, 131072],
  ];
  for (const kind of ['softmax', 'logSoftmax'] as const) {
    for (const dtype of ['f32', 'bf16'] as const) {
      test.if(gpu !== null)(`${kind} ${dtype} forward and backward`, async () => {
        for (const shape of shapes) {
          const v = randomData(shape, 5, { dtype, scale: 3 });
          const g = randomData(shape, 6);
          const ref = await forwardBackward(cpu, ops[kind], v, shape, g, dtype);
          const got = await forwardBackward(gpu!, ops[kind], v, shape, g, dtype);
          expectClose(got.y, ref.y, { rtol: 2e-6, what: `${kind} ${shape}` });
          expectClose(got.dx, ref.dx, { rtol: 1e-5, what: `${kind} grad ${shape}` });
        }
      });
    }
  }

  test.if(gpu !== null)('other axes of a 3-d tensor', async () => {
    const shape = [5, 3, 11];
    const v = randomData(shape, 7);
    for (const axis of [0, 1]) {
      for (const kind of ['softmax', 'logSoftmax'] as const) {
        const run = (d: Device) => poisoned(d, () => ops[kind](onDevice(v, shape, d), axis));
        const got = run(gpu!);
        expect(got.shape).toEqual(shape);
        expectClose(await got.toFloat32(), await run(cpu).toFloat32(), { rtol: 2e-6, what: `${kind} axis ${axis}` });
      }
    }
  });

  test.if(gpu !== null)('masked −∞ logits (several per row, also leading) and large magnitudes', async () => {
    const ninf = -Infinity;
    const v = Float32Array.from([ninf, ninf, 1, 2, ninf, 1000, 1001, ninf, 999.5, 3]);
    for (const kind of ['softmax', 'logSoftmax'] as const) {
      const got = await ops[kind](onDevice(v, [2, 5], gpu!)).toFloat32();
      const ref = await ops[kind](onDevice(v, [2, 5], cpu)).toFloat32();
      expectClose(got, ref, { rtol: 2e-6, what: kind });
    }
  });

  test.if(gpu !== null)('rows larger than one storage binding are processed in blocks', async () => {
    const device = gpu as WebGpuDevice;
    const shape = [37, 5000];
    const v = randomData(shape, 8);
    const g = randomData(shape, 9);
    const ref = await forwardBackward(cpu, softmax, v, shape, g);
    await withBindingLimit(device, 64 * 1024, async () => {
      const got = await forwardBackward(device, softmax, v, shape, g);
      expectClose(got.y, ref.y, { rtol: 2e-6 });
      expectClose(got.dx, ref.dx, { rtol: 1e-5 });
    });
  });
});

describe('softmax CPU reference and gradients', () => {
  test('hand-checked values', async () => {
    const x = tensor([0, Math.LN2, 5, 5], [2, 2], { device: cpu });
    expectClose(await softmax(x).toFloat32(), [1 / 3, 2 / 3, 0.5, 0.5], { rtol: 1e-7 });
    expectClose(await logSoftmax(x).toFloat32(), [Math.log(1 / 3), Math.log(2 / 3), -Math.LN2, -Math.LN2], { rtol: 1e-7 });
    expectClose(await softmax(tensor([1, 1000], [2], { device: cpu }), 0).toFloat32(), [0, 1]);
    const nan = await softmax(tensor([1, NaN, 2], [3], { device: cpu })).toFloat32();
    expect(Array.from(nan).every(Number.isNaN)).toBe(true);
  });

  test('errors name the op and input', () => {
    expect(() => softmax(tensor(Int32Array.from([1, 2]), [2], { device: cpu }))).toThrow(/softmax: input \[2\] must be f32 or bf16/);
    expect(() => logSoftmax(tensor([1, 2], [2], { device: cpu }), 1)).toThrow(/logSoftmax: axis 1 is out of range/);
  });

  test('gradcheck', async () => {
    const x = { values: randomData([4, 7], 3), shape: [4, 7] };
    await gradcheck((a) => softmax(a!), [x]);
    await gradcheck((a) => logSoftmax(a!), [x]);
    await gradcheck((a) => softmax(a!, 0), [x]);
    await gradcheck((a) => logSoftmax(a!, 0), [x]);
  });
});
