import { describe, expect, test } from 'bun:test';
import { noGrad } from '../../autograd/graph';
import { getCpuDevice, type Device } from '../../device/device';
import type { WebGpuDevice } from '../../device/webgpu-device';
import type { DType } from '../../dtype';
import type { Tensor } from '../../tensor';
import { expectClose, onDevice, poisoned, randomData, testGpu } from '../../testing';
import { narrow } from '../layout/layout';
import { fusedLinear, type FusedLinearOptions } from './fused-linear';

const gpu = (await testGpu()) as WebGpuDevice | null;
const cpu = getCpuDevice();

interface Case {
  m: number;
  k: number;
  n: number;
  dtype: DType;
  norm?: DType;
  bias?: DType;
  relu2?: boolean;
  residual?: boolean;
}

/** fusedLinear on `d` for the case's seeded data (weights frozen: no grad). */
async function run(c: Case, d: Device): Promise<{ out: Float32Array; label: string }> {
  const x = onDevice(randomData([c.m, c.k], 1), [c.m, c.k], d);
  const weight = onDevice(randomData([c.n, c.k], 2, { dtype: c.dtype, scale: 0.2 }), [c.n, c.k], d, c.dtype);
  const options: FusedLinearOptions = {};
  if (c.norm) options.norm = { weight: onDevice(randomData([c.k], 3, { dtype: c.norm }), [c.k], d, c.norm), eps: 1e-5 };
  if (c.bias) options.bias = onDevice(randomData([c.n], 4, { dtype: c.bias }), [c.n], d, c.bias);
  if (c.relu2) options.activation = 'relu2';
  if (c.residual) options.residual = onDevice(randomData([c.m, c.n], 5), [c.m, c.n], d);
  const out = noGrad(() => poisoned(d, () => fusedLinear(x, weight, options)));
  const label = d.kind === 'webgpu' ? d.batch.recentLabels(1)[0]! : '';
  return { out: (await out.data()) as Float32Array, label };
}

describe('fusedLinear', () => {
  const cases: Case[] = [
    { m: 1, k: 40, n: 517, dtype: 'bf16', norm: 'f32', residual: true },
    { m: 3, k: 37, n: 300, dtype: 'f32', norm: 'bf16', bias: 'f32', relu2: true },
    { m: 8, k: 64, n: 9, dtype: 'bf16', bias: 'bf16', residual: true },
    { m: 2, k: 41, n: 263, dtype: 'f32', norm: 'f32', bias: 'bf16', relu2: true, residual: true },
    { m: 1, k: 512, n: 1030, dtype: 'bf16', norm: 'bf16' },
    // x a uniform, the bf16 norm weight (K not a multiple of 8) from storage.
    { m: 2, k: 44, n: 75, dtype: 'f32', norm: 'bf16', residual: true },
  ];
  for (const c of cases) {
    test.if(gpu !== null)(`WebGPU fused GEMV = CPU composition: ${JSON.stringify(c)}`, async () => {
      const ref = await run(c, cpu);
      const got = await run(c, gpu!);
      expect(got.label.startsWith('fused_linear')).toBe(true);
      expectClose(got.out, ref.out, { rtol: 2e-6, what: JSON.stringify(c) });
    });
  }

  test.if(gpu !== null)('more than 8 rows and weights without a cached texture take the composed ops', async () => {
    const c: Case = { m: 9, k: 40, n: 70, dtype: 'f32', norm: 'f32', residual: true };
    const ref = await run(c, cpu);
    const got = await run(c, gpu!);
    expect(got.label.startsWith('fused_linear')).toBe(false);
    expectClose(got.out, ref.out, { rtol: 2e-6 });
  });

  test('composition on the CPU: norm, bias, relu², residual in that order', async () => {
    const x = onDevice(Float32Array.of(3, 4), [1, 2], cpu);
    const w = onDevice(Float32Array.of(1, 0, 0, -1), [2, 2], cpu);
    // rms(x) = sqrt(12.5): normed = [3, 4] / 3.5355 · [1, 2]; product [0.8485, -2.2627] + bias [0.1, 0.1]; relu² → [0.8985², 0]; + [1, 1].
    const out = (await noGrad(() =>
      fusedLinear(x, w, {
        norm: { weight: onDevice(Float32Array.of(1, 2), [2], cpu), eps: 0 },
        bias: onDevice(Float32Array.of(0.1, 0.1), [2], cpu),
        activation: 'relu2',
        residual: onDevice(Float32Array.of(1, 1), [1, 2], cpu),
      }),
    ).data()) as Float32Array;
    expectClose(out, [1 + (3 / Math.sqrt(12.5) + 0.1) ** 2, 1], { rtol: 1e-6 });
  });

  test('strided x and clear errors', async () => {
    const wide = onDevice(randomData([2, 10], 6), [2, 10], cpu);
    const w = onDevice(randomData([3, 5], 7), [3, 5], cpu);
    const strided: Tensor = narrow(wide, 1, 2, 5);
    expect(noGrad(() => fusedLinear(strided, w)).shape).toEqual([2, 3]);
    expect(() => fusedLinear(strided, onDevice(randomData([3, 4], 8), [3, 4], cpu))).toThrow(/in_features=4/);
    expect(() => fusedLinear(strided, w, { residual: onDevice(randomData([2, 4], 9), [2, 4], cpu) })).toThrow(/residual \[2, 4\] must be \[2, 3\]/);
    expect(() => fusedLinear(strided, w, { norm: { weight: onDevice(randomData([4], 9), [4], cpu), eps: 1e-5 } })).toThrow(/norm weight \[4\] must be \[5\]/);
    const trainable = onDevice(randomData([3, 5], 7), [3, 5], cpu).requiresGrad_();
    expect(() => fusedLinear(strided, trainable)).toThrow(/inference only/);
  });
});
