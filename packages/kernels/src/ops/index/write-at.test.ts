import { describe, expect, test } from 'bun:test';
import { tensor } from '../../creation';
import { getCpuDevice, type Device } from '../../device/device';
import { expectClose, onDevice, poisoned, randomData, testGpu } from '../../testing';
import { permute } from '../layout/layout';
import { copyIntoAt } from './write-at';

const gpu = await testGpu();
const cpu = getCpuDevice();

describe('copyIntoAt', () => {
  test('CPU reference: rows land at the start read from the tensor, outside rows are skipped', async () => {
    const dst = tensor(new Float32Array(6), [1, 6], { device: cpu });
    copyIntoAt(dst, tensor([1, 2, 3], [1, 3], { device: cpu }), 1, tensor(Int32Array.of(4), [1], { device: cpu }));
    expect(Array.from(await dst.data())).toEqual([0, 0, 0, 0, 1, 2]);
    copyIntoAt(dst, tensor([7, 8], [1, 2], { device: cpu }), 1, tensor(Int32Array.of(-1), [1], { device: cpu }));
    expect(Array.from(await dst.data())).toEqual([8, 0, 0, 0, 1, 2]);
    copyIntoAt(dst, tensor([5], [1, 1], { device: cpu }), 1, tensor(Int32Array.of(4), [1], { device: cpu }), -2);
    expect(Array.from(await dst.data())).toEqual([8, 0, 5, 0, 1, 2]);
  });

  test.if(gpu !== null)('WebGPU vs CPU: a strided src into a [B, H, capacity, D] cache at several starts, f32, bf16 and i32', async () => {
    const dstShape = [2, 3, 11, 5];
    const base = randomData(dstShape, 1);
    for (const dtype of ['f32', 'bf16', 'i32'] as const) {
      for (const [start, offset] of [
        [0, 0],
        [3, 0],
        [9, 0],
        [-2, 0],
        [5, -1],
      ] as const) {
        const run = async (d: Device) => {
          // Far from the destination's values, so every written element shows.
          const values = randomData([2, 4, 3, 5], 2, { dtype: dtype === 'bf16' ? 'bf16' : 'f32' }).map((v) => v + 1000);
          const src = permute(onDevice(dtype === 'i32' ? Int32Array.from(values, (v) => Math.round(v * 100)) : values, [2, 4, 3, 5], d, dtype), [0, 2, 1, 3]);
          const dst =
            dtype === 'i32'
              ? onDevice(
                  Int32Array.from(base, (v) => Math.round(v * 100)),
                  dstShape,
                  d,
                )
              : onDevice(base, dstShape, d);
          poisoned(d, () => copyIntoAt(dst, src, 2, onDevice(Int32Array.of(start), [1], d), offset));
          return Float32Array.from(await dst.data());
        };
        const ref = await run(cpu);
        expectClose(await run(gpu!), ref, { rtol: 0, what: `${dtype} at ${start}` });
        // Outside the written rows the destination is unchanged.
        const changed = ref.filter((v, i) => v !== (dtype === 'i32' ? Math.round(base[i]! * 100) : base[i])).length;
        const first = start + offset;
        expect(changed).toBe(2 * 3 * 5 * Math.max(0, Math.min(11, first + 4) - Math.max(0, first)));
      }
    }
  });

  test('clear errors', () => {
    const t = (shape: number[], dtype: 'f32' | 'i32' = 'f32') => tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape, { device: cpu, dtype });
    const at = t([1], 'i32');
    expect(() => copyIntoAt(t([2, 5]), t([3, 1]), 1, at)).toThrow(/match dst except along the axis/);
    expect(() => copyIntoAt(t([2, 5]), t([2, 6]), 1, at)).toThrow(/longer than dst/);
    expect(() => copyIntoAt(t([2, 5]), t([2, 1], 'i32'), 1, at)).toThrow(/does not match dst/);
    expect(() => copyIntoAt(t([2, 5]), t([2, 1]), 1, t([1]))).toThrow(/start must be i32/);
  });
});
