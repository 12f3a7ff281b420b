import { describe, expect, test } from 'bun:test';
import { backward } from '../../autograd/backward';
import { tensor } from '../../creation';
import { getCpuDevice, type Device } from '../../device/device';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { fromBf16, toBf16 } from '../../dtype';
import { expectClose, gradcheck, onDevice, poisoned, randomData, testGpu, withBindingLimit } from '../../testing';
import { argmax, topk } from './topk';

const gpu = await testGpu();
const cpu = getCpuDevice();

async function runTopk(device: Device, values: Float32Array, shape: number[], k: number, dtype: 'f32' | 'bf16') {
  const r = poisoned(device, () => topk(onDevice(values, shape, device, dtype), k));
  return { values: await r.values.toFloat32(), indices: Array.from(await r.indices.data<'i32'>()) };
}

/** The first k of each row of a full top-k (k = cols): the top-k for every k from one reference sort. */
function firstK(full: { values: Float32Array; indices: number[] }, rows: number, cols: number, k: number) {
  const values = new Float32Array(rows * k);
  const indices: number[] = [];
  for (let r = 0; r < rows; r++) {
    values.set(full.values.subarray(r * cols, r * cols + k), r * k);
    indices.push(...full.indices.slice(r * cols, r * cols + k));
  }
  return { values, indices };
}

/** GPU top-k for each k against the CPU reference. */
async function expectSameTopk(values: Float32Array, shape: readonly number[], ks: readonly number[], dtype: 'f32' | 'bf16') {
  const [rows, cols] = [shape[0]!, shape[1]!];
  const full = await runTopk(cpu, values, [rows, cols], cols, dtype);
  for (const k of ks) {
    const ref = firstK(full, rows, cols, k);
    const got = await runTopk(gpu!, values, [rows, cols], k, dtype);
    const what = `topk ${shape} k=${k} ${dtype}`;
    expect(got.indices, what).toEqual(ref.indices);
    expectClose(got.values, ref.values, { rtol: 0, what });
  }
}

/** Values on a coarse grid: many exact ties, so the lower-index rule decides. */
function tied(shape: number[], seed: number): Float32Array {
  return randomData(shape, seed).map((v) => Math.round(v * 4) / 4);
}

describe('topk: WebGPU vs CPU reference', () => {
  // Each k > 16 rounds up to a 32- or 64-slot kernel that is slow to compile on llvmpipe: the cases
  // cover every kernel kind (exact and rounded lists, candidates, merges, sort) without repeats.
  for (const dtype of ['f32', 'bf16'] as const) {
    test.if(gpu !== null)(`odd sizes, small and large k, ${dtype}`, async () => {
      for (const cols of [1, 13, 129, 5000]) {
        for (const rows of [1, 7, 37]) {
          const shape = [rows, cols];
          const v = randomData(shape, rows * 31 + cols, { dtype });
          const ks = dtype === 'f32' ? [1, 5, 22, cols === 129 ? 64 : 65, cols] : [1, 5, 65, cols];
          await expectSameTopk(v, shape, [...new Set(ks.filter((k) => k <= cols))], dtype);
        }
      }
    });
  }

  test.if(gpu !== null)('ties go to the lower index (selection, candidate merging and sort paths)', async () => {
    for (const [shape, ks] of [
      [
        [7, 129],
        [3, 64, 129],
      ],
      [
        [3, 5000],
        [1, 22, 300],
      ],
      [[37, 512], [22]],
    ] as const) {
      await expectSameTopk(tied([...shape], 3), shape, ks, 'f32');
    }
  });

  test.if(gpu !== null)('vocabulary-sized rows', async () => {
    const shape = [2, 131072];
    const v = randomData(shape, 4, { scale: 5 });
    await expectSameTopk(v, shape, [1, 50, 200], 'f32');
  });

  test.if(gpu !== null)('NaN ranks above +∞, −∞ last, −0 ties with +0', async () => {
    const v = Float32Array.from([-0, 3, NaN, -Infinity, Infinity, 0, 3, -2]);
    for (const k of [8, 3]) {
      for (const device of [gpu!, cpu]) {
        const r = topk(onDevice(v, [1, 8], device), k);
        expect(Array.from(await r.indices.data())).toEqual([2, 4, 1, 6, 0, 5, 7, 3].slice(0, k));
      }
    }
    await expectSameTopk(v, [1, 8], [8, 3], 'f32');
    // The sort path (k > 64) follows the same order.
    const long = new Float32Array(130).fill(-1);
    long.set(v, 50);
    await expectSameTopk(long, [1, 130], [100], 'f32');
  });

  test.if(gpu !== null)('rows larger than one storage binding are processed in blocks', async () => {
    const device = gpu as WebGpuDevice;
    const shape = [37, 5000];
    const v = randomData(shape, 5);
    await withBindingLimit(device, 64 * 1024, async () => {
      await expectSameTopk(v, shape, [5, 100], 'f32');
    });
  });

  test.if(gpu !== null)('gradient goes to the selected positions', async () => {
    const shape = [7, 129];
    const v = randomData(shape, 6);
    for (const k of [3, 100]) {
      const g = randomData([7, k], 7);
      const grads = [];
      for (const device of [gpu!, cpu]) {
        const x = onDevice(v, shape, device).requiresGrad_();
        const { values } = topk(x, k);
        backward(values, { grad: onDevice(g, [7, k], device) });
        grads.push(await x.grad!.toFloat32());
      }
      expectClose(grads[0]!, grads[1]!, { rtol: 0 });
    }
  });
});

describe('argmax', () => {
  test.if(gpu !== null)('WebGPU vs CPU along each axis, f32 and bf16', async () => {
    const shape = [5, 37, 13];
    for (const dtype of ['f32', 'bf16'] as const) {
      const v = dtype === 'bf16' ? fromBf16(toBf16(tied(shape, 8))) : tied(shape, 8);
      for (const axis of [0, 1, 2, -1]) {
        const got = poisoned(gpu!, () => argmax(onDevice(v, shape, gpu!, dtype), axis));
        const ref = argmax(onDevice(v, shape, cpu, dtype), axis);
        expect(got.shape).toEqual(ref.shape);
        expect(got.dtype).toBe('i32');
        expect(Array.from(await got.data())).toEqual(Array.from(await ref.data()));
      }
    }
    const long = randomData([3, 131072], 9);
    expect(Array.from(await argmax(onDevice(long, [3, 131072], gpu!)).data())).toEqual(Array.from(await argmax(onDevice(long, [3, 131072], cpu)).data()));
  });

  test('hand-checked values and errors', async () => {
    const x = tensor([1, 3, 3, 2, 0, -1], [2, 3], { device: cpu });
    expect(Array.from(await argmax(x).data())).toEqual([1, 0]);
    expect(Array.from(await argmax(x, 0).data())).toEqual([1, 0, 0]);
    const r = topk(tensor([1, 3, 3, 2], [4], { device: cpu }), 2);
    expect(Array.from(await r.values.data())).toEqual([3, 3]);
    expect(Array.from(await r.indices.data())).toEqual([1, 2]);
    expect(() => topk(x, 4)).toThrow(/topk: k = 4 is out of range for a last dim of 3 in \[2, 3\]/);
    expect(() => argmax(tensor(new Float32Array(0), [2, 0], { device: cpu }))).toThrow(/argmax: dimension -1 of \[2, 0\] is empty/);
    expect(topk(x, 0).values.shape).toEqual([2, 0]);
  });
});

test('topk gradcheck', async () => {
  const x = { values: randomData([4, 9], 10), shape: [4, 9] };
  await gradcheck((a) => topk(a!, 3).values, [x]);
  await gradcheck((a) => topk(a!, 9).values, [x]);
});
