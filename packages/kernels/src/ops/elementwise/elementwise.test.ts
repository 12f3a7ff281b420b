import { describe, expect, test } from 'bun:test';
import { getCpuDevice, type Device } from '../../device/device';
import { expectClose, onDevice, poisoned, randomData, testGpu } from '../../testing';
import { tensor } from '../../creation';
import { BINARY, UNARY, type BinaryOp, type UnaryOp } from './definitions';
import { binary, clamp, unary, unaryInPlace, where } from './elementwise';
import { noGrad } from '../../autograd/graph';
import { testNative } from '../../testing';
import { copyInto, transpose, narrow } from '../layout/layout';
import type { Tensor } from '../../tensor';

const gpu = await testGpu();
const cpu = getCpuDevice();

/** Inputs in each op's domain. */
function unaryInput(op: UnaryOp, shape: number[], seed: number, dtype: 'f32' | 'bf16'): Float32Array {
  const positive = op === 'log' || op === 'sqrt' || op === 'rsqrt' || op === 'pow_scalar';
  return randomData(shape, seed, { dtype, scale: op === 'exp' ? 3 : 4, positive });
}

const shape = [7, 13, 3];

describe('unary ops: WebGPU vs CPU reference', () => {
  for (const op of Object.keys(UNARY) as UnaryOp[]) {
    for (const dtype of ['f32', 'bf16'] as const) {
      test.if(gpu !== null)(`${op} ${dtype}`, async () => {
        const values = unaryInput(op, shape, 11, dtype);
        const p = op === 'clamp' ? [-0.7, 1.3] : op === 'pow_scalar' ? [1.7, 0] : [0, 0];
        const ref = await unary(op, onDevice(values, shape, cpu, dtype), p[0], p[1]).data();
        const got = await poisoned(gpu!, () => unary(op, onDevice(values, shape, gpu!, dtype), p[0], p[1])).data();
        expectClose(got as Float32Array, ref as Float32Array, { rtol: 2e-6, what: op });
      });
    }
  }
});

describe('binary ops with broadcasting and scalars: WebGPU vs CPU reference', () => {
  const cases: [number[], number[]][] = [
    [
      [5, 9, 11],
      [5, 9, 11],
    ],
    [[5, 9, 11], [11]],
    [
      [5, 1, 11],
      [9, 1],
    ],
    [[1], [3, 7]],
  ];
  for (const op of Object.keys(BINARY) as BinaryOp[]) {
    test.if(gpu !== null)(op, async () => {
      for (const [sa, sb] of cases) {
        const positive = op === 'pow';
        const a = randomData(sa, 3, { positive });
        // Comparisons need ties: round to a coarse grid.
        const b = randomData(sb, 4, { positive }).map((v, i) => (op === 'eq' || op === 'ne' ? Math.round(v) : v) + (i % 3 === 0 && op === 'eq' ? 0 : 0));
        const aa = op === 'eq' || op === 'ne' ? a.map(Math.round) : a;
        for (const [ta, tb] of [
          [true, true],
          [true, false],
          [false, true],
        ]) {
          const run = (d: Device) => binary(op, ta ? onDevice(aa, sa, d) : 1.5, tb ? onDevice(b, sb, d) : 0.75);
          const ref = await run(cpu).data();
          const got = await poisoned(gpu!, () => run(gpu!)).data();
          expectClose(got as Float32Array, ref as Float32Array, { rtol: 2e-6, what: `${op} ${sa}×${sb}` });
        }
      }
    });
  }

  test.if(gpu !== null)('integer ops keep i32 and are exact', async () => {
    const a = tensor(Int32Array.from([5, -7, 100000001, 3]), [4], { device: gpu! });
    const b = tensor(Int32Array.from([2, 3, 1, -9]), [4], { device: gpu! });
    const s = binary('add', a, b);
    expect(s.dtype).toBe('i32');
    expect(Array.from(await s.data())).toEqual([7, -4, 100000002, -6]);
    expect(Array.from(await binary('mul', a, 3).data())).toEqual([15, -21, 300000003, 9]);
  });
});

describe('CPU reference sanity', () => {
  test('hand-computed values', async () => {
    const x = tensor([-30, -7, 0, 1, 25], [5], { device: cpu });
    expectClose((await unary('softplus', x).data()) as Float32Array, [Math.log1p(Math.exp(-30)), Math.log1p(Math.exp(-7)), Math.LN2, Math.log1p(Math.E), 25], {
      rtol: 1e-7,
    });
    expectClose((await unary('silu', x).data()) as Float32Array, [-30 / (1 + Math.exp(30)), -7 / (1 + Math.exp(7)), 0, 1 / (1 + Math.exp(-1)), 25], {
      rtol: 1e-7,
    });
    expectClose((await unary('relu2', x).data()) as Float32Array, [0, 0, 0, 1, 625]);
    expectClose((await clamp(x, -1, 2).data()) as Float32Array, [-1, -1, 0, 1, 2]);
  });
});

test.if(gpu !== null)('strided and offset operands (views) read the right elements', async () => {
  const shape2 = [9, 14];
  const values = randomData(shape2, 5);
  const run = (d: Device) => {
    const x = onDevice(values, shape2, d);
    const t = narrow(transpose(x), 0, 3, 9); // [9 of 14, 9] strided view with an offset
    return binary('mul', t, unary('exp', t));
  };
  expectClose((await run(gpu!).data()) as Float32Array, (await run(cpu).data()) as Float32Array, { rtol: 2e-6 });
});

test.if(gpu !== null)('where with broadcast condition and scalar branch', async () => {
  const c = Float32Array.from([1, 0, 0, 1, 1]);
  const a = randomData([3, 5], 8);
  const run = (d: Device) => where(onDevice(c, [5], d), onDevice(a, [3, 5], d), -2.5);
  expectClose((await run(gpu!).data()) as Float32Array, (await run(cpu).data()) as Float32Array);
});

test.if(gpu !== null)('large element counts spill the grid into y', async () => {
  const n = 65535 * 256 + 777;
  const values = new Float32Array(n);
  for (let i = 0; i < n; i += 1) values[i] = (i % 1013) * 0.25;
  const out = (await binary('add', onDevice(values, [n], gpu!), 1).data()) as Float32Array;
  expect(out[0]).toBe(1);
  expect(out[n - 1]).toBe(values[n - 1]! + 1);
  expect(out[65535 * 256 + 5]).toBe(values[65535 * 256 + 5]! + 1);
});

describe('vec4 fast path (dense f32 operands, counts and offsets multiples of 4) and its fallbacks', () => {
  const vecShape = [6, 10, 2];
  /** Runs `run` on both devices, compares, and checks whether the last WebGPU kernel took the vec4 path. */
  async function check(what: string, run: (d: Device) => Tensor, vec4: boolean): Promise<void> {
    const ref = await run(cpu).data();
    const out = poisoned(gpu!, () => run(gpu!));
    expect(gpu!.kind === 'webgpu' && gpu!.batch.recentLabels(1)[0]!.endsWith(' vec4')).toBe(vec4);
    expectClose((await out.data()) as Float32Array, ref as Float32Array, { rtol: 2e-6, what });
  }

  test.if(gpu !== null)('every unary op', async () => {
    for (const op of Object.keys(UNARY) as UnaryOp[]) {
      const values = unaryInput(op, vecShape, 21, 'f32');
      const p = op === 'clamp' ? [-0.7, 1.3] : op === 'pow_scalar' ? [1.7, 0] : [0, 0];
      await check(op, (d) => unary(op, onDevice(values, vecShape, d), p[0], p[1]), true);
    }
  });

  test.if(gpu !== null)('every binary op, tensor and scalar operands', async () => {
    for (const op of Object.keys(BINARY) as BinaryOp[]) {
      const positive = op === 'pow';
      const a = randomData(vecShape, 22, { positive }).map((v) => (op === 'eq' || op === 'ne' ? Math.round(v) : v));
      const b = randomData(vecShape, 23, { positive }).map((v) => (op === 'eq' || op === 'ne' ? Math.round(v) : v));
      await check(`${op} tensors`, (d) => binary(op, onDevice(a, vecShape, d), onDevice(b, vecShape, d)), true);
      await check(`${op} scalar`, (d) => binary(op, 1.5, onDevice(b, vecShape, d)), true);
    }
  });

  test.if(gpu !== null)('views at offsets that are multiples of 4 take it; other offsets, odd counts, broadcasts and bf16 fall back', async () => {
    const base = randomData([131], 24);
    const other = randomData([120], 25);
    const at = (d: Device, start: number) => narrow(onDevice(base, [131], d), 0, start, 120);
    await check('offset 8', (d) => binary('mul', at(d, 8), onDevice(other, [120], d)), true);
    await check('offset 3', (d) => binary('mul', at(d, 3), onDevice(other, [120], d)), false);
    await check(
      'output at offset 2',
      (d) => {
        const dst = narrow(onDevice(base, [131], d), 0, 2, 120);
        copyInto(dst, onDevice(other, [120], d));
        return dst;
      },
      false,
    );
    await check('odd count', (d) => unary('exp', narrow(onDevice(base, [131], d), 0, 8, 119)), false);
    await check('broadcast row', (d) => binary('add', onDevice(other, [12, 10], d), onDevice(other.subarray(0, 10), [10], d)), false);
    const bf = randomData([120], 26, { dtype: 'bf16' });
    await check('bf16 operand', (d) => binary('add', onDevice(bf, [120], d, 'bf16'), onDevice(other, [120], d)), false);
  });
});

describe('unaryInPlace', () => {
  const native = testNative();
  for (const device of [cpu, ...(native ? [native] : [])]) {
    test(`${device.name}: writes what the op gives into x itself, on an odd size`, async () => {
      const values = randomData([5, 37], 11).map((v) => v * 3);
      const x = tensor(values, [5, 37], { device });
      const expected = await unary('relu2', tensor(values, [5, 37], { device })).toFloat32();
      const out = noGrad(() => unaryInPlace('relu2', x));
      expect(out).toBe(x);
      expectClose(await x.toFloat32(), expected, { rtol: 0, what: 'relu2 in place' });
    });
  }

  test('refuses a tensor a graph could hold, a strided one, and WebGPU', () => {
    const x = tensor(randomData([4, 6], 2), [4, 6], { device: cpu });
    expect(() => unaryInPlace('relu2', x)).toThrow(/inference only: run it under noGrad/);
    expect(() => noGrad(() => unaryInPlace('relu2', transpose(x, 0, 1)))).toThrow(/dense f32 tensor, got f32 \(strided\)/);
    if (gpu)
      expect(() => noGrad(() => unaryInPlace('relu2', tensor(randomData([4, 6], 2), [4, 6], { device: gpu })))).toThrow(/host tensor, got one on webgpu/);
  });
});
