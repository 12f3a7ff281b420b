import { describe, expect, test } from 'bun:test';
import { tensor } from '../../creation';
import { getCpuDevice, type Device } from '../../device/device';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { Generator } from '../../random';
import { expectClose, gradcheck, onDevice, poisoned, randomData, testGpu, withBindingLimit } from '../../testing';
import { expand } from '../layout/broadcast';
import { transpose } from '../layout/layout';
import { contiguousStrides } from '../../shape';
import { takeMap } from './index-map';
import { indexAdd, scatterAdd } from './scatter';
import { scatterAddCpu } from './scatter.cpu';

const gpu = await testGpu();
const cpu = getCpuDevice();

function ids(n: number, high: number, seed: number): Int32Array {
  const g = new Generator(seed);
  return Int32Array.from({ length: n }, () => Math.floor(g.uniform() * high));
}

/** Σ|source| bounds the f32 summation error of a scatter-add. */
function absSum(v: Float32Array): number {
  return v.reduce((s, x) => s + Math.abs(x), 0);
}

describe('scatter-adds: WebGPU vs CPU reference', () => {
  for (const dtype of ['f32', 'bf16'] as const) {
    test.if(gpu !== null)(`indexAdd along each axis, duplicates, ${dtype} target and source`, async () => {
      const tshape = [7, 5, 9];
      const target = randomData(tshape, 1, { dtype });
      for (const axis of [0, 1, 2]) {
        const n = 13;
        const sshape = [...tshape];
        sshape[axis] = n;
        const source = randomData(sshape, 2 + axis, { dtype });
        const idv = ids(n, tshape[axis]!, 5 + axis);
        const run = (d: Device) => indexAdd(onDevice(target, tshape, d, dtype), axis, onDevice(idv, [n], d), onDevice(source, sshape, d, dtype));
        const ref = run(cpu);
        const got = poisoned(gpu!, () => run(gpu!));
        expect(got.dtype).toBe('f32');
        expectClose((await got.data()) as Float32Array, (await ref.data()) as Float32Array, { rtol: 0, atol: 4e-7 * absSum(source), what: `axis ${axis}` });
      }
    });
  }

  test.if(gpu !== null)('indexAdd with every id equal and a strided source', async () => {
    const source = randomData([6, 300], 3);
    const target = randomData([4, 6], 4);
    const idv = new Int32Array(300).fill(2);
    // transpose gives a [300, 6] view with strides [1, 300].
    const run = (d: Device) => indexAdd(onDevice(target, [4, 6], d), 0, onDevice(idv, [300], d), transpose(onDevice(source, [6, 300], d)));
    const ref = (await run(cpu).data()) as Float32Array;
    expectClose((await poisoned(gpu!, () => run(gpu!)).data()) as Float32Array, ref, { rtol: 0, atol: 4e-7 * absSum(source) });
  });

  test.if(gpu !== null)('scatterAdd along each axis, index smaller than the target', async () => {
    const tshape = [5, 6, 7];
    const target = randomData(tshape, 6);
    for (const axis of [0, 1, 2]) {
      const ishape = [4, 5, 3];
      ishape[axis] = 11;
      const n = ishape.reduce((a, b) => a * b);
      const idv = ids(n, tshape[axis]!, 7 + axis);
      const source = randomData(ishape, 8 + axis, { dtype: 'bf16' });
      const run = (d: Device) => scatterAdd(onDevice(target, tshape, d), axis, onDevice(idv, ishape, d), onDevice(source, ishape, d, 'bf16'));
      const ref = run(cpu);
      const got = poisoned(gpu!, () => run(gpu!));
      expectClose((await got.data()) as Float32Array, (await ref.data()) as Float32Array, { rtol: 0, atol: 4e-7 * absSum(source), what: `axis ${axis}` });
    }
  });

  test.if(gpu !== null)('scatterAdd with an index broadcast along the scatter axis (runs meet on one target)', async () => {
    const target = randomData([3, 4], 9);
    const source = randomData([5, 4], 10);
    const run = (d: Device) =>
      scatterAdd(onDevice(target, [3, 4], d), 0, expand(onDevice(Int32Array.from([2, 0, 1, 2]), [1, 4], d), [5, 4]), onDevice(source, [5, 4], d));
    const ref = (await run(cpu).data()) as Float32Array;
    expectClose((await poisoned(gpu!, () => run(gpu!)).data()) as Float32Array, ref, { rtol: 0, atol: 4e-7 * absSum(source) });
  });

  test.if(gpu !== null)('a thousand entries on 17 rows: matches the CPU, repeated runs are bitwise identical', async () => {
    const source = randomData([1000, 3], 11);
    const idv = ids(1000, 17, 12);
    const run = (d: Device) => indexAdd(onDevice(new Float32Array(17 * 3), [17, 3], d), 0, onDevice(idv, [1000], d), onDevice(source, [1000, 3], d));
    const first = (await run(gpu!).data()) as Float32Array;
    expectClose(first, (await run(cpu).data()) as Float32Array, { rtol: 0, atol: 4e-7 * absSum(source) });
    const second = (await run(gpu!).data()) as Float32Array;
    expect(Array.from(new Uint32Array(second.buffer))).toEqual(Array.from(new Uint32Array(first.buffer)));
  });

  test.if(gpu !== null)('targets above one storage binding are copied and scattered window by window', async () => {
    const g = gpu as WebGpuDevice;
    const target = randomData([301, 37], 13);
    const source = randomData([20, 37], 14);
    const idv = ids(20, 301, 15);
    idv[0] = 300;
    const run = (d: Device) => indexAdd(onDevice(target, [301, 37], d), 0, onDevice(idv, [20], d), onDevice(source, [20, 37], d));
    const ref = (await run(cpu).data()) as Float32Array;
    await withBindingLimit(g, 4096, async () => {
      expectClose((await poisoned(g, () => run(g)).data()) as Float32Array, ref, { rtol: 0, atol: 4e-7 * absSum(source) });
    });
  });
});

describe('ids outside the target', () => {
  test('CPU (host ids) throws', () => {
    const t = tensor(new Float32Array(6), [3, 2], { device: cpu });
    expect(() => indexAdd(t, 0, tensor(Int32Array.from([3]), [1], { device: cpu }), tensor(new Float32Array(2), [1, 2], { device: cpu }))).toThrow(
      /indexAdd: index 3 .* outside \[0, 3\)/,
    );
  });

  test.if(gpu !== null)('GPU skips their entries', async () => {
    const target = randomData([3, 2], 1);
    const source = randomData([4, 2], 2);
    const idv = Int32Array.from([1, -4, 3, 1]);
    const ref = onDevice(target, [3, 2], cpu);
    const cpuIds = onDevice(idv, [4], cpu);
    scatterAddCpu(ref, cpuIds, onDevice(source, [4, 2], cpu), takeMap({ shape: [3, 2], strides: contiguousStrides([3, 2]) }, 0, cpuIds, [2, 1]));
    const got = (await indexAdd(onDevice(target, [3, 2], gpu!), 0, onDevice(idv, [4], gpu!), onDevice(source, [4, 2], gpu!)).data()) as Float32Array;
    expectClose(got, (await ref.data()) as Float32Array, { rtol: 1e-7 });
    expect(got[0]).toBe(target[0]!);
  });
});

describe('scatter gradients', () => {
  test('gradcheck: indexAdd and scatterAdd with respect to target and source', async () => {
    const i1 = tensor(Int32Array.from([1, 3, 1, 0, 1]), [5], { device: cpu });
    await gradcheck(
      (t, s) => indexAdd(t!, 1, i1, s!),
      [
        { values: randomData([2, 4, 3], 1), shape: [2, 4, 3] },
        { values: randomData([2, 5, 3], 2), shape: [2, 5, 3] },
      ],
    );
    const i2 = tensor(Int32Array.from([2, 0, 2, 2, 1, 0]), [2, 3], { device: cpu });
    await gradcheck(
      (t, s) => scatterAdd(t!, 0, i2, s!),
      [
        { values: randomData([3, 4], 3), shape: [3, 4] },
        { values: randomData([2, 3], 4), shape: [2, 3] },
      ],
    );
  });
});
