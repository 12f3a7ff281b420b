import { describe, expect, test } from 'bun:test';
import { getCpuDevice, type Device } from '../../device/device';
import type { DType } from '../../dtype';
import { expectClose, onDevice, poisoned, randomData, testGpu } from '../../testing';
import { mambaDecodeStep, type MambaDecodeOptions } from './mamba-decode';

const gpu = await testGpu();
const cpu = getCpuDevice();

interface Case {
  B: number;
  H: number;
  P: number;
  G: number;
  N: number;
  K: number;
  bias: boolean;
  D: boolean;
  limit: readonly [number, number] | null;
  dtype: DType;
}

/** Three decode steps from seeded states; returns outputs and final states. */
async function run(c: Case, d: Device): Promise<Float32Array[]> {
  const dInner = c.H * c.P;
  const convDim = dInner + 2 * c.G * c.N;
  const width = dInner + convDim + c.H;
  const conv = onDevice(randomData([c.B, convDim, c.K], 1), [c.B, convDim, c.K], d);
  const ssm = onDevice(randomData([c.B, c.H, c.P, c.N], 2), [c.B, c.H, c.P, c.N], d);
  const w = (shape: number[], seed: number, opts: { scale?: number; positive?: boolean } = {}) =>
    onDevice(randomData(shape, seed, { dtype: c.dtype, ...opts }), shape, d, c.dtype);
  const options: MambaDecodeOptions = {
    convWeight: w([convDim, c.K], 3, { scale: 0.5 }),
    convBias: c.bias ? w([convDim], 4) : null,
    dtBias: w([c.H], 5),
    aLog: w([c.H], 6, { scale: 0.5 }),
    D: c.D ? w([c.H], 7) : null,
    normWeight: w([dInner], 8),
    groups: c.G,
    eps: 1e-5,
    dtLimit: c.limit,
  };
  const outs: Float32Array[] = [];
  for (let step = 0; step < 3; step++) {
    const zx = onDevice(randomData([c.B, width], 10 + step), [c.B, width], d);
    outs.push(await poisoned(d, () => mambaDecodeStep(zx, conv, ssm, options)).toFloat32());
  }
  outs.push(await conv.toFloat32(), await ssm.toFloat32());
  return outs;
}

describe('mambaDecodeStep', () => {
  const base: Case = { B: 2, H: 6, P: 5, G: 3, N: 8, K: 4, bias: true, D: true, limit: [0.05, 3], dtype: 'f32' };
  const cases: [string, Case][] = [
    ['odd P, vec4 state, bias, D, clamp', base],
    ['N = 7 (scalar state), no bias, no D, no clamp, bf16 weights', { ...base, N: 7, bias: false, D: false, limit: null, dtype: 'bf16' }],
    ['P = 64 with 2 heads per group (4 rows per lane), K = 3', { ...base, B: 1, H: 4, P: 64, G: 2, N: 16, K: 3 }],
    ['74 rows per group (3 rows per lane, the last lanes idle), scalar state', { ...base, H: 4, P: 37, G: 2, N: 6 }],
  ];
  for (const [name, c] of cases) {
    test.if(gpu !== null)(`WebGPU fused kernel = CPU composition of the separate ops: ${name}`, async () => {
      const ref = await run(c, cpu);
      const got = await run(c, gpu!);
      const what = ['step 0', 'step 1', 'step 2', 'conv state', 'ssm state'];
      got.forEach((g, i) => expectClose(g, ref[i]!, { rtol: 1e-5, what: `${name}: ${what[i]}` }));
    });
  }

  test('clear errors', () => {
    const t = (shape: number[]) => onDevice(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape, cpu);
    const options: MambaDecodeOptions = {
      convWeight: t([24, 4]),
      convBias: null,
      dtBias: t([2]),
      aLog: t([2]),
      D: null,
      normWeight: t([8]),
      groups: 2,
      eps: 1e-5,
      dtLimit: null,
    };
    expect(() => mambaDecodeStep(t([1, 34]), t([1, 24, 4]), t([1, 2, 4, 4]), options)).not.toThrow();
    expect(() => mambaDecodeStep(t([1, 33]), t([1, 24, 4]), t([1, 2, 4, 4]), options)).toThrow(/zxbcdt must be \[1, 34\]/);
    expect(() => mambaDecodeStep(t([1, 34]), t([1, 24, 4]), t([1, 2, 4, 4]), { ...options, groups: 3 })).toThrow(/multiple of 3 groups/);
    expect(() => mambaDecodeStep(t([1, 34]), t([1, 24, 3]), t([1, 2, 4, 4]), options)).toThrow(/convWeight must be \[24, 3\]/);
    expect(() => mambaDecodeStep(t([1, 34]), t([1, 24, 4]), t([1, 2, 4, 4]), { ...options, dtLimit: [1, 0] })).toThrow(/dtLimit \[1, 0\] is not a range/);
    expect(() => mambaDecodeStep(t([1, 34]), t([1, 24, 4]), t([1, 2, 4, 4]), { ...options, aLog: t([2]).requiresGrad_() })).toThrow(
      /mambaDecodeStep backward is not implemented yet \(aLog requires grad\)/,
    );
  });
});
