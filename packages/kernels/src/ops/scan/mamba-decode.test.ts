import { describe, expect, test } from 'bun:test';
import { getCpuDevice, type Device } from '../../device/device';
import type { DType } from '../../dtype';
import { noGrad } from '../../autograd/graph';
import type { Tensor } from '../../tensor';
import { expectClose, onDevice, poisoned, randomData, testGpu, testNative } from '../../testing';
import { causalConv1d } from '../conv/conv';
import { add, clamp, exp, neg, softplus } from '../elementwise/elementwise';
import { narrow, reshape } from '../layout/layout';
import { groupedGatedRmsNorm } from '../norm/norm';
import { mambaDecodeStep, type MambaDecodeOptions } from './mamba-decode';
import { ssdScan } from './scan';

const gpu = await testGpu();
const cpu = getCpuDevice();
const devices = [cpu, testNative(), gpu].filter((d): d is Device => d !== null);

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

// What the model runs on every device: a decode step continues a prefill of the same mixer core
// (conv + SiLU, dt bias + softplus + clamp, A = −exp(A_log), the chunked scan with D, the gated
// grouped RMSNorm), so decoding the last tokens gives the prefill's last rows and final states.
describe('mambaDecodeStep continues a prefill', () => {
  const c = { B: 2, L: 11, H: 6, P: 5, G: 3, N: 7, K: 4, limit: [0.05, 3] as const };
  const dInner = c.H * c.P;
  const convDim = dInner + 2 * c.G * c.N;
  const width = dInner + convDim + c.H;
  const zx = randomData([c.B, c.L, width], 61);
  const rows = (from: number, n: number) => {
    const out = new Float32Array(c.B * n * width);
    for (let b = 0; b < c.B; b++) out.set(zx.subarray((b * c.L + from) * width, (b * c.L + from + n) * width), b * n * width);
    return out;
  };
  for (const d of devices) {
    test(`${d.kind}${d.kind === 'cpu' && d.native ? ':native' : ''}: the last two tokens decoded equal the prefill's last rows`, async () => {
      const w = (shape: number[], seed: number, scale = 1) => onDevice(randomData(shape, seed, { scale }), shape, d);
      const o: MambaDecodeOptions = {
        convWeight: w([convDim, c.K], 62, 0.5),
        convBias: w([convDim], 63),
        dtBias: w([c.H], 64),
        aLog: w([c.H], 65, 0.5),
        D: w([c.H], 66),
        normWeight: w([dInner], 67),
        groups: c.G,
        eps: 1e-5,
        dtLimit: c.limit,
      };
      const prefill = (L: number) =>
        noGrad(() => {
          const input = onDevice(rows(0, L), [c.B, L, width], d);
          const conv = causalConv1d(narrow(input, 2, dInner, convDim), o.convWeight, o.convBias);
          const part = (start: number, size: number, shape: number[]) => reshape(narrow(conv.y, 2, start, size), shape);
          const dt = clamp(softplus(add(narrow(input, 2, dInner + convDim, c.H), o.dtBias)), c.limit[0], c.limit[1]);
          const scan = ssdScan(
            part(0, dInner, [c.B, L, c.H, c.P]),
            dt,
            neg(exp(o.aLog)),
            part(dInner, c.G * c.N, [c.B, L, c.G, c.N]),
            part(dInner + c.G * c.N, c.G * c.N, [c.B, L, c.G, c.N]),
            { chunkSize: 4, D: o.D },
          );
          const y = groupedGatedRmsNorm(reshape(scan.y, [c.B * L, dInner]), reshape(narrow(input, 2, 0, dInner), [c.B * L, dInner]), o.normWeight, {
            groups: c.G,
            eps: o.eps,
          });
          return { y, convState: conv.finalState, ssmState: scan.finalState };
        });
      const whole = prefill(c.L);
      const wholeY = await whole.y.toFloat32();
      const pre = prefill(c.L - 2);
      for (const t of [c.L - 2, c.L - 1]) {
        const step: Tensor = poisoned(d, () => mambaDecodeStep(onDevice(rows(t, 1), [c.B, width], d), pre.convState, pre.ssmState, o));
        const expected = new Float32Array(c.B * dInner);
        for (let b = 0; b < c.B; b++) expected.set(wholeY.subarray((b * c.L + t) * dInner, (b * c.L + t + 1) * dInner), b * dInner);
        expectClose(await step.toFloat32(), expected, { rtol: 1e-5, what: `decoded position ${t}` });
      }
      expectClose(await pre.convState.toFloat32(), await whole.convState.toFloat32(), { rtol: 0, what: 'conv state' });
      expectClose(await pre.ssmState.toFloat32(), await whole.ssmState.toFloat32(), { rtol: 1e-5, what: 'SSM state' });
    });
  }
});
