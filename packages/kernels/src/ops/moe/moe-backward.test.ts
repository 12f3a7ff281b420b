import { describe, expect, test } from 'bun:test';
import { backward } from '../../autograd/backward';
import { noGrad } from '../../autograd/graph';
import { tensor } from '../../creation';
import { getCpuDevice, type Device } from '../../device/device';
import type { WebGpuDevice } from '../../device/webgpu-device';
import type { DType } from '../../dtype';
import { Generator } from '../../random';
import { expectClose, gradcheck, onDevice, poisoned, randomData, testGpu, withBindingLimit } from '../../testing';
import { moeExperts } from './moe-experts';
import { withKernelOverrides } from '../../runtime/kernel-overrides';
import { moeRoute, type MoeRouteOptions } from './moe-route';
import { callExperts, type ExpertCase, expertCaseName, expertOperands, expectExpertsWithGradsMatch, route, routingFor } from './moe-test-cases';

const gpu = (await testGpu()) as WebGpuDevice | null;
const cpu = getCpuDevice();

/**
 * Router logits whose experts are at least 0.4 apart within each token (a shuffled ladder plus a
 * little noise), so the finite differences of a gradient check never flip the selection.
 */
function ladderLogits(tokens: number, experts: number, seed: number): Float32Array {
  const g = new Generator(seed);
  const out = new Float32Array(tokens * experts);
  for (let t = 0; t < tokens; t++) {
    const order = Array.from({ length: experts }, (_, e) => e);
    for (let i = experts - 1; i > 0; i--) {
      const j = Math.floor(g.uniform() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    order.forEach((rank, e) => (out[t * experts + e] = -2 + (4 * rank) / (experts - 1) + 0.05 * g.uniform()));
  }
  return out;
}

describe('moeRoute backward', () => {
  const [tokens, experts] = [13, 6];
  for (const o of [route(), route({ normTopkProb: false, topK: 3, routedScalingFactor: 1.5 }), route({ nGroup: 3, topkGroup: 2, topK: 3 })]) {
    test(`gradcheck: k=${o.topK} groups ${o.topkGroup}/${o.nGroup} norm=${o.normTopkProb}`, async () => {
      const bias = tensor(randomData([experts], 5, { scale: 0.1 }), [experts], { device: cpu });
      await gradcheck((logits) => moeRoute(logits!, bias, o).weights, [{ values: ladderLogits(tokens, experts, 3), shape: [tokens, experts] }]);
    });
  }

  test('only the chosen logits get a gradient; the indices and the bias get none', async () => {
    const logits = tensor(ladderLogits(3, experts, 4), [3, experts], { device: cpu }).requiresGrad_();
    const bias = tensor(randomData([experts], 5, { scale: 0.1 }), [experts], { device: cpu }).requiresGrad_();
    const r = moeRoute(logits, bias, route());
    expect(r.indices.requiresGrad).toBe(false);
    backward(r.weights, { grad: tensor(randomData([3, 2], 6), [3, 2], { device: cpu }) });
    expect(bias.grad).toBeNull();
    const g = await logits.grad!.data();
    const idx = await r.indices.data();
    for (let t = 0; t < 3; t++) {
      for (let e = 0; e < experts; e++) {
        const chosen = idx[t * 2] === e || idx[t * 2 + 1] === e;
        expect(g[t * experts + e] !== 0, `token ${t} expert ${e}`).toBe(chosen);
      }
    }
  });

  const cases: { o: MoeRouteOptions; dtype: DType }[] = [
    { o: route({ topK: 3 }), dtype: 'f32' },
    { o: route({ topK: 2, nGroup: 4, topkGroup: 2, normTopkProb: false }), dtype: 'bf16' },
  ];
  for (const c of cases) {
    test.if(gpu !== null)(`WebGPU vs CPU: T=37 E=12 k=${c.o.topK} norm=${c.o.normTopkProb} ${c.dtype}`, async () => {
      const values = randomData([37, 12], 8, { scale: 2, dtype: c.dtype });
      const upstream = randomData([37, c.o.topK], 9);
      const run = async (d: Device) => {
        const logits = onDevice(values, [37, 12], d, c.dtype).requiresGrad_();
        const r = poisoned(d, () => moeRoute(logits, onDevice(randomData([12], 10, { scale: 0.1 }), [12], d), c.o));
        poisoned(d, () => backward(r.weights, { grad: onDevice(upstream, [37, c.o.topK], d) }));
        return logits.grad!.toFloat32();
      };
      expectClose(await run(gpu!), await run(cpu), { rtol: 1e-5, what: 'router logit gradient' });
    });
  }
});

describe('moeExperts backward: gradcheck on the CPU reference', () => {
  for (const biases of [false, true]) {
    test(`T=13 H=7 I=5 E=6 k=2, expert 1 unused${biases ? ', biases' : ''}`, async () => {
      const c: ExpertCase = { tokens: 13, experts: 6, slots: 2, hin: 7, inter: 5, hout: 7, weightDtype: 'f32', biases };
      const indices = tensor(routingFor(c, 12, 1), [c.tokens, c.slots], { dtype: 'i32', device: cpu });
      await gradcheck((...ts) => callExperts(indices, ts), expertOperands(c, 20));
    });
  }

  test('Hin ≠ Hout (latent experts) and only some inputs requiring grad', async () => {
    const c: ExpertCase = { tokens: 5, experts: 4, slots: 3, hin: 6, inter: 3, hout: 4, weightDtype: 'f32' };
    const indices = tensor(routingFor(c, 13, 0), [c.tokens, c.slots], { dtype: 'i32', device: cpu });
    await gradcheck((...ts) => callExperts(indices, ts), expertOperands(c, 30));
    const [x, w, up, down] = expertOperands(c, 30).map((o, i) => tensor(o.values, o.shape, { device: cpu }).requiresGrad_(i === 2));
    backward(moeExperts(x!, indices, w!, up!, down!), { grad: tensor(randomData([c.tokens, c.hout], 3), [c.tokens, c.hout], { device: cpu }) });
    expect([x, w, up, down].map((t) => t!.grad !== null)).toEqual([false, false, true, false]);
  });
});

test('gradcheck through routing and experts: the logits get gradients from the expert outputs', async () => {
  const c: ExpertCase = { tokens: 7, experts: 6, slots: 2, hin: 5, inter: 4, hout: 5, weightDtype: 'f32' };
  const [x, , up, down] = expertOperands(c, 60);
  await gradcheck(
    (logits, xs, ups, downs) => {
      const r = moeRoute(logits!, null, route());
      return moeExperts(xs!, r.indices, r.weights, ups!, downs!);
    },
    [{ values: ladderLogits(c.tokens, c.experts, 61), shape: [c.tokens, c.experts] }, x!, up!, down!],
  );
});

async function compareBackward(c: ExpertCase, seed = 40): Promise<void> {
  await expectExpertsWithGradsMatch(gpu!, c, routingFor(c, seed, 1), expertOperands(c, seed + 1), randomData([c.tokens, c.hout], seed + 9), 1e-5);
}

describe('moeExperts backward: WebGPU vs CPU reference', () => {
  const cases: ExpertCase[] = [
    { tokens: 37, experts: 12, slots: 3, hin: 29, inter: 13, hout: 31, weightDtype: 'f32', biases: true },
    { tokens: 37, experts: 8, slots: 2, hin: 40, inter: 24, hout: 21, weightDtype: 'bf16', xDtype: 'bf16' },
    // Widths a multiple of 4 (not of 8): the expert sums' vec4 loads, with a clamped last vector.
    { tokens: 37, experts: 8, slots: 2, hin: 44, inter: 20, hout: 36, weightDtype: 'f32', biases: true },
    // Fewer pairs than experts (decode-sized): one-row tiles.
    { tokens: 3, experts: 12, slots: 3, hin: 29, inter: 13, hout: 17, weightDtype: 'f32', biases: true },
  ];
  for (const c of cases) {
    test.if(gpu !== null)(expertCaseName(c), async () => {
      await compareBackward(c);
    });
  }

  test.if(gpu !== null)('tokens across passes and weights across bindings under a small binding limit', async () => {
    // 8 KiB: 2 tokens per pass (their 48 grouped rows of 40 f32), 2 experts' f32 up gradients (3840 bytes each) per binding.
    await withKernelOverrides({ groupedGemm: 'buffers' }, () =>
      withBindingLimit(gpu!, 8192, () =>
        compareBackward({ tokens: 37, experts: 12, slots: 3, hin: 40, inter: 24, hout: 21, weightDtype: 'bf16', xDtype: 'bf16', biases: true }, 50),
      ),
    );
  });
});

test.if(gpu !== null)("an out-of-range expert index makes only its token's input gradient and its pair's weight gradient NaN on the GPU", async () => {
  const c: ExpertCase = { tokens: 3, experts: 4, slots: 2, hin: 5, inter: 3, hout: 2, weightDtype: 'f32' };
  const indices = onDevice(Int32Array.from([0, 1, 2, 9, 3, -1]), [c.tokens, c.slots], gpu!);
  const ts = expertOperands(c, 70).map((o) => onDevice(o.values, o.shape, gpu!).requiresGrad_());
  backward(callExperts(indices, ts), { grad: onDevice(randomData([c.tokens, c.hout], 71), [c.tokens, c.hout], gpu!) });
  const gx = await ts[0]!.grad!.data();
  expect(Array.from(gx.slice(0, c.hin)).every(Number.isFinite)).toBe(true);
  expect(Array.from(gx.slice(c.hin)).every(Number.isNaN)).toBe(true);
  expect(Array.from(await ts[1]!.grad!.data()).map(Number.isNaN)).toEqual([false, false, false, true, false, true]);
});

describe('moe backward: lifetimes and edge cases', () => {
  const c: ExpertCase = { tokens: 13, experts: 6, slots: 2, hin: 7, inter: 5, hout: 7, weightDtype: 'f32', biases: true };
  const devices = gpu ? [cpu, gpu] : [cpu];
  for (const d of devices) {
    test(`${d.kind}: under noGrad nothing is saved; after backward only the gradients stay`, async () => {
      const indices = onDevice(routingFor(c, 12, 1), [c.tokens, c.slots], d);
      const ts = expertOperands(c, 20).map((o) => onDevice(o.values, o.shape, d).requiresGrad_());
      const live = d.memoryStats().liveBuffers;
      const plain = noGrad(() => callExperts(indices, ts));
      expect(plain.gradFn).toBeNull();
      expect(d.memoryStats().liveBuffers).toBe(live + 1);
      plain.dispose();
      const out = callExperts(indices, ts);
      const upstream = onDevice(randomData([c.tokens, c.hout], 1), [c.tokens, c.hout], d);
      backward(out, { grad: upstream });
      out.dispose();
      upstream.dispose();
      expect(d.memoryStats().liveBuffers).toBe(live + ts.length);
      for (const t of [...ts, indices]) {
        t.grad?.dispose();
        t.dispose();
      }
    });

    test(`${d.kind}: zero tokens give zero gradients`, async () => {
      const logits = tensor(new Float32Array(0), [0, 6], { device: d }).requiresGrad_();
      const r = moeRoute(logits, null, route());
      const up = onDevice(randomData([6, 3, 5], 1), [6, 3, 5], d).requiresGrad_();
      const down = onDevice(randomData([6, 4, 3], 2), [6, 4, 3], d).requiresGrad_();
      const out = moeExperts(tensor(new Float32Array(0), [0, 5], { device: d }), r.indices, r.weights, up, down);
      backward(out, { grad: tensor(new Float32Array(0), [0, 4], { device: d }) });
      expect(Array.from(await up.grad!.data()).every((v) => v === 0)).toBe(true);
      expect(Array.from(await down.grad!.data()).every((v) => v === 0)).toBe(true);
      expect(logits.grad!.shape).toEqual([0, 6]);
    });
  }
});
