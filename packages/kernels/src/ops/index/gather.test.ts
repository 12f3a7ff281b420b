import { describe, expect, test } from 'bun:test';
import { backward } from '../../autograd/backward';
import { tensor } from '../../creation';
import { getCpuDevice, type Device } from '../../device/device';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { Generator } from '../../random';
import { expectClose, gradcheck, onDevice, poisoned, randomData, testGpu, testNative, withBindingLimit } from '../../testing';
import { narrow, transpose } from '../layout/layout';
import { embedding, gather, indexSelect } from './gather';
import { gatherCpu } from './gather.cpu';
import { takeMap } from './index-map';

const gpu = await testGpu();
const native = testNative();
const cpu = getCpuDevice();

/** Seeded ids in [0, high) with plenty of duplicates. */
function ids(n: number, high: number, seed: number): Int32Array {
  const g = new Generator(seed);
  return Int32Array.from({ length: n }, () => Math.floor(g.uniform() * high));
}

describe('gathers: WebGPU vs CPU reference', () => {
  for (const dtype of ['f32', 'bf16'] as const) {
    test.if(gpu !== null)(`embedding ${dtype}, 2-D ids with duplicates`, async () => {
      const table = randomData([37, 29], 1, { dtype });
      const idv = ids(5 * 7, 37, 2);
      const run = (d: Device) => embedding(onDevice(table, [37, 29], d, dtype), onDevice(idv, [5, 7], d));
      const ref = run(cpu);
      const got = poisoned(gpu!, () => run(gpu!));
      expect(got.shape).toEqual([5, 7, 29]);
      expect(got.dtype).toBe('f32');
      expectClose((await got.data()) as Float32Array, (await ref.data()) as Float32Array, { rtol: 0 });
    });
  }

  test.if(gpu !== null)('indexSelect along each axis of a strided view, f32 and bf16', async () => {
    for (const dtype of ['f32', 'bf16'] as const) {
      const x = randomData([9, 5, 7], 3, { dtype });
      for (const axis of [0, 1, 2, -1]) {
        const n = 11;
        const len = [7, 5, 9][axis < 0 ? 2 : axis]!;
        const idv = ids(n, len, 4 + axis);
        // transpose(x, 0, 2) is a [7, 5, 9] view with non-unit strides.
        const run = (d: Device) => indexSelect(transpose(onDevice(x, [9, 5, 7], d, dtype), 0, 2), axis, onDevice(idv, [n], d));
        const ref = run(cpu);
        const got = poisoned(gpu!, () => run(gpu!));
        expect(got.shape).toEqual(ref.shape);
        expectClose((await got.data()) as Float32Array, (await ref.data()) as Float32Array, { rtol: 0, what: `${dtype} axis ${axis}` });
      }
    }
  });

  test.if(gpu !== null)('indexSelect keeps integer dtypes', async () => {
    const x = Int32Array.from({ length: 6 * 5 }, (_, i) => i * 7 - 50);
    const run = (d: Device) => indexSelect(onDevice(x, [6, 5], d), 1, onDevice(Int32Array.from([4, 0, 4, 2]), [4], d));
    const got = poisoned(gpu!, () => run(gpu!));
    expect(got.dtype).toBe('i32');
    expect(Array.from(await got.data())).toEqual(Array.from(await run(cpu).data()));
  });

  test.if(gpu !== null)('gather with an index smaller than the input outside the axis', async () => {
    const x = randomData([6, 9, 5], 5);
    for (const axis of [0, 1, 2]) {
      const shape = [5, 8, 3];
      shape[axis] = 13;
      const idv = ids(
        shape.reduce((a, b) => a * b),
        [6, 9, 5][axis]!,
        6 + axis,
      );
      const run = (d: Device) => gather(onDevice(x, [6, 9, 5], d), axis, onDevice(idv, shape, d));
      const ref = run(cpu);
      const got = poisoned(gpu!, () => run(gpu!));
      expect(got.shape).toEqual(shape);
      expectClose((await got.data()) as Float32Array, (await ref.data()) as Float32Array, { rtol: 0, what: `axis ${axis}` });
    }
  });

  test.if(gpu !== null)('tables above one storage binding are gathered window by window', async () => {
    const g = gpu as WebGpuDevice;
    for (const dtype of ['bf16', 'f32'] as const) {
      const table = randomData([301, 37], 7, { dtype });
      const idv = ids(15, 301, 8);
      idv[3] = 300;
      idv[4] = 0;
      const ref = await embedding(onDevice(table, [301, 37], cpu, dtype), onDevice(idv, [3, 5], cpu)).data();
      // 4 KiB bindings: the 22–44 KB table takes 6–13 windows.
      const got = await (
        await withBindingLimit(g, 4096, () => poisoned(g, () => embedding(onDevice(table, [301, 37], g, dtype), onDevice(idv, [3, 5], g))))
      ).data();
      expectClose(got as Float32Array, ref as Float32Array, { rtol: 0, what: dtype });
    }
  });
});

describe('CPU gathers against a plain lookup', () => {
  // An embedding's rows are copied a run at a time (gather.cpu.ts copyRows); strided tables take the element loop.
  const [vocab, hidden] = [11, 37];
  const table = randomData([vocab, hidden], 3);
  const lookup = (idv: Int32Array, rowOf: (id: number) => (j: number) => number, width: number) =>
    Float32Array.from({ length: idv.length * width }, (_, i) => {
      const id = idv[Math.floor(i / width)]!;
      return id >= 0 && id < vocab ? rowOf(id)(i % width) : NaN;
    });
  test('embedding rows, a narrowed (offset) table, a transposed table, a column slice', async () => {
    const idv = ids(13, vocab, 4);
    const t = tensor(table, [vocab, hidden], { device: cpu });
    const plain = (id: number) => (j: number) => table[id * hidden + j]!;
    expectClose((await embedding(t, tensor(idv, [13], { device: cpu })).data()) as Float32Array, lookup(idv, plain, hidden), { rtol: 0 });
    const tail = narrow(t, 0, 2, vocab - 2);
    const tailIds = ids(13, vocab - 2, 5);
    expectClose(
      (await embedding(tail, tensor(tailIds, [13], { device: cpu })).data()) as Float32Array,
      lookup(tailIds, (id) => plain(id + 2), hidden),
      { rtol: 0 },
    );
    const columns = narrow(t, 1, 3, 5);
    expectClose(
      (await embedding(columns, tensor(idv, [13], { device: cpu })).data()) as Float32Array,
      lookup(idv, (id) => (j) => plain(id)(j + 3), 5),
      { rtol: 0 },
    );
    const tr = transpose(tensor(table, [hidden, vocab], { device: cpu }), 0, 1);
    expectClose(
      (await embedding(tr, tensor(idv, [13], { device: cpu })).data()) as Float32Array,
      lookup(idv, (id) => (j) => table[j * vocab + id]!, hidden),
      { rtol: 0 },
    );
  });
  test('ids outside the table give NaN rows in the kernel itself', async () => {
    const idv = Int32Array.from([2, vocab, -1, 0, 1 << 30, 7]);
    const t = tensor(table, [vocab, hidden], { device: cpu });
    const ix = tensor(idv, [2, 3], { device: cpu });
    const out = tensor(new Float32Array(idv.length * hidden), [2, 3, hidden], { device: cpu });
    gatherCpu(t, ix, takeMap(t, 0, ix), out);
    const got = (await out.data()) as Float32Array;
    const want = lookup(idv, (id) => (j) => table[id * hidden + j]!, hidden);
    for (let i = 0; i < want.length; i++) expect(Number.isNaN(want[i]!) ? Number.isNaN(got[i]!) : got[i] === want[i]).toBe(true);
  });
});

describe('ids outside the table', () => {
  test('CPU (host ids) throws naming the op and the id', () => {
    const table = tensor(randomData([4, 3], 1), [4, 3], { device: cpu });
    expect(() => embedding(table, tensor(Int32Array.from([1, 4]), [2], { device: cpu }))).toThrow(/embedding: index 4 at \[1\] of \[2\] is outside \[0, 4\)/);
    expect(() => indexSelect(table, 1, tensor(Int32Array.from([-1]), [1], { device: cpu }))).toThrow(/indexSelect: index -1/);
  });

  test.if(gpu !== null)('GPU writes NaN rows (all-ones for integers) without reading out of bounds', async () => {
    const g = gpu as WebGpuDevice;
    const idv = Int32Array.from([2, 5, -1, 0, 1 << 30]);
    const table = randomData([5, 3], 2);
    // The CPU kernel itself (without the host check) is the reference.
    const refOut = tensor(new Float32Array(15), [5, 3], { device: cpu });
    const cpuTable = onDevice(table, [5, 3], cpu);
    const cpuIds = onDevice(idv, [5], cpu);
    gatherCpu(cpuTable, cpuIds, takeMap(cpuTable, 0, cpuIds), refOut);
    const got = (await (await withBindingLimit(g, 4096, () => embedding(onDevice(table, [5, 3], g), onDevice(idv, [5], g)))).data()) as Float32Array;
    expectClose(got, (await refOut.data()) as Float32Array, { rtol: 0 });
    expect(Number.isNaN(got[3])).toBe(true);
    expect(Number.isNaN(got[14])).toBe(true);
    const ints = indexSelect(onDevice(Int32Array.from([7, 8, 9]), [3], g), 0, onDevice(Int32Array.from([2, 3]), [2], g));
    expect(Array.from(await ints.data())).toEqual([9, -1]);
  });
});

describe('gather gradients', () => {
  test('gradcheck: embedding, indexSelect, gather (duplicate ids accumulate)', async () => {
    const e = tensor(Int32Array.from([3, 0, 3, 6, 3, 1]), [2, 3], { device: cpu });
    await gradcheck((t) => embedding(t!, e), [{ values: randomData([7, 5], 1), shape: [7, 5] }]);
    const s = tensor(Int32Array.from([2, 2, 0, 4, 2]), [5], { device: cpu });
    await gradcheck((t) => indexSelect(t!, 1, s), [{ values: randomData([3, 5, 2], 2), shape: [3, 5, 2] }]);
    const gi = tensor(Int32Array.from([0, 2, 2, 1, 0, 0, 2, 2]), [2, 4], { device: cpu });
    await gradcheck((t) => gather(t!, 1, gi), [{ values: randomData([3, 3], 3), shape: [3, 3] }]);
  });

  test.if(gpu !== null)('embedding gradient on the GPU matches the CPU, also split into windows', async () => {
    const g = gpu as WebGpuDevice;
    const table = randomData([301, 37], 9, { dtype: 'bf16' });
    const idv = ids(24, 301, 10);
    idv.fill(17, 0, 6); // one hot row with many contributions
    const up = randomData([4, 6, 37], 11);
    const grad = (d: Device) => {
      const t = onDevice(table, [301, 37], d, 'bf16').requiresGrad_();
      backward(embedding(t, onDevice(idv, [4, 6], d)), { grad: onDevice(up, [4, 6, 37], d) });
      return t.grad!;
    };
    const ref = (await grad(cpu).data()) as Float32Array;
    expectClose((await poisoned(g, () => grad(g)).data()) as Float32Array, ref, { rtol: 1e-6 });
    expectClose((await (await withBindingLimit(g, 4096, () => poisoned(g, () => grad(g)))).data()) as Float32Array, ref, { rtol: 1e-6, what: 'windows' });
  });

  test.if(native !== null)('embedding gradient on the native backend matches the CPU: threaded, ids at an offset, strided upstream', async () => {
    // 600 ids × 515 columns: enough work for the kernel's threads; one id repeated many times.
    const [V, H, N] = [1001, 515, 600];
    const table = randomData([V, H], 12);
    const idv = ids(N + 3, V, 13);
    idv.fill(42, 100, 180);
    const up = randomData([N, H], 14);
    const grad = (d: Device, strided: boolean) => {
      const t = onDevice(table, [V, H], d).requiresGrad_();
      const idsAt = narrow(onDevice(idv, [N + 3], d), 0, 3, N);
      const g = strided ? transpose(onDevice(up, [H, N], d)) : onDevice(up, [N, H], d);
      backward(embedding(t, idsAt), { grad: g });
      return t.grad!;
    };
    for (const strided of [false, true]) {
      const ref = (await grad(cpu, strided).data()) as Float32Array;
      expectClose((await poisoned(native!, () => grad(native!, strided)).data()) as Float32Array, ref, { rtol: 1e-6, what: `strided ${strided}` });
    }
  });
});
