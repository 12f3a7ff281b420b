import { describe, expect, test } from 'bun:test';
import { backward } from '../../autograd/backward';
import { tensor } from '../../creation';
import { getCpuDevice, type Device } from '../../device/device';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { Generator } from '../../random';
import { deviceLabel, expectClose, gradcheck, onDevice, poisoned, randomData, testGpu, testNative, withBindingLimit } from '../../testing';
import { assertValidLabels, crossEntropy, type CrossEntropyReduction } from './cross-entropy';

const gpu = await testGpu();
const native = testNative();
const cpu = getCpuDevice();
/** The devices checked against the CPU reference: the native CPU backend and WebGPU. */
const fast = [native, gpu].filter((d): d is Device => d !== null);
const IGNORE = -100;

/** Seeded labels in [0, V), every `ignoreEvery`-th row ignored. */
function makeLabels(rows: number, V: number, seed: number, ignoreEvery = 3): Int32Array {
  const g = new Generator(seed);
  return Int32Array.from({ length: rows }, (_, i) => (i % ignoreEvery === 1 ? IGNORE : Math.floor(g.uniform() * V)));
}

/** Per-row losses straight from the definition, in f64 (0 for ignored rows). */
function directLosses(logits: Float32Array, labels: Int32Array, V: number): number[] {
  return Array.from(labels, (label, r) => {
    if (label === IGNORE) return 0;
    const row = logits.subarray(r * V, (r + 1) * V);
    const max = row.reduce((m, v) => Math.max(m, v), -Infinity);
    const lse = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
    return lse - row[label]!;
  });
}

function reduce(losses: number[], labels: Int32Array, reduction: CrossEntropyReduction): number[] {
  if (reduction === 'none') return losses;
  const total = losses.reduce((s, v) => s + v, 0);
  const kept = labels.filter((l) => l !== IGNORE).length;
  return [reduction === 'sum' ? total : total / Math.max(kept, 1)];
}

async function forwardBackward(
  device: Device,
  logits: Float32Array,
  labels: Int32Array,
  shape: number[],
  reduction: CrossEntropyReduction,
  dtype: 'f32' | 'bf16',
) {
  const x = onDevice(logits, shape, device, dtype).requiresGrad_();
  const loss = poisoned(device, () => crossEntropy(x, onDevice(labels, [shape[0]!], device), { reduction }));
  const g = reduction === 'none' ? randomData([shape[0]!], 17) : Float32Array.of(1.5);
  poisoned(device, () => backward(loss, { grad: onDevice(g, loss.shape, device) }));
  return { loss: await loss.toFloat32(), dx: await x.grad!.toFloat32() };
}

describe('crossEntropy: native and WebGPU vs CPU reference vs the definition in f64', () => {
  const shapes = [
    [1, 1],
    [7, 13],
    [37, 129],
    [3, 5000],
    [2, 131072],
  ];
  for (const dtype of ['f32', 'bf16'] as const) {
    for (const reduction of ['mean', 'sum', 'none'] as const) {
      for (const device of fast) {
        test(`${deviceLabel(device)}: ${dtype} ${reduction}`, async () => {
          for (const shape of shapes) {
            const [rows, V] = [shape[0]!, shape[1]!];
            const logits = randomData(shape, rows + V, { dtype, scale: 4 });
            const labels = makeLabels(rows, V, V);
            const what = `${reduction} ${shape} ${dtype}`;
            const ref = await forwardBackward(cpu, logits, labels, shape, reduction, dtype);
            const got = await forwardBackward(device, logits, labels, shape, reduction, dtype);
            const direct = reduce(directLosses(logits, labels, V), labels, reduction);
            expectClose(ref.loss, direct, { rtol: 1e-6, what: `cpu ${what}` });
            expectClose(got.loss, direct, { rtol: 2e-6, atol: 1e-6, what: `${deviceLabel(device)} ${what}` });
            expectClose(got.dx, ref.dx, { rtol: 1e-5, atol: 1e-9, what: `grad ${what}` });
          }
        });
      }
    }
  }

  test.if(fast.length > 0)('stable for large logits over a 131072-entry vocabulary', async () => {
    const [rows, V] = [3, 131072];
    const logits = randomData([rows, V], 21, { scale: 30 });
    for (let i = 0; i < logits.length; i += 977) logits[i] = 500 + (i % 7);
    const labels = Int32Array.from([0, 977 * 5, 12345]);
    for (const device of [...fast, cpu]) {
      const loss = crossEntropy(onDevice(logits, [rows, V], device), onDevice(labels, [rows], device), { reduction: 'none' });
      expectClose(await loss.toFloat32(), directLosses(logits, labels, V), { rtol: 1e-6, atol: 2e-5, what: device.kind });
    }
  });

  test.if(fast.length > 0)('no kept rows: mean loss 0 and zero gradient', async () => {
    for (const device of [...fast, cpu]) {
      const x = onDevice(randomData([4, 9], 22), [4, 9], device).requiresGrad_();
      const loss = crossEntropy(x, onDevice(new Int32Array(4).fill(IGNORE), [4], device));
      expect(loss.shape).toEqual([]);
      expect(await loss.item()).toBe(0);
      backward(loss);
      expect(Array.from(await x.grad!.toFloat32()).every((v) => v === 0)).toBe(true);
    }
  });

  test.if(gpu !== null)('logits larger than one storage binding are processed in blocks of rows', async () => {
    const device = gpu as WebGpuDevice;
    const shape = [37, 5000];
    const logits = randomData(shape, 23, { scale: 3 });
    const labels = makeLabels(37, 5000, 24);
    const ref = await forwardBackward(cpu, logits, labels, shape, 'mean', 'f32');
    await withBindingLimit(device, 64 * 1024, async () => {
      const got = await forwardBackward(device, logits, labels, shape, 'mean', 'f32');
      expectClose(got.loss, ref.loss, { rtol: 2e-6 });
      expectClose(got.dx, ref.dx, { rtol: 1e-5, atol: 1e-9 });
      // A single row that does not fit is refused with a clear error.
      device.limits.maxStorageBufferBindingSize = 16 * 1024;
      expect(() => crossEntropy(onDevice(logits, shape, device), onDevice(labels, [37], device))).toThrow(
        /crossEntropy logits \[37, 5000\]: one row takes 20000 bytes/,
      );
    });
  });

  test('labels out of range: the CPU backends throw naming the row; NaN logits give NaN losses', async () => {
    const logits = randomData([3, 5], 25);
    const labels = Int32Array.from([1, 5, IGNORE]);
    for (const device of [cpu, ...(native ? [native] : [])]) {
      expect(() => crossEntropy(onDevice(logits, [3, 5], device), onDevice(labels, [3], device))).toThrow(
        /crossEntropy: label 5 at row 1 is outside \[0, 5\) and is not ignoreIndex \(-100\)/,
      );
      // Rows of 37: the native kernel's vector loop and its tail both see them.
      const withNaN = randomData([3, 37], 27);
      withNaN[37 + 30] = Number.NaN;
      const losses = await crossEntropy(onDevice(withNaN, [3, 37], device), onDevice(Int32Array.from([1, 2, 0]), [3], device), {
        reduction: 'none',
      }).toFloat32();
      expect([Number.isNaN(losses[0]!), Number.isNaN(losses[1]!), Number.isNaN(losses[2]!)]).toEqual([false, true, false]);
    }
  });

  test.if(gpu !== null)('labels out of range: GPU gives NaN, assertValidLabels throws', async () => {
    const logits = randomData([3, 5], 25);
    const labels = Int32Array.from([1, 5, IGNORE]);
    const x = onDevice(logits, [3, 5], gpu!).requiresGrad_();
    const perRow = crossEntropy(x, onDevice(labels, [3], gpu!), { reduction: 'none' });
    const values = await perRow.toFloat32();
    expect(Number.isNaN(values[1]!)).toBe(true);
    expect(values[0]).toBeCloseTo(
      directLosses(
        logits,
        labels.map((l, i) => (i === 1 ? IGNORE : l)),
        5,
      )[0]!,
      5,
    );
    expect(values[2]).toBe(0);
    expect(Number.isNaN(await crossEntropy(x, onDevice(labels, [3], gpu!)).item())).toBe(true);
    await expect(assertValidLabels(onDevice(labels, [3], gpu!), 5)).rejects.toThrow(/label 5 at row 1/);
    await assertValidLabels(onDevice(Int32Array.from([0, 4, IGNORE]), [3], gpu!), 5);
  });
});

describe('crossEntropy CPU reference and gradient', () => {
  test('hand-checked values', async () => {
    // logits [0, ln 2]: softmax [1/3, 2/3].
    const x = tensor([0, Math.LN2, 0, Math.LN2], [2, 2], { device: cpu });
    const labels = tensor(Int32Array.from([1, 0]), [2], { device: cpu });
    expectClose(await crossEntropy(x, labels, { reduction: 'none' }).toFloat32(), [Math.log(1.5), Math.log(3)], { rtol: 1e-7 });
    expect(await crossEntropy(x, labels).item()).toBeCloseTo((Math.log(1.5) + Math.log(3)) / 2, 6);
    expect(await crossEntropy(x, tensor(Int32Array.from([1, 7]), [2], { device: cpu }), { ignoreIndex: 7 }).item()).toBeCloseTo(Math.log(1.5), 6);
    // Leading dims: logits [1, 2, V] with labels [1, 2].
    const perToken = crossEntropy(tensor([0, Math.LN2, 0, Math.LN2], [1, 2, 2], { device: cpu }), tensor(Int32Array.from([1, 0]), [1, 2], { device: cpu }), {
      reduction: 'none',
    });
    expect(perToken.shape).toEqual([1, 2]);
    expectClose(await perToken.toFloat32(), [Math.log(1.5), Math.log(3)], { rtol: 1e-7 });
  });

  test('errors name the op and shapes', () => {
    const x = tensor(new Float32Array(6), [2, 3], { device: cpu });
    expect(() => crossEntropy(x, tensor(Int32Array.from([0, 1, 2]), [3], { device: cpu }))).toThrow(
      /crossEntropy: labels \[3\] must match the logits \[2, 3\] without their last dim/,
    );
    expect(() => crossEntropy(x, tensor([0, 1], [2], { device: cpu }))).toThrow(/labels \[2\] must be i32, got f32/);
    expect(() => crossEntropy(tensor(new Float32Array(0), [2, 0], { device: cpu }), tensor(Int32Array.from([0, 1]), [2], { device: cpu }))).toThrow(
      /have no classes/,
    );
  });

  test('gradcheck for each reduction, with an ignored row', async () => {
    const logits = { values: randomData([5, 7], 26, { scale: 2 }), shape: [5, 7] };
    const labels = tensor(Int32Array.from([3, IGNORE, 0, 6, 2]), [5], { device: cpu });
    for (const reduction of ['mean', 'sum', 'none'] as const) await gradcheck((a) => crossEntropy(a!, labels, { reduction }), [logits]);
  });
});
