import { describe, expect, test } from 'bun:test';
import { tensor } from '../../creation';
import { getCpuDevice, type Device } from '../../device/device';
import type { WebGpuDevice } from '../../device/webgpu-device';
import type { DType } from '../../dtype';
import type { Tensor } from '../../tensor';
import { expectClose, onDevice, poisoned, randomData, testDevices, testGpu, withBindingLimit } from '../../testing';
import { narrow } from '../layout/layout';
import { moeExperts } from './moe-experts';
import { withKernelOverrides } from '../../runtime/kernel-overrides';
import { moeRoute, type MoeRouteOptions } from './moe-route';
import { type ExpertCase, expertCaseName, poisonExpertsExcept, ROUTE_CASES, route, routeCaseName, routingFor } from './moe-test-cases';

const gpu = (await testGpu()) as WebGpuDevice | null;
const cpu = getCpuDevice();
const devices = await testDevices();

const logit = (s: number) => Math.log(s / (1 - s));

async function routeOn(device: Device, scores: number[][], bias: number[] | null, o: MoeRouteOptions) {
  const logits = tensor(scores.flat().map(logit), [scores.length, scores[0]!.length], { device });
  const r = moeRoute(logits, bias ? tensor(bias, [bias.length], { device }) : null, o);
  return { indices: Array.from(await r.indices.data()), weights: Array.from(await r.weights.data()) };
}

/** Expected weights for chosen unbiased scores. */
function expectedWeights(s: number[], o: MoeRouteOptions): number[] {
  const sum = s.reduce((a, b) => a + b, 0);
  return s.map((v) => (o.normTopkProb ? v / (sum + 1e-20) : v) * o.routedScalingFactor);
}

describe('moeRoute: hand-checked', () => {
  // Expert 0 is the single best, but its group {0, 1} scores 0.95 + 0.05 = 1.0 and loses to
  // {2, 3} (1.3) and {4, 5} (1.27); {6, 7} scores 0.5.
  const token = [0.95, 0.05, 0.7, 0.6, 0.65, 0.62, 0.3, 0.2];
  for (const device of devices) {
    for (const normTopkProb of [false, true]) {
      test(`${device.kind}: group rule, normTopkProb ${normTopkProb}`, async () => {
        const grouped = route({ topK: 3, nGroup: 4, topkGroup: 2, normTopkProb });
        const g = await routeOn(device, [token], null, grouped);
        expect(g.indices).toEqual([2, 4, 5]);
        expectClose(g.weights, expectedWeights([0.7, 0.65, 0.62], grouped), { rtol: 1e-6 });
        const flat = route({ topK: 3, normTopkProb });
        const f = await routeOn(device, [token], null, flat);
        expect(f.indices).toEqual([0, 2, 4]);
        expectClose(f.weights, expectedWeights([0.95, 0.7, 0.65], flat), { rtol: 1e-6 });
      });
    }

    test(`${device.kind}: bias selects, unbiased scores weigh`, async () => {
      const o = route({ topK: 3 });
      const r = await routeOn(device, [[0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25]], [0, 0, 0, 0, 0, 0, 0.5, 0.45], o);
      // Biased scores: 6 → 0.8, 7 → 0.7, 0 → 0.6.
      expect(r.indices).toEqual([6, 7, 0]);
      expectClose(r.weights, expectedWeights([0.3, 0.25, 0.6], o), { rtol: 1e-6 });
    });

    test(`${device.kind}: a NaN score ranks first and shows in its weight`, async () => {
      const logits = tensor([0.5, -1, 2, NaN, 1, 0, 0.25, 3], [1, 8], { device });
      const r = moeRoute(logits, null, route({ topK: 2, normTopkProb: false, routedScalingFactor: 1 }));
      expect(Array.from(await r.indices.data())).toEqual([3, 7]);
      const w = await r.weights.data();
      expect(Number.isNaN(w[0]!)).toBe(true);
      expectClose([w[1]!], [1 / (1 + Math.exp(-3))], { rtol: 1e-6 });
    });

    test(`${device.kind}: ties go to the lower index, for groups and experts`, async () => {
      const even = [[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]];
      const grouped = route({ topK: 3, nGroup: 4, topkGroup: 2, normTopkProb: false, routedScalingFactor: 1 });
      expect((await routeOn(device, even, null, grouped)).indices).toEqual([0, 1, 2]);
      // Groups {4,5} and {6,7} tie above the rest; the tie goes to {4,5}, whose experts tie too.
      const r = await routeOn(device, even, [0, 0, 0, 0, 0.1, 0.1, 0.1, 0.1], route({ topK: 2, nGroup: 4, topkGroup: 1 }));
      expect(r.indices).toEqual([4, 5]);
    });
  }
});

describe('moeRoute: WebGPU vs CPU reference', () => {
  for (const c of ROUTE_CASES) {
    test.if(gpu !== null)(routeCaseName(c), async () => {
      const logits = randomData([c.tokens, c.experts], 3, { scale: 2, dtype: c.dtype });
      const bias = randomData([c.experts], 4, { scale: 0.1 });
      const run = (d: Device) => moeRoute(onDevice(logits, [c.tokens, c.experts], d, c.dtype), c.bias ? onDevice(bias, [c.experts], d) : null, c.o);
      const ref = run(cpu);
      const got = poisoned(gpu!, () => run(gpu!));
      expect(Array.from(await got.indices.data())).toEqual(Array.from(await ref.indices.data()));
      expectClose((await got.weights.data()) as Float32Array, (await ref.weights.data()) as Float32Array, { rtol: 2e-6, what: 'weights' });
    });
  }
});

/** Distinct experts per token, `everyToken` in every token's slots and `unused` in none, with positive weights. */
function routed(c: ExpertCase, seed: number, everyToken: number, unused: number): { indices: Int32Array; weights: Float32Array } {
  return { indices: routingFor(c, seed, unused, everyToken), weights: randomData([c.tokens, c.slots], seed + 1, { positive: true }) };
}

function expertInputs(c: ExpertCase, seed: number) {
  return {
    x: randomData([c.tokens, c.hin], seed, { dtype: c.xDtype }),
    up: randomData([c.experts, c.inter, c.hin], seed + 2, { dtype: c.weightDtype, scale: 0.4 }),
    down: randomData([c.experts, c.hout, c.inter], seed + 3, { dtype: c.weightDtype, scale: 0.4 }),
    upBias: randomData([c.experts, c.inter], seed + 4, { scale: 0.3 }),
    downBias: randomData([c.experts, c.hout], seed + 5),
  };
}

function runExperts(d: Device, c: ExpertCase, v: ReturnType<typeof expertInputs>, r: { indices: Int32Array; weights: Float32Array }): Tensor {
  return moeExperts(
    onDevice(v.x, [c.tokens, c.hin], d, c.xDtype),
    onDevice(r.indices, [c.tokens, c.slots], d),
    onDevice(r.weights, [c.tokens, c.slots], d),
    onDevice(v.up, [c.experts, c.inter, c.hin], d, c.weightDtype),
    onDevice(v.down, [c.experts, c.hout, c.inter], d, c.weightDtype),
    c.biases ? { upBias: onDevice(v.upBias, [c.experts, c.inter], d), downBias: onDevice(v.downBias, [c.experts, c.hout], d) } : {},
  );
}

async function compareExperts(c: ExpertCase, seed = 7): Promise<void> {
  const v = expertInputs(c, seed);
  const r = routed(c, seed + 10, c.experts - 1, 1);
  const ref = runExperts(cpu, c, v, r);
  const got = poisoned(gpu!, () => runExperts(gpu!, c, v, r));
  expect(got.shape).toEqual([c.tokens, c.hout]);
  expectClose((await got.data()) as Float32Array, (await ref.data()) as Float32Array, { rtol: 1e-5, what: 'moeExperts' });
}

describe('moeExperts: WebGPU vs CPU reference', () => {
  // Cases share kernel variants where they can: llvmpipe compiles each GEMM variant for ~1 s.
  const cases: ExpertCase[] = [
    { tokens: 37, experts: 12, slots: 3, hin: 29, inter: 13, hout: 31, weightDtype: 'f32', biases: true },
    { tokens: 37, experts: 8, slots: 2, hin: 29, inter: 13, hout: 29, weightDtype: 'bf16', xDtype: 'bf16', biases: true },
    { tokens: 37, experts: 12, slots: 1, hin: 29, inter: 13, hout: 17, weightDtype: 'f32', biases: true },
    // K a multiple of 8: the vector-load path, f32 and bf16; 291 pairs span two grouping chunks.
    { tokens: 97, experts: 12, slots: 3, hin: 40, inter: 24, hout: 21, weightDtype: 'f32', biases: true },
    { tokens: 37, experts: 8, slots: 2, hin: 40, inter: 24, hout: 21, weightDtype: 'bf16', xDtype: 'bf16' },
    // Fewer pairs than experts (decode): one-row tiles.
    { tokens: 3, experts: 12, slots: 3, hin: 29, inter: 13, hout: 31, weightDtype: 'f32', biases: true },
    { tokens: 1, experts: 8, slots: 2, hin: 40, inter: 24, hout: 21, weightDtype: 'bf16', xDtype: 'bf16' },
  ];
  // Prefill-sized calls run the texture tile on software rasterizers, the storage-buffer kernel elsewhere: both, everywhere.
  for (const path of ['textures', 'buffers'] as const) {
    for (const c of cases) {
      test.if(gpu !== null)(`${expertCaseName(c)} (${path})`, async () => {
        await withKernelOverrides({ groupedGemm: path }, () => compareExperts(c));
      });
    }
  }

  test.if(gpu !== null)('routed end to end: grouped routing feeds the experts', async () => {
    const [tokens, experts, hin, inter, hout] = [37, 12, 29, 13, 29];
    const o = route({ topK: 3, nGroup: 4, topkGroup: 2 });
    const logits = randomData([tokens, experts], 31, { scale: 2 });
    const v = expertInputs({ tokens, experts, slots: 3, hin, inter, hout, weightDtype: 'f32' }, 33);
    const layer = (d: Device) => {
      const r = moeRoute(onDevice(logits, [tokens, experts], d), null, o);
      return moeExperts(
        onDevice(v.x, [tokens, hin], d),
        r.indices,
        r.weights,
        onDevice(v.up, [experts, inter, hin], d),
        onDevice(v.down, [experts, hout, inter], d),
        {
          upBias: onDevice(v.upBias, [experts, inter], d),
          downBias: onDevice(v.downBias, [experts, hout], d),
        },
      );
    };
    const ref = layer(cpu);
    const got = poisoned(gpu!, () => layer(gpu!));
    expectClose((await got.data()) as Float32Array, (await ref.data()) as Float32Array, { rtol: 1e-5 });
  });

  test.if(gpu !== null)('weights split across bindings and tokens across passes', async () => {
    await withKernelOverrides({ groupedGemm: 'buffers' }, async () => {
      const c: ExpertCase = { tokens: 37, experts: 12, slots: 3, hin: 40, inter: 24, hout: 21, weightDtype: 'bf16', xDtype: 'bf16' };
      // 8 KiB: 4 experts' up weights (1920 bytes each) per binding and 3 tokens per pass (their
      // grouped activations need up to 72 of the 82 rows that fit); 16 KiB: 8 experts, 28 tokens.
      for (const limit of [8192, 16384]) {
        const before = gpu!.batch.dispatchCount;
        await withBindingLimit(gpu!, limit, () => compareExperts(c, 11));
        // Unsplit, a call is 4 grouping + 2 GEMM + 1 combine dispatches (plus uploads' fills when poisoned).
        const up = Math.ceil(12 / Math.floor((limit - 260) / (24 * 40 * 2)));
        expect(gpu!.batch.dispatchCount - before).toBeGreaterThanOrEqual(4 + 2 * up + 1);
      }
      // One expert's up weight alone (1920 bytes) above the limit: a clear error, not a bad binding.
      await withBindingLimit(gpu!, 2048, () => {
        const v = expertInputs(c, 11);
        const r = routed(c, 21, 0, 1);
        expect(() => runExperts(gpu!, c, v, r)).toThrow("moe_up: one expert's weight [24, 40] bf16 (1920 bytes) exceeds maxStorageBufferBindingSize (2048)");
      });
    });
  });

  test.if(gpu !== null)('texture tile: tokens across passes under a small binding limit', async () => {
    await withKernelOverrides({ groupedGemm: 'textures' }, () =>
      withBindingLimit(gpu!, 16384, () =>
        compareExperts({ tokens: 37, experts: 12, slots: 3, hin: 40, inter: 24, hout: 21, weightDtype: 'bf16', xDtype: 'bf16', biases: true }, 11),
      ),
    );
  });

  test.if(gpu !== null)("a token's output reads only its own experts", async () => {
    // Unchosen experts hold NaN weights: any read of them would reach the output.
    const c: ExpertCase = { tokens: 3, experts: 8, slots: 2, hin: 40, inter: 24, hout: 16, weightDtype: 'bf16', xDtype: 'bf16' };
    const v = expertInputs(c, 21);
    const r = { indices: Int32Array.from([3, 5, 5, 3, 3, 5]), weights: Float32Array.from([0.5, 1.5, 1, 2, 0.25, 0.75]) };
    poisonExpertsExcept(c, v.up, v.down, [3, 5]);
    const ref = await runExperts(cpu, c, v, r).data();
    const got = await poisoned(gpu!, () => runExperts(gpu!, c, v, r)).data();
    expectClose(got as Float32Array, ref as Float32Array, { rtol: 1e-5 });
  });

  test.if(gpu !== null)('views: x and weights starting inside their storage', async () => {
    // Row 1 onwards of a larger x, and experts 1.. of a larger stack: offsets of 40 / 29 elements
    // keep (and lose) the vector path's alignment.
    for (const hin of [40, 29]) {
      const c: ExpertCase = { tokens: 37, experts: 8, slots: 2, hin, inter: 24, hout: 21, weightDtype: 'bf16', xDtype: 'bf16' };
      const v = expertInputs({ ...c, tokens: c.tokens + 1, experts: c.experts + 1 }, 9);
      const r = routed(c, 19, 2, 5);
      const run = (d: Device) =>
        moeExperts(
          narrow(onDevice(v.x, [c.tokens + 1, hin], d, 'bf16'), 0, 1, c.tokens),
          onDevice(r.indices, [c.tokens, c.slots], d),
          onDevice(r.weights, [c.tokens, c.slots], d),
          narrow(onDevice(v.up, [c.experts + 1, c.inter, hin], d, 'bf16'), 0, 1, c.experts),
          narrow(onDevice(v.down, [c.experts + 1, c.hout, c.inter], d, 'bf16'), 0, 1, c.experts),
        );
      const ref = run(cpu);
      const got = poisoned(gpu!, () => run(gpu!));
      expectClose((await got.data()) as Float32Array, (await ref.data()) as Float32Array, { rtol: 1e-5, what: `Hin=${hin}` });
    }
  });

  test.if(gpu !== null)('intermediates are released: only the output stays allocated', async () => {
    const c: ExpertCase = { tokens: 37, experts: 8, slots: 2, hin: 40, inter: 24, hout: 21, weightDtype: 'bf16', xDtype: 'bf16' };
    const v = expertInputs(c, 3);
    const r = routed(c, 4, 0, 1);
    const inputs = [
      onDevice(v.x, [c.tokens, c.hin], gpu!, 'bf16'),
      onDevice(r.indices, [c.tokens, c.slots], gpu!),
      onDevice(r.weights, [c.tokens, c.slots], gpu!),
      onDevice(v.up, [c.experts, c.inter, c.hin], gpu!, 'bf16'),
      onDevice(v.down, [c.experts, c.hout, c.inter], gpu!, 'bf16'),
    ] as const;
    const live = gpu!.memoryStats().liveBuffers;
    const out = moeExperts(...inputs);
    expect(gpu!.memoryStats().liveBuffers).toBe(live + 1);
    out.dispose();
    for (const t of inputs) t.dispose();
  });

  test.if(gpu !== null)('an out-of-range expert index makes only that token NaN on the GPU', async () => {
    const c: ExpertCase = { tokens: 3, experts: 4, slots: 2, hin: 5, inter: 3, hout: 2, weightDtype: 'f32', biases: true };
    const v = expertInputs(c, 5);
    const r = { indices: Int32Array.from([0, 1, 2, 9, 3, -1]), weights: Float32Array.from([1, 1, 1, 1, 1, 1]) };
    const out = await runExperts(gpu!, c, v, r).data();
    expect(Number.isFinite(out[0]!) && Number.isFinite(out[1]!)).toBe(true);
    expect(Array.from(out.slice(2)).every(Number.isNaN)).toBe(true);
    expect(() => runExperts(cpu, c, v, r)).toThrow('token 1 slot 1 routes to expert 9, outside [0, 4)');
  });
});

describe('moe: edge cases and errors', () => {
  for (const device of devices) {
    test(`${device.kind}: zero tokens`, async () => {
      const r = moeRoute(tensor(new Float32Array(0), [0, 8], { device }), null, route());
      expect(r.indices.shape).toEqual([0, 2]);
      const out = moeExperts(
        tensor(new Float32Array(0), [0, 5], { device }),
        r.indices,
        r.weights,
        tensor(new Float32Array(8 * 3 * 5), [8, 3, 5], { device }),
        tensor(new Float32Array(8 * 4 * 3), [8, 4, 3], { device }),
      );
      expect(out.shape).toEqual([0, 4]);
    });
  }

  test('moeRoute rejects bad options and shapes', () => {
    const logits = tensor(new Float32Array(3 * 12), [3, 12], { device: cpu });
    expect(() => moeRoute(logits, null, route({ nGroup: 5 }))).toThrow('12 experts do not split into nGroup=5');
    expect(() => moeRoute(logits, null, route({ nGroup: 4, topkGroup: 5 }))).toThrow('topkGroup=5 exceeds nGroup=4');
    expect(() => moeRoute(logits, null, route({ nGroup: 4, topkGroup: 1, topK: 4 }))).toThrow('topK=4 exceeds the 3 experts available');
    expect(() => moeRoute(logits, null, route({ topK: 13 }))).toThrow('topK=13 exceeds the 12 experts');
    expect(() => moeRoute(logits, null, route({ nGroup: 12, topkGroup: 2 }))).toThrow('cannot be scored by their top-2');
    expect(() => moeRoute(logits, null, route({ topK: 0 }))).toThrow('topK must be a positive integer');
    expect(() => moeRoute(logits, tensor(new Float32Array(11), [11], { device: cpu }), route())).toThrow('correction bias must be a float [12] tensor');
    expect(() => moeRoute(tensor(new Float32Array(12), [12], { device: cpu }), null, route())).toThrow('router logits must be a [tokens, experts]');
  });

  test('moeExperts rejects mismatched shapes and dtypes', () => {
    const t = (shape: number[], dtype: DType = 'f32') => tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape, { device: cpu, dtype });
    const [x, idx, w, up, down] = [t([4, 6]), t([4, 2], 'i32'), t([4, 2]), t([8, 3, 6]), t([8, 5, 3])];
    expect(() => moeExperts(x, t([4, 2]), w, up, down)).toThrow('indices must be a [4, k] i32 tensor');
    expect(() => moeExperts(x, idx, t([4, 3]), up, down)).toThrow('weights must be a [4, 2] float tensor');
    expect(() => moeExperts(x, idx, w, t([8, 3, 7]), down)).toThrow("upProj's last dimension must match x's hidden size 6");
    expect(() => moeExperts(x, idx, w, up, t([7, 5, 3]))).toThrow('downProj must be [8, outHidden, 3]');
    expect(() => moeExperts(x, idx, w, up, down, { upBias: t([8, 4]) })).toThrow('upBias must be a [8, 3] float tensor');
    expect(() => moeExperts(x, idx, w, up, down, { downBias: t([5]) })).toThrow('downBias must be a [8, 5] float tensor');
  });
});
