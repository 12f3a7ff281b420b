/**
 * Every native CPU kernel against the TypeScript reference on the same host data: odd sizes,
 * bf16 operands, strided (transposed, sliced) and broadcast views, bias. Skipped when the native
 * library is unavailable here (NEMOTRON_TEST_DEVICES naming `native` makes that an error).
 */
import { describe, expect, test } from 'bun:test';
import { getCpuDevice, type Device } from '../device/device';
import type { DType } from '../dtype';
import { matmul, linear } from '../ops/matmul/matmul';
import { binary, unary, unaryGrad } from '../ops/elementwise/elementwise';
import { BINARY, UNARY, UNARY_GRAD, type BinaryOp, type UnaryOp } from '../ops/elementwise/definitions';
import { narrow, transpose } from '../ops/layout/layout';
import type { Tensor } from '../tensor';
import { expectClose, onDevice, poisoned, randomData, testNative } from '../testing';

const native = testNative();
const cpu = getCpuDevice();

async function same(what: string, run: (d: Device) => Tensor, rtol: number): Promise<void> {
  const ref = run(cpu);
  const got = poisoned(native!, () => run(native!));
  expect(got.shape).toEqual(ref.shape);
  expectClose(await got.toFloat32(), await ref.toFloat32(), { rtol, what });
}

describe.skipIf(!native)('native matmul', () => {
  const cases: { m: number; n: number; k: number; batch?: number[]; aType?: DType; bType?: DType; bias?: DType }[] = [
    { m: 1, n: 37, k: 29 },
    { m: 3, n: 45, k: 67, bType: 'bf16' },
    { m: 7, n: 16, k: 16, bias: 'f32' },
    { m: 9, n: 33, k: 17, bType: 'bf16', bias: 'bf16' },
    { m: 37, n: 45, k: 29 },
    { m: 65, n: 129, k: 300, bType: 'bf16', aType: 'bf16' },
    { m: 101, n: 70, k: 513, bias: 'f32' },
    { m: 5, n: 11, k: 13, batch: [3] },
  ];
  for (const c of cases) {
    const tag = `${c.batch ? `[${c.batch}]×` : ''}${c.m}×${c.n}×${c.k} a ${c.aType ?? 'f32'} w ${c.bType ?? 'f32'}${c.bias ? ` bias ${c.bias}` : ''}`;
    const batch = c.batch ?? [];
    const operands = (d: Device) => ({
      x: onDevice(randomData([...batch, c.m, c.k], 1, { dtype: c.aType }), [...batch, c.m, c.k], d, c.aType ?? 'f32'),
      w: onDevice(randomData([c.n, c.k], 2, { dtype: c.bType }), [c.n, c.k], d, c.bType ?? 'f32'),
      bias: c.bias ? onDevice(randomData([c.n], 3, { dtype: c.bias }), [c.n], d, c.bias) : undefined,
    });
    const rtol = 3e-6 * Math.sqrt(c.k) + 1e-6;
    test(`linear ${tag}`, () =>
      same(tag, (d) => {
        const { x, w, bias } = operands(d);
        return linear(x, w, bias);
      }, rtol));
    test(`matmul ${tag}, both transposed`, () =>
      same(tag, (d) => {
        const { x, w } = operands(d);
        return matmul(transpose(x, -1, -2), w, { transA: true, transB: true });
      }, rtol));
  }

  test('strided and broadcast views: sliced rows, a 2-D b shared by a batch, gradient shapes', async () => {
    await same('sliced', (d) => {
      const a = onDevice(randomData([4, 23, 50], 5), [4, 23, 50], d);
      const b = onDevice(randomData([41, 31], 6, { dtype: 'bf16' }), [41, 31], d, 'bf16');
      return matmul(narrow(a, 2, 7, 41), narrow(b, 1, 3, 19));
    }, 3e-5);
    await same('transA (weight gradient layout)', (d) => {
      const g = onDevice(randomData([70, 19], 7), [70, 19], d);
      const x = onDevice(randomData([70, 33], 8), [70, 33], d);
      return matmul(g, x, { transA: true });
    }, 3e-5);
  });
});

describe.skipIf(!native)('native elementwise', () => {
  const x = (d: Device, dtype: DType = 'f32') => onDevice(randomData([13, 37], 11, { dtype, scale: 2 }), [13, 37], d, dtype);
  const positive = (d: Device) => onDevice(randomData([13, 37], 12, { positive: true }), [13, 37], d);
  for (const op of Object.keys(UNARY) as UnaryOp[]) {
    const domain = ['log', 'sqrt', 'rsqrt', 'reciprocal'].includes(op);
    test(`unary ${op} (and its gradient), f32 and bf16 input`, async () => {
      await same(op, (d) => unary(op, domain ? positive(d) : x(d), -0.5, 0.75), 2e-6);
      await same(`${op} bf16`, (d) => unary(op, domain ? positive(d) : x(d, 'bf16'), -0.5, 0.75), 2e-6);
      if (UNARY_GRAD[op]) await same(`${op} grad`, (d) => unaryGrad(op, domain ? positive(d) : x(d), x(d, 'bf16'), -0.5, 0.75), 2e-6);
    });
  }
  for (const op of Object.keys(BINARY) as BinaryOp[]) {
    test(`binary ${op}: broadcast row, transposed bf16 operand, scalar`, async () => {
      const row = (d: Device) => onDevice(randomData([37], 13), [37], d);
      const tr = (d: Device) => transpose(onDevice(randomData([37, 13], 14, { dtype: 'bf16' }), [37, 13], d, 'bf16'), 0, 1);
      await same(op, (d) => binary(op, x(d), row(d)), 2e-6);
      await same(`${op} transposed`, (d) => binary(op, tr(d), x(d)), 2e-6);
      await same(`${op} scalar`, (d) => binary(op, 1.5, x(d)), 2e-6);
      await same(`${op} batched`, (d) => binary(op, onDevice(randomData([3, 1, 5], 15), [3, 1, 5], d), onDevice(randomData([4, 5], 16), [4, 5], d)), 2e-6);
    });
  }
});
