import { afterEach, beforeEach, describe, expect, test } from 'bun:test';
import { getCpuDevice, type Device } from '../../device/device';
import { tensor } from '../../creation';
import type { DType } from '../../dtype';
import type { Tensor } from '../../tensor';
import { expectClose, onDevice, poisoned, randomData, seqIdsFromLengths, testGpu, testNative, uniformData } from '../../testing';
import { causalConv1d } from '../conv/conv';
import { add, clamp, exp, neg, softplus } from '../elementwise/elementwise';
import { narrow, reshape } from '../layout/layout';
import { causalConv1dUpdate, selectiveStateUpdate } from './mamba-decode-host';
import { ssdScan } from './scan';
import { setKernelOverrides } from '../../runtime/kernel-overrides';

const gpu = await testGpu();
const cpu = getCpuDevice();
const devices: Device[] = gpu ? [cpu, gpu] : [cpu];
const hosts: Device[] = [cpu, testNative()].filter((d): d is Device => d !== null);

interface Dims {
  B: number;
  L: number;
  H: number;
  P: number;
  G: number;
  N: number;
}

/** Realistic magnitudes: dt in [1e-3, 0.1], A in [-16, -1], x, B, C, D and the initial state ~ N(0, 1). */
function inputs(d: Dims, seed: number, dtype: DType = 'f32') {
  return {
    x: randomData([d.B, d.L, d.H, d.P], seed, { dtype }),
    dt: uniformData(d.B * d.L * d.H, seed + 1, 1e-3, 0.1),
    A: uniformData(d.H, seed + 2, -16, -1),
    Bm: randomData([d.B, d.L, d.G, d.N], seed + 3, { dtype }),
    Cm: randomData([d.B, d.L, d.G, d.N], seed + 4, { dtype }),
    D: randomData([d.H], seed + 5),
    init: randomData([d.B, d.H, d.P, d.N], seed + 6),
  };
}
type Inputs = ReturnType<typeof inputs>;

interface RunOptions {
  chunk: number;
  D?: boolean;
  init?: Float32Array | Tensor | null;
  seq?: Int32Array | null;
  dtype?: DType;
}

function run(dev: Device, d: Dims, v: Inputs, o: RunOptions) {
  const t = (values: Float32Array, shape: number[], dtype: DType = 'f32') => onDevice(values, shape, dev, dtype);
  const init = o.init instanceof Float32Array ? t(o.init, [d.B, d.H, d.P, d.N]) : (o.init ?? null);
  return ssdScan(
    t(v.x, [d.B, d.L, d.H, d.P], o.dtype),
    t(v.dt, [d.B, d.L, d.H]),
    t(v.A, [d.H]),
    t(v.Bm, [d.B, d.L, d.G, d.N], o.dtype),
    t(v.Cm, [d.B, d.L, d.G, d.N], o.dtype),
    {
      chunkSize: o.chunk,
      D: o.D === false ? null : t(v.D, [d.H]),
      initialState: init,
      seqIdx: o.seq ? onDevice(o.seq, [d.B, d.L], dev) : null,
    },
  );
}

/** Elements [start, start+n) of axis 1 of a host array shaped [rows, L, inner]. */
function rowsSlice(values: Float32Array | Int32Array, rows: number, L: number, inner: number, start: number, n: number): Float32Array {
  const out = new Float32Array(rows * n * inner);
  for (let b = 0; b < rows; b++) out.set(values.subarray((b * L + start) * inner, (b * L + start + n) * inner), b * n * inner);
  return out;
}

const odd: Dims = { B: 2, L: 37, H: 6, P: 5, G: 3, N: 7 };

for (const reads of ['textures', 'buffers'] as const)
  describe(`ssdScan: WebGPU (chunked SSD, operands read from ${reads}) vs CPU (sequential recurrence)`, () => {
    beforeEach(() => setKernelOverrides({ ssdOperandReads: reads }));
    afterEach(() => setKernelOverrides({}));
    const cases: [string, Dims, RunOptions][] = [
      ['odd sizes, chunk 8', odd, { chunk: 8 }],
      ['odd sizes, chunk 16, initial state', odd, { chunk: 16, init: inputs(odd, 1).init }],
      ['odd sizes, chunk 5 (rows padded inside each chunk), no D', odd, { chunk: 5, D: false }],
      ['L = 1 with initial state', { ...odd, L: 1 }, { chunk: 8, init: inputs({ ...odd, L: 1 }, 1).init }],
      [
        'P and N multiples of 8 (vector rows), one group',
        { B: 1, L: 29, H: 2, P: 16, G: 1, N: 8 },
        { chunk: 8, init: inputs({ B: 1, L: 29, H: 2, P: 16, G: 1, N: 8 }, 1).init },
      ],
      ['bf16 x, B, C', odd, { chunk: 8, dtype: 'bf16' }],
      [
        'several 128-long chunks, P = 64',
        { B: 1, L: 300, H: 2, P: 64, G: 1, N: 16 },
        { chunk: 128, init: inputs({ B: 1, L: 300, H: 2, P: 64, G: 1, N: 16 }, 1).init },
      ],
    ];
    for (const [name, d, o] of cases) {
      test.if(gpu !== null)(name, async () => {
        const v = inputs(d, 11, o.dtype);
        const ref = run(cpu, d, v, o);
        const got = poisoned(gpu!, () => run(gpu!, d, v, o));
        expect(got.y.shape).toEqual([d.B, d.L, d.H, d.P]);
        expect(got.finalState.shape).toEqual([d.B, d.H, d.P, d.N]);
        expectClose(await got.y.toFloat32(), await ref.y.toFloat32(), { rtol: 1e-5, what: `${name}: y` });
        expectClose(await got.finalState.toFloat32(), await ref.finalState.toFloat32(), { rtol: 1e-5, what: `${name}: finalState` });
      });
    }

    const docs = [11, 1, 17, 3, 13];
    const packed: Dims = { B: 2, L: 45, H: 6, P: 5, G: 3, N: 7 };
    for (const chunk of [8, 16]) {
      test.if(gpu !== null)(`seqIdx (documents ${docs.join(', ')}) with initial state, chunk ${chunk}`, async () => {
        const v = inputs(packed, 5);
        const o: RunOptions = { chunk, init: v.init, seq: seqIdsFromLengths([docs, [20, 25]], packed.L, 0, 10) };
        const ref = run(cpu, packed, v, o);
        const got = poisoned(gpu!, () => run(gpu!, packed, v, o));
        expectClose(await got.y.toFloat32(), await ref.y.toFloat32(), { rtol: 1e-5, what: 'y' });
        expectClose(await got.finalState.toFloat32(), await ref.finalState.toFloat32(), { rtol: 1e-5, what: 'finalState' });
      });
    }
  });

describe('ssdScan: CPU reference', () => {
  test('hand-computed single head', async () => {
    // H = P = G = N = 1: S_t = e^{dt·A}·S_{t-1} + dt·x·B, y = S·C + D·x.
    const dt = [0.5, 0.25];
    const a = -2;
    const xs = [1, 2];
    const bs = [3, -1];
    const cs = [2, 0.5];
    const d = 0.75;
    const s0 = 0.1;
    const s1 = Math.exp(dt[0]! * a) * s0 + dt[0]! * xs[0]! * bs[0]!;
    const s2 = Math.exp(dt[1]! * a) * s1 + dt[1]! * xs[1]! * bs[1]!;
    const c = (v: number[], shape: number[]) => tensor(v, shape, { device: cpu });
    const { y, finalState } = ssdScan(c(xs, [1, 2, 1, 1]), c(dt, [1, 2, 1]), c([a], [1]), c(bs, [1, 2, 1, 1]), c(cs, [1, 2, 1, 1]), {
      chunkSize: 8,
      D: c([d], [1]),
      initialState: c([s0], [1, 1, 1, 1]),
    });
    expectClose(await y.data(), [s1 * cs[0]! + d * xs[0]!, s2 * cs[1]! + d * xs[1]!], { rtol: 1e-7 });
    expectClose(await finalState.data(), [s2], { rtol: 1e-7 });
  });

  test('seqIdx equals running each document on its own (only the first continues the initial state)', async () => {
    const d: Dims = { B: 1, L: 45, H: 4, P: 3, G: 2, N: 5 };
    const docs = [11, 1, 17, 3, 13];
    const v = inputs(d, 8);
    const whole = run(cpu, d, v, { chunk: 8, init: v.init, seq: seqIdsFromLengths([docs], d.L, 0, 10) });
    const y = await whole.y.toFloat32();
    let start = 0;
    for (const [k, n] of docs.entries()) {
      const one: Dims = { ...d, L: n };
      const part = run(
        cpu,
        one,
        {
          ...v,
          x: rowsSlice(v.x, 1, d.L, d.H * d.P, start, n),
          dt: rowsSlice(v.dt, 1, d.L, d.H, start, n),
          Bm: rowsSlice(v.Bm, 1, d.L, d.G * d.N, start, n),
          Cm: rowsSlice(v.Cm, 1, d.L, d.G * d.N, start, n),
        },
        { chunk: 8, init: k === 0 ? v.init : null },
      );
      const inner = d.H * d.P;
      expectClose(y.slice(start * inner, (start + n) * inner), await part.y.toFloat32(), { rtol: 1e-7, what: `document ${k}` });
      if (k === docs.length - 1) expectClose(await whole.finalState.toFloat32(), await part.finalState.toFloat32(), { rtol: 1e-7, what: 'final state' });
      start += n;
    }
  });
});

describe('ssdScan: chunked prefill and decode', () => {
  for (const dev of devices) {
    test(`${dev.kind}: pieces 5,1,7,2,13,9 chained through finalState equal one call (with seqIdx)`, async () => {
      const d: Dims = odd;
      const v = inputs(d, 21);
      const seq = seqIdsFromLengths([[11, 1, 17, 3, 5], [37]], d.L, 0, 10);
      const whole = run(dev, d, v, { chunk: 8, init: v.init, seq });
      const wholeY = await whole.y.toFloat32();
      let state: Tensor = onDevice(v.init, [d.B, d.H, d.P, d.N], dev);
      let start = 0;
      for (const n of [5, 1, 7, 2, 13, 9]) {
        const piece: Dims = { ...d, L: n };
        const part = run(
          dev,
          piece,
          {
            ...v,
            x: rowsSlice(v.x, d.B, d.L, d.H * d.P, start, n),
            dt: rowsSlice(v.dt, d.B, d.L, d.H, start, n),
            Bm: rowsSlice(v.Bm, d.B, d.L, d.G * d.N, start, n),
            Cm: rowsSlice(v.Cm, d.B, d.L, d.G * d.N, start, n),
          },
          { chunk: 8, init: state, seq: Int32Array.from(rowsSlice(seq, d.B, d.L, 1, start, n)) },
        );
        expectClose(await part.y.toFloat32(), rowsSlice(wholeY, d.B, d.L, d.H * d.P, start, n), { rtol: 1e-5, what: `piece at ${start}` });
        state = part.finalState;
        start += n;
      }
      expectClose(await state.toFloat32(), await whole.finalState.toFloat32(), { rtol: 1e-5, what: 'final state' });
    });
  }
});

// The decode steps run on host devices; WebGPU decodes through the fused mambaDecodeStep.
describe('selectiveStateUpdate: the host decode step', () => {
  for (const dev of hosts) {
    test(`${dev.kind}: selectiveStateUpdate transforms a raw dt (bias, softplus, clamp) and A_log in the kernel as the elementwise ops do`, async () => {
      const d: Dims = { B: 2, L: 1, H: 6, P: 5, G: 3, N: 8 };
      const v = inputs(d, 51);
      // Raw time steps on both sides of softplus's threshold and of the clamp bounds.
      const raw = Float32Array.from({ length: d.B * d.H }, (_, i) => [-6, -2.5, -0.3, 0.4, 3, 25][i % 6]! + 0.01 * i);
      const bias = Float32Array.from({ length: d.H }, (_, h) => 0.1 * h - 0.2);
      for (const limit of [null, [0.05, 2] as const, [0, Infinity] as const]) {
        const run = (transformed: boolean) => {
          const state = onDevice(v.init, [d.B, d.H, d.P, d.N], dev);
          const dtRaw = onDevice(raw, [d.B, d.H], dev);
          const biasT = onDevice(bias, [d.H], dev);
          const args = [
            onDevice(v.x, [d.B, d.H, d.P], dev),
            onDevice(v.A, [d.H], dev),
            onDevice(v.Bm, [d.B, d.G, d.N], dev),
            onDevice(v.Cm, [d.B, d.G, d.N], dev),
          ] as const;
          // The fused call gets A_log = log(−A).
          const aLog = onDevice(
            v.A.map((a) => Math.log(-a)),
            [d.H],
            dev,
          );
          const y = transformed
            ? poisoned(dev, () =>
                selectiveStateUpdate(state, args[0], dtRaw, aLog, args[2], args[3], onDevice(v.D, [d.H], dev), {
                  dtBias: biasT,
                  dtSoftplus: true,
                  dtLimit: limit,
                  aIsLog: true,
                }),
              )
            : selectiveStateUpdate(
                state,
                args[0],
                limit ? clamp(softplus(add(dtRaw, biasT)), limit[0], limit[1]) : softplus(add(dtRaw, biasT)),
                neg(exp(aLog)),
                args[2],
                args[3],
                onDevice(v.D, [d.H], dev),
              );
          return { y, state };
        };
        const fused = run(true);
        const ops = run(false);
        expectClose(await fused.y.toFloat32(), await ops.y.toFloat32(), { rtol: 1e-6, what: `y, limit ${limit}` });
        expectClose(await fused.state.toFloat32(), await ops.state.toFloat32(), { rtol: 1e-6, what: `state, limit ${limit}` });
      }
    });

    test(`${dev.kind}: selectiveStateUpdate steps equal the last positions of a prefill`, async () => {
      const d: Dims = { B: 2, L: 12, H: 6, P: 5, G: 3, N: 7 };
      const v = inputs(d, 31);
      const whole = run(dev, d, v, { chunk: 8, init: v.init });
      const wholeY = await whole.y.toFloat32();
      const pre = run(
        dev,
        { ...d, L: d.L - 3 },
        {
          ...v,
          x: rowsSlice(v.x, d.B, d.L, d.H * d.P, 0, d.L - 3),
          dt: rowsSlice(v.dt, d.B, d.L, d.H, 0, d.L - 3),
          Bm: rowsSlice(v.Bm, d.B, d.L, d.G * d.N, 0, d.L - 3),
          Cm: rowsSlice(v.Cm, d.B, d.L, d.G * d.N, 0, d.L - 3),
        },
        { chunk: 8, init: v.init },
      );
      const state = pre.finalState;
      for (let t = d.L - 3; t < d.L; t++) {
        const at = (values: Float32Array, inner: number, shape: number[]) => onDevice(rowsSlice(values, d.B, d.L, inner, t, 1), shape, dev);
        const y = poisoned(dev, () =>
          selectiveStateUpdate(
            state,
            at(v.x, d.H * d.P, [d.B, d.H, d.P]),
            at(v.dt, d.H, [d.B, d.H]),
            onDevice(v.A, [d.H], dev),
            at(v.Bm, d.G * d.N, [d.B, d.G, d.N]),
            at(v.Cm, d.G * d.N, [d.B, d.G, d.N]),
            onDevice(v.D, [d.H], dev),
          ),
        );
        expectClose(await y.toFloat32(), rowsSlice(wholeY, d.B, d.L, d.H * d.P, t, 1), { rtol: 1e-5, what: `decode position ${t}` });
      }
      expectClose(await state.toFloat32(), await whole.finalState.toFloat32(), { rtol: 1e-5, what: 'state after decode' });
    });

    test(`${dev.kind}: conv + scan decode step equals the last position of a conv + scan prefill`, async () => {
      // A Mamba mixer's core on pre-conv xBC [B, L, H·P + 2·G·N]: conv+SiLU, split, scan.
      const d: Dims = { ...odd, L: 10 };
      const K = 4;
      const channels = d.H * d.P + 2 * d.G * d.N;
      const xbc = randomData([d.B, d.L, channels], 41);
      const w = randomData([channels, K], 42, { dtype: 'bf16', scale: 0.5 });
      const bias = randomData([channels], 43);
      const dt = uniformData(d.B * d.L * d.H, 44, 1e-3, 0.1);
      const A = uniformData(d.H, 45, -16, -1);
      const Dv = randomData([d.H], 46);
      const wT = onDevice(w, [channels, K], dev, 'bf16');
      const bT = onDevice(bias, [channels], dev);
      const split = (conv: Tensor, L: number) => {
        const part = (start: number, size: number, shape: number[]) => reshape(narrow(conv, -1, start, size), shape);
        return {
          x: part(0, d.H * d.P, [d.B, L, d.H, d.P]),
          B: part(d.H * d.P, d.G * d.N, [d.B, L, d.G, d.N]),
          C: part(d.H * d.P + d.G * d.N, d.G * d.N, [d.B, L, d.G, d.N]),
        };
      };
      const prefill = (L: number) => {
        const conv = causalConv1d(onDevice(rowsSlice(xbc, d.B, d.L, channels, 0, L), [d.B, L, channels], dev), wT, bT);
        const s = split(conv.y, L);
        const scan = ssdScan(s.x, onDevice(rowsSlice(dt, d.B, d.L, d.H, 0, L), [d.B, L, d.H], dev), onDevice(A, [d.H], dev), s.B, s.C, {
          chunkSize: 8,
          D: onDevice(Dv, [d.H], dev),
        });
        return { convState: conv.finalState, ssmState: scan.finalState, y: scan.y };
      };
      const whole = prefill(d.L);
      const pre = prefill(d.L - 1);
      const t = d.L - 1;
      const convOut = causalConv1dUpdate(pre.convState, onDevice(rowsSlice(xbc, d.B, d.L, channels, t, 1), [d.B, channels], dev), wT, bT);
      const s = split(reshape(convOut, [d.B, 1, channels]), 1);
      const y = selectiveStateUpdate(
        pre.ssmState,
        reshape(s.x, [d.B, d.H, d.P]),
        onDevice(rowsSlice(dt, d.B, d.L, d.H, t, 1), [d.B, d.H], dev),
        onDevice(A, [d.H], dev),
        reshape(s.B, [d.B, d.G, d.N]),
        reshape(s.C, [d.B, d.G, d.N]),
        onDevice(Dv, [d.H], dev),
      );
      expectClose(await y.toFloat32(), rowsSlice(await whole.y.toFloat32(), d.B, d.L, d.H * d.P, t, 1), { rtol: 1e-5, what: 'decoded y' });
      expectClose(await pre.ssmState.toFloat32(), await whole.ssmState.toFloat32(), { rtol: 1e-5, what: 'SSM state' });
      expectClose(await pre.convState.toFloat32(), await whole.convState.toFloat32(), { rtol: 0, what: 'conv state' });
    });
  }
});

describe('ssdScan: argument errors', () => {
  const d: Dims = { B: 1, L: 4, H: 4, P: 2, G: 2, N: 3 };
  const v = inputs(d, 1);
  const t = (values: Float32Array, shape: number[]) => onDevice(values, shape, cpu);
  const args = () => [t(v.x, [1, 4, 4, 2]), t(v.dt, [1, 4, 4]), t(v.A, [4]), t(v.Bm, [1, 4, 2, 3]), t(v.Cm, [1, 4, 2, 3])] as const;

  test('shapes, chunk size and group count', () => {
    const [x, dt, A, B, C] = args();
    expect(() => ssdScan(x, dt, A, B, narrow(C, 3, 0, 2), { chunkSize: 8 })).toThrow(/C must be \[1, 4, 2, 3\]/);
    expect(() => ssdScan(x, narrow(dt, 2, 0, 3), A, B, C, { chunkSize: 8 })).toThrow(/dt must be \[1, 4, 4\]/);
    expect(() => ssdScan(x, dt, A, B, C, { chunkSize: 0 })).toThrow(/chunkSize must be a positive integer/);
    expect(() => ssdScan(x, dt, A, B, C, { chunkSize: 8, initialState: t(v.init, [1, 4, 3, 2]) })).toThrow(/initialState must be \[1, 4, 2, 3\]/);
    const B3 = t(randomData([1, 4, 3, 3], 2), [1, 4, 3, 3]);
    expect(() => ssdScan(x, dt, A, B3, B3, { chunkSize: 8 })).toThrow(/H=4 heads must be a multiple of G=3 groups/);
  });
});
