import { describe, expect, test } from 'bun:test';
import { getCpuDevice, type Device } from '../../device/device';
import { tensor } from '../../creation';
import type { DType } from '../../dtype';
import type { Tensor } from '../../tensor';
import { backward } from '../../autograd/backward';
import { noGrad } from '../../autograd/graph';
import { expectBackwardMatches, expectClose, gradcheck, onDevice, poisoned, randomData, seqIdsFromLengths, testGpu, testNative } from '../../testing';
import { narrow } from '../layout/layout';
import { causalConv1dUpdate } from '../scan/mamba-decode-host';
import { causalConv1d, type ConvActivation } from './conv';

const gpu = await testGpu();
const cpu = getCpuDevice();
const devices: Device[] = gpu ? [cpu, gpu] : [cpu];
const hosts: Device[] = [cpu, testNative()].filter((d): d is Device => d !== null);

interface Case {
  xDtype?: DType;
  B: number;
  L: number;
  C: number;
  K: number;
  wDtype?: DType;
  bias?: boolean;
  init?: boolean;
  seq?: number[][]; // document lengths per row
  activation?: ConvActivation;
}

/** Host inputs of a case (seeded), bf16-rounded where the case stores bf16. */
function inputs(c: Case, seed: number) {
  return {
    x: randomData([c.B, c.L, c.C], seed, { dtype: c.xDtype }),
    w: randomData([c.C, c.K], seed + 1, { dtype: c.wDtype, scale: 0.5 }),
    bias: c.bias === false ? null : randomData([c.C], seed + 2, { dtype: c.wDtype }),
    init: c.init ? randomData([c.B, c.C, c.K], seed + 3) : null,
    seq: c.seq ? seqIdsFromLengths(c.seq, c.L, 3) : null,
  };
}

type Inputs = ReturnType<typeof inputs>;

function run(d: Device, c: Case, v: Inputs) {
  return causalConv1d(
    onDevice(v.x, [c.B, c.L, c.C], d, c.xDtype ?? 'f32'),
    onDevice(v.w, [c.C, c.K], d, c.wDtype ?? 'f32'),
    v.bias ? onDevice(v.bias, [c.C], d, c.wDtype ?? 'f32') : null,
    {
      activation: c.activation,
      initialState: v.init ? onDevice(v.init, [c.B, c.C, c.K], d) : undefined,
      seqIdx: v.seq ? onDevice(v.seq, [c.B, c.L], d) : undefined,
    },
  );
}

async function host(t: Tensor): Promise<Float32Array> {
  return t.toFloat32();
}

describe('causalConv1d: WebGPU vs CPU reference', () => {
  const cases: [string, Case][] = [
    ['odd sizes, silu', { B: 2, L: 37, C: 13, K: 4 }],
    ['bf16 weights, initial state', { B: 2, L: 37, C: 13, K: 4, wDtype: 'bf16', init: true }],
    ['C a multiple of 4 (four channels per invocation), initial state', { B: 2, L: 37, C: 12, K: 4, wDtype: 'bf16', init: true }],
    ['no bias, no activation, K=3', { B: 1, L: 21, C: 9, K: 3, bias: false, activation: null }],
    ['bf16 x and weights', { B: 2, L: 19, C: 12, K: 4, xDtype: 'bf16', wDtype: 'bf16', init: true }],
    ['L = 1 with initial state', { B: 2, L: 1, C: 7, K: 4, init: true }],
    ['L < K without initial state', { B: 3, L: 2, C: 5, K: 4 }],
    ['K = 1', { B: 1, L: 5, C: 3, K: 1, init: true }],
    ['seqIdx 11,1,17,3,13 with initial state', { B: 2, L: 45, C: 6, K: 4, init: true, seq: [[11, 1, 17, 3, 13], [45]] }],
    ['seqIdx with a one-token last document', { B: 1, L: 9, C: 4, K: 4, init: true, seq: [[4, 4, 1]] }],
  ];
  for (const [name, c] of cases) {
    test.if(gpu !== null)(name, async () => {
      const v = inputs(c, 7);
      const ref = run(cpu, c, v);
      const got = poisoned(gpu!, () => run(gpu!, c, v));
      expect(got.y.shape).toEqual([c.B, c.L, c.C]);
      expect(got.finalState.shape).toEqual([c.B, c.C, c.K]);
      expectClose(await host(got.y), await host(ref.y), { rtol: 2e-6, what: `${name}: y` });
      expectClose(await host(got.finalState), await host(ref.finalState), { rtol: 0, what: `${name}: finalState` });
    });
  }
});

describe('causalConv1d: CPU reference', () => {
  test('hand-computed case', async () => {
    // C = 2 channels, K = 2 taps: y[t] = w0·x[t-1] + w1·x[t] + bias, x[-1] from the initial state's last column.
    const x = tensor([1, 10, 2, 20, 3, 30], [1, 3, 2], { device: cpu });
    const w = tensor([0.5, 2, -1, 1], [2, 2], { device: cpu });
    const bias = tensor([0.25, 0], [2], { device: cpu });
    const init = tensor([9, 4, 9, 5], [1, 2, 2], { device: cpu });
    const { y, finalState } = causalConv1d(x, w, bias, { activation: null, initialState: init });
    // channel 0: 0.5·4+2·1+.25, 0.5·1+2·2+.25, 0.5·2+2·3+.25; channel 1: -5+10, -10+20, -20+30
    expect(Array.from(await y.data())).toEqual([4.25, 5, 4.75, 10, 7.25, 10]);
    expect(Array.from(await finalState.data())).toEqual([2, 3, 20, 30]);
    const silu = causalConv1d(x, w, bias, { initialState: init });
    const s = (v: number) => v / (1 + Math.exp(-v));
    expectClose(await silu.y.data(), [4.25, 5, 4.75, 10, 7.25, 10].map(s), { rtol: 1e-7 });
  });

  test('seqIdx equals running each document on its own (only the first sees the initial state)', async () => {
    const c: Case = { B: 1, L: 45, C: 5, K: 4, init: true, seq: [[11, 1, 17, 3, 13]] };
    const v = inputs(c, 3);
    const packed = run(cpu, c, v);
    const y = await host(packed.y);
    let start = 0;
    for (const [doc, n] of [11, 1, 17, 3, 13].entries()) {
      const one: Case = { B: 1, L: n, C: c.C, K: c.K, init: doc === 0 };
      const part = run(cpu, one, { ...v, x: v.x.slice(start * c.C, (start + n) * c.C), init: doc === 0 ? v.init : null, seq: null });
      expectClose(y.slice(start * c.C, (start + n) * c.C), await host(part.y), { rtol: 1e-7, what: `document ${doc}` });
      if (doc === 4) expectClose(await host(packed.finalState), await host(part.finalState), { rtol: 0, what: 'final state' });
      start += n;
    }
  });
});

describe('causalConv1d: chunked prefill and decode', () => {
  for (const d of devices) {
    test(`${d.kind}: pieces 5,1,7,2,13,9 chained through finalState equal one call`, async () => {
      const c: Case = { B: 2, L: 37, C: 12, K: 4, init: true, seq: [[11, 1, 17, 3, 5], [37]] };
      const v = inputs(c, 5);
      const whole = run(d, c, v);
      const pieces = [5, 1, 7, 2, 13, 9];
      let state = onDevice(v.init!, [c.B, c.C, c.K], d);
      let start = 0;
      const wholeY = await host(whole.y);
      for (const n of pieces) {
        const x = narrow(onDevice(v.x, [c.B, c.L, c.C], d), 1, start, n);
        const seq = narrow(onDevice(v.seq!, [c.B, c.L], d), 1, start, n);
        const part = causalConv1d(x, onDevice(v.w, [c.C, c.K], d), onDevice(v.bias!, [c.C], d), { initialState: state, seqIdx: seq });
        const py = await host(part.y);
        for (let b = 0; b < c.B; b++) {
          const ref = wholeY.slice((b * c.L + start) * c.C, (b * c.L + start + n) * c.C);
          expectClose(py.slice(b * n * c.C, (b + 1) * n * c.C), ref, { rtol: 1e-6, what: `piece at ${start}, row ${b}` });
        }
        state = part.finalState;
        start += n;
      }
      expectClose(await host(state), await host(whole.finalState), { rtol: 0, what: 'final state' });
    });
  }
});

// The conv decode step runs on host devices; WebGPU decodes through the fused mambaDecodeStep.
describe('causalConv1dUpdate: the host decode step', () => {
  for (const d of hosts) {
    test(`${d.kind}: causalConv1dUpdate equals the last position of a prefill`, async () => {
      const c: Case = { B: 2, L: 9, C: 7, K: 4, wDtype: 'bf16', init: true };
      const v = inputs(c, 9);
      const whole = run(d, c, v);
      const wholeY = await host(whole.y);
      // Prefill the first L-2 tokens, then decode the last two.
      const pre = run(d, { ...c, L: c.L - 2 }, { ...v, x: prefixRows(v.x, c, c.L - 2) });
      const state = pre.finalState;
      const w = onDevice(v.w, [c.C, c.K], d, 'bf16');
      const bias = onDevice(v.bias!, [c.C], d, 'bf16');
      for (const t of [c.L - 2, c.L - 1]) {
        const xt = new Float32Array(c.B * c.C);
        for (let b = 0; b < c.B; b++) xt.set(v.x.subarray((b * c.L + t) * c.C, (b * c.L + t + 1) * c.C), b * c.C);
        const yt = await host(poisoned(d, () => causalConv1dUpdate(state, onDevice(xt, [c.B, c.C], d), w, bias)));
        const ref = new Float32Array(c.B * c.C);
        for (let b = 0; b < c.B; b++) ref.set(wholeY.subarray((b * c.L + t) * c.C, (b * c.L + t + 1) * c.C), b * c.C);
        expectClose(yt, ref, { rtol: 1e-6, what: `decode position ${t}` });
      }
      expectClose(await host(state), await host(whole.finalState), { rtol: 0, what: 'state after decode' });
    });
  }
});

function prefixRows(x: Float32Array, c: Case, n: number): Float32Array {
  const out = new Float32Array(c.B * n * c.C);
  for (let b = 0; b < c.B; b++) out.set(x.subarray(b * c.L * c.C, (b * c.L + n) * c.C), b * n * c.C);
  return out;
}

describe('causalConv1d: argument errors', () => {
  test('bad shapes, dtypes and gradients are rejected with the tensor named', () => {
    const x = tensor(new Float32Array(2 * 5 * 3), [2, 5, 3], { device: cpu });
    const w = tensor(new Float32Array(3 * 4), [3, 4], { device: cpu });
    expect(() => causalConv1d(x, tensor(new Float32Array(12), [3, 1, 4], { device: cpu }), null)).toThrow(/weight must be \[C=3, K\]/);
    expect(() =>
      causalConv1d(x, w, null, {
        initialState: tensor(new Float32Array(24), [2, 3, 4], { device: cpu }),
        seqIdx: tensor(new Float32Array(10), [2, 5], { device: cpu }),
      }),
    ).toThrow(/seqIdx must be i32/);
    expect(() => causalConv1d(x, w, tensor(new Float32Array(4), [4], { device: cpu }))).toThrow(/bias must be \[3\]/);
  });
});

/** The differentiable inputs of a case in gradient order: x, weight, bias?, initialState?. */
function gradInputs(c: Case, v: Inputs): { values: Float32Array; shape: number[] }[] {
  return [
    { values: v.x, shape: [c.B, c.L, c.C] },
    { values: v.w, shape: [c.C, c.K] },
    ...(v.bias ? [{ values: v.bias, shape: [c.C] }] : []),
    ...(v.init ? [{ values: v.init, shape: [c.B, c.C, c.K] }] : []),
  ];
}

/** y as a function of the gradient inputs (seqIdx fixed, on the inputs' device). */
function convOf(c: Case, v: Inputs) {
  return (...ts: Tensor[]) => {
    const seqIdx = v.seq ? onDevice(v.seq, [c.B, c.L], ts[0]!.device) : undefined;
    let i = 2;
    const bias = v.bias ? ts[i++]! : null;
    const initialState = v.init ? ts[i++] : undefined;
    return causalConv1d(ts[0]!, ts[1]!, bias, { activation: c.activation, initialState, seqIdx }).y;
  };
}

const gradCases: [string, Case][] = [
  ['silu, bias, initial state, packed seqIdx', { B: 2, L: 13, C: 5, K: 4, init: true, seq: [[4, 1, 6, 2], [13]] }],
  ['no activation, no bias, no initial state', { B: 2, L: 11, C: 3, K: 3, bias: false, activation: null }],
  ['L < K with initial state, seqIdx starting a document at 1', { B: 1, L: 3, C: 4, K: 4, init: true, seq: [[1, 2]] }],
];

describe('causalConv1d backward: gradcheck of the CPU reference', () => {
  for (const [name, c] of gradCases) {
    test(name, async () => {
      const v = inputs(c, 21);
      await gradcheck(convOf(c, v), gradInputs(c, v), { rtol: 1e-3 });
    });
  }

  test('finalState gets no gradient and noGrad records nothing', () => {
    const c: Case = { B: 1, L: 5, C: 2, K: 3, init: true };
    const v = inputs(c, 4);
    const x = onDevice(v.x, [c.B, c.L, c.C], cpu).requiresGrad_();
    const out = causalConv1d(x, onDevice(v.w, [c.C, c.K], cpu), null, { initialState: onDevice(v.init!, [c.B, c.C, c.K], cpu) });
    expect(out.y.requiresGrad).toBe(true);
    expect(out.finalState.requiresGrad).toBe(false);
    const quiet = noGrad(() => causalConv1d(x, onDevice(v.w, [c.C, c.K], cpu), null));
    expect(quiet.y.gradFn).toBeNull();
  });
});

describe('causalConv1d backward: WebGPU vs CPU reference', () => {
  const cases: [string, Case][] = [
    ...gradCases,
    ['odd sizes, more than one partial run of positions', { B: 3, L: 45, C: 7, K: 4, init: true, seq: [[11, 1, 17, 3, 13], [45], [2, 43]] }],
    ['K = 1', { B: 1, L: 6, C: 3, K: 1, init: true }],
  ];
  for (const [name, c] of cases) {
    test.if(gpu !== null)(name, async () => {
      const v = inputs(c, 33);
      await expectBackwardMatches(gpu!, convOf(c, v), gradInputs(c, v), { rtol: 2e-6, what: name });
    });
  }

  test.if(gpu !== null)('x as a strided view of a wider projection (as the mixer slices it)', async () => {
    const c: Case = { B: 2, L: 17, C: 7, K: 4, seq: [[5, 12], [17]] };
    const v = inputs(c, 51);
    const proj = { values: randomData([c.B, c.L, c.C + 6], 52), shape: [c.B, c.L, c.C + 6] };
    const f = (wide: Tensor, w: Tensor, bias: Tensor) => convOf(c, v)(narrow(wide, 2, 2, c.C), w, bias);
    await expectBackwardMatches(gpu!, f, [proj, ...gradInputs(c, v).slice(1)], { rtol: 2e-6, what: 'strided x' });
  });

  test.if(gpu !== null)('bf16 x and weights (f32 gradients)', async () => {
    const c: Case = { B: 2, L: 19, C: 6, K: 4, xDtype: 'bf16', wDtype: 'bf16', init: true, seq: [[7, 12], [19]] };
    const v = inputs(c, 12);
    const run = async (d: Device) => {
      const x = onDevice(v.x, [c.B, c.L, c.C], d, 'bf16').requiresGrad_();
      const w = onDevice(v.w, [c.C, c.K], d, 'bf16').requiresGrad_();
      const bias = onDevice(v.bias!, [c.C], d, 'bf16').requiresGrad_();
      const init = onDevice(v.init!, [c.B, c.C, c.K], d).requiresGrad_();
      const { y } = poisoned(d, () => causalConv1d(x, w, bias, { initialState: init, seqIdx: onDevice(v.seq!, [c.B, c.L], d) }));
      poisoned(d, () => backward(y, { grad: onDevice(randomData(y.shape, 5), y.shape, d) }));
      return Promise.all([x, w, bias, init].map((t) => t.grad!.toFloat32()));
    };
    const [ref, got] = [await run(cpu), await run(gpu!)];
    ref.forEach((r, k) => expectClose(got[k]!, r, { rtol: 2e-6, what: `gradient ${k}` }));
  });
});
