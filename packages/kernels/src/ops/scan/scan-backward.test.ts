import { describe, expect, test } from 'bun:test';
import { backward } from '../../autograd/backward';
import { noGrad } from '../../autograd/graph';
import { getCpuDevice, type Device } from '../../device/device';
import type { DType } from '../../dtype';
import type { Tensor } from '../../tensor';
import { expectBackwardMatches, expectClose, gradcheck, onDevice, poisoned, randomData, seqIdsFromLengths, testGpu, uniformData } from '../../testing';
import { narrow, reshape } from '../layout/layout';
import { ssdScan } from './scan';

const gpu = await testGpu();
const cpu = getCpuDevice();

interface Case {
  B: number;
  L: number;
  H: number;
  P: number;
  G: number;
  N: number;
  chunk: number;
  D: boolean;
  init: boolean;
  /** Document lengths per row (each row sums to L). */
  seq?: number[][];
}

/** The differentiable inputs in gradient order: x, dt, A, B, C, D?, initialState? (dt in [1e-3, 0.3], A in [-4, -0.5]). */
function gradInputs(c: Case, seed: number, dtype: DType = 'f32'): { values: Float32Array; shape: number[] }[] {
  const bc = [c.B, c.L, c.G, c.N];
  return [
    { values: randomData([c.B, c.L, c.H, c.P], seed, { dtype }), shape: [c.B, c.L, c.H, c.P] },
    { values: uniformData(c.B * c.L * c.H, seed + 1, 1e-3, 0.3), shape: [c.B, c.L, c.H] },
    { values: uniformData(c.H, seed + 2, -4, -0.5), shape: [c.H] },
    { values: randomData(bc, seed + 3, { dtype }), shape: bc },
    { values: randomData(bc, seed + 4, { dtype }), shape: bc },
    ...(c.D ? [{ values: randomData([c.H], seed + 5), shape: [c.H] }] : []),
    ...(c.init ? [{ values: randomData([c.B, c.H, c.P, c.N], seed + 6), shape: [c.B, c.H, c.P, c.N] }] : []),
  ];
}

/** y as a function of the gradient inputs (seqIdx fixed, on the inputs' device). */
function scanOf(c: Case) {
  return (...ts: Tensor[]) => {
    const seqIdx = c.seq ? onDevice(seqIdsFromLengths(c.seq, c.L, 5), [c.B, c.L], ts[0]!.device) : null;
    let i = 5;
    const D = c.D ? ts[i++]! : null;
    const initialState = c.init ? ts[i++]! : null;
    return ssdScan(ts[0]!, ts[1]!, ts[2]!, ts[3]!, ts[4]!, { chunkSize: c.chunk, D, initialState, seqIdx }).y;
  };
}

const odd = { B: 2, L: 13, H: 6, P: 5, G: 3, N: 7, chunk: 4 };
const cases: [string, Case][] = [
  ['D, initial state, packed seqIdx row', { ...odd, D: true, init: true, seq: [[4, 1, 6, 2], [13]] }],
  ['no D, no initial state', { ...odd, D: false, init: false }],
  [
    'D, seqIdx with one-token documents, no initial state',
    {
      ...odd,
      D: true,
      init: false,
      seq: [
        [1, 5, 1, 6],
        [7, 6],
      ],
    },
  ],
  ['one group, initial state', { B: 1, L: 9, H: 3, P: 2, G: 1, N: 4, chunk: 3, D: false, init: true }],
];

describe('ssdScan backward: gradcheck of the CPU reference', () => {
  for (const [name, c] of cases) {
    test(name, async () => {
      await gradcheck(scanOf(c), gradInputs(c, 11), { maxElements: 24 });
    });
  }

  test('finalState gets no gradient and noGrad records nothing', () => {
    const c = cases[0]![1];
    const ts = gradInputs(c, 3).map((i) => onDevice(i.values, i.shape, cpu).requiresGrad_());
    const [x, dt, A, B, C, D, init] = ts as [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor];
    const out = ssdScan(x, dt, A, B, C, { chunkSize: 4, D, initialState: init });
    expect(out.y.requiresGrad).toBe(true);
    expect(out.finalState.requiresGrad).toBe(false);
    const quiet = noGrad(() => ssdScan(x, dt, A, B, C, { chunkSize: 4, D, initialState: init }));
    expect(quiet.y.gradFn).toBeNull();
  });
});

describe('ssdScan backward: WebGPU vs CPU reference', () => {
  const gpuCases: [string, Case][] = [
    ...cases,
    ['longer rows, larger P and N', { B: 2, L: 37, H: 4, P: 9, G: 2, N: 11, chunk: 8, D: true, init: true, seq: [[11, 1, 17, 8], [37]] }],
    ['P and N multiples of 4 (vec4 rows)', { B: 2, L: 15, H: 4, P: 8, G: 2, N: 12, chunk: 4, D: true, init: true, seq: [[3, 12], [15]] }],
    ['L = 1 with initial state', { B: 2, L: 1, H: 2, P: 3, G: 1, N: 5, chunk: 4, D: true, init: true }],
  ];
  for (const [name, c] of gpuCases) {
    test.if(gpu !== null)(name, async () => {
      await expectBackwardMatches(gpu!, scanOf(c), gradInputs(c, 29), { rtol: 2e-5, what: name });
    });
  }

  test.if(gpu !== null)('x, B and C as strided views of one projection (as the mixer slices them)', async () => {
    const c: Case = { ...odd, D: true, init: false, seq: [[4, 1, 6, 2], [13]] };
    const [, dt, A, , , D] = gradInputs(c, 17);
    const width = c.H * c.P + 2 * c.G * c.N;
    const proj = { values: randomData([c.B, c.L, width], 18), shape: [c.B, c.L, width] };
    const f = (xbc: Tensor, dtt: Tensor, At: Tensor, Dt: Tensor) => {
      const part = (start: number, n: number, shape: number[]) => reshape(narrow(xbc, 2, start, n), shape);
      const xs = part(0, c.H * c.P, [c.B, c.L, c.H, c.P]);
      const Bs = part(c.H * c.P, c.G * c.N, [c.B, c.L, c.G, c.N]);
      const Cs = part(c.H * c.P + c.G * c.N, c.G * c.N, [c.B, c.L, c.G, c.N]);
      return scanOf(c)(xs, dtt, At, Bs, Cs, Dt);
    };
    await expectBackwardMatches(gpu!, f, [proj, dt!, A!, D!], { rtol: 2e-5, what: 'strided views' });
  });

  test.if(gpu !== null)('bf16 x, B and C (f32 gradients)', async () => {
    const c: Case = { ...odd, D: true, init: true, seq: [[4, 1, 6, 2], [13]] };
    const values = gradInputs(c, 41, 'bf16');
    const dtypes: DType[] = ['bf16', 'f32', 'f32', 'bf16', 'bf16', 'f32', 'f32'];
    const run = async (d: Device) => {
      const ts = values.map((v, i) => onDevice(v.values, v.shape, d, dtypes[i]).requiresGrad_());
      const y = poisoned(d, () => scanOf(c)(...ts));
      poisoned(d, () => backward(y, { grad: onDevice(randomData(y.shape, 8), y.shape, d) }));
      return Promise.all(ts.map((t) => t.grad!.toFloat32()));
    };
    const [ref, got] = [await run(cpu), await run(gpu!)];
    ref.forEach((r, k) => expectClose(got[k]!, r, { rtol: 2e-5, what: `gradient ${k}` }));
  });
});
