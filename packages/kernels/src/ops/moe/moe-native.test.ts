/**
 * The native MoE kernels (packages/kernels/native/moe.c) against the TypeScript reference on the
 * same host data: routing and its backward, the grouped experts and their backward, on odd sizes,
 * experts without tokens, bf16 operands, views that start inside their storage and decode's single
 * token. Skipped when the native library is unavailable here.
 */
import { describe, expect, test } from 'bun:test';
import { backward } from '../../autograd/backward';
import { tensor } from '../../creation';
import { getCpuDevice, type Device } from '../../device/device';
import type { DType } from '../../dtype';
import { Generator } from '../../random';
import type { Tensor } from '../../tensor';
import { expectClose, onDevice, poisoned, randomData, testNative } from '../../testing';
import { narrow } from '../layout/layout';
import { moeExperts } from './moe-experts';
import { moeRoute, type MoeRouteOptions } from './moe-route';

const native = testNative();
const cpu = getCpuDevice();

// Counts the calls into the MoE entry points, so a lost dispatch (the reference running on both
// sides) fails the last test instead of passing every comparison.
const calls = new Map<string, number>();
if (native?.kind === 'cpu' && native.native) {
  const symbols = native.native.symbols as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const name of ['nt_moe_route', 'nt_moe_route_backward', 'nt_moe_experts', 'nt_moe_experts_backward']) {
    const fn = symbols[name]!;
    calls.set(name, 0);
    symbols[name] = (...args: unknown[]) => {
      calls.set(name, calls.get(name)! + 1);
      return fn(...args);
    };
  }
}

const route = (o: Partial<MoeRouteOptions> = {}): MoeRouteOptions => ({
  topK: 2,
  nGroup: 1,
  topkGroup: 1,
  normTopkProb: true,
  routedScalingFactor: 2.5,
  ...o,
});

describe.skipIf(!native)('native moeRoute vs the reference', () => {
  const cases: { tokens: number; experts: number; o: MoeRouteOptions; bias: boolean; dtype?: DType }[] = [
    { tokens: 37, experts: 8, o: route({ topK: 1 }), bias: true },
    { tokens: 37, experts: 12, o: route({ topK: 3, normTopkProb: false, routedScalingFactor: 1 }), bias: false },
    { tokens: 37, experts: 8, o: route({ topK: 3, nGroup: 4, topkGroup: 2 }), bias: true },
    { tokens: 37, experts: 12, o: route({ topK: 2, nGroup: 4, topkGroup: 2, normTopkProb: false }), bias: true, dtype: 'bf16' },
    { tokens: 5, experts: 512, o: route({ topK: 22, nGroup: 8, topkGroup: 4 }), bias: true },
    // Enough tokens for the kernel's threads.
    { tokens: 1031, experts: 128, o: route({ topK: 6 }), bias: true },
  ];
  for (const c of cases) {
    const name = `T=${c.tokens} E=${c.experts} k=${c.o.topK} groups ${c.o.topkGroup}/${c.o.nGroup} norm=${c.o.normTopkProb}${c.bias ? ' bias' : ''}${c.dtype ? ` ${c.dtype}` : ''}`;
    test(name, async () => {
      const logits = randomData([c.tokens, c.experts], 3, { scale: 2, dtype: c.dtype });
      // Ties (equal logits) and a NaN: the selection order must match too.
      logits[5] = logits[6]!;
      logits[c.experts + 1] = NaN;
      const bias = randomData([c.experts], 4, { scale: 0.1 });
      const upstream = randomData([c.tokens, c.o.topK], 5);
      const run = async (d: Device) => {
        const l = onDevice(logits, [c.tokens, c.experts], d, c.dtype).requiresGrad_();
        const r = poisoned(d, () => moeRoute(l, c.bias ? onDevice(bias, [c.experts], d) : null, c.o));
        poisoned(d, () => backward(r.weights, { grad: onDevice(upstream, [c.tokens, c.o.topK], d) }));
        return { indices: Array.from(await r.indices.data()), weights: await r.weights.toFloat32(), grad: await l.grad!.toFloat32() };
      };
      const ref = await run(cpu);
      const got = await run(native!);
      expect(got.indices).toEqual(ref.indices);
      expectClose(got.weights, ref.weights, { rtol: 1e-6, what: 'weights' });
      // A NaN logit makes its token's gradient NaN on both sides; compare the rest.
      expectClose(got.grad, ref.grad, { rtol: 1e-6, what: 'logit gradient' });
    });
  }
});

interface ExpertCase {
  tokens: number;
  experts: number;
  slots: number;
  hin: number;
  inter: number;
  hout: number;
  weightDtype: DType;
  xDtype?: DType;
  biases?: boolean;
}

/** Distinct experts per token; expert `unused` is in no token's slots. */
function routingFor(c: ExpertCase, seed: number, unused: number): Int32Array {
  const g = new Generator(seed);
  const indices = new Int32Array(c.tokens * c.slots);
  for (let t = 0; t < c.tokens; t++) {
    const chosen: number[] = [];
    while (chosen.length < c.slots) {
      const e = Math.floor(g.uniform() * c.experts);
      if (e !== unused && !chosen.includes(e)) chosen.push(e);
    }
    indices.set(chosen, t * c.slots);
  }
  return indices;
}

/** The differentiable operands in moeExperts' argument order (biases last). */
function expertOperands(c: ExpertCase, seed: number): { values: Float32Array; shape: number[]; dtype: DType }[] {
  const ops = [
    { values: randomData([c.tokens, c.hin], seed, { dtype: c.xDtype }), shape: [c.tokens, c.hin], dtype: c.xDtype ?? 'f32' },
    { values: randomData([c.tokens, c.slots], seed + 1, { positive: true }), shape: [c.tokens, c.slots], dtype: 'f32' as DType },
    {
      values: randomData([c.experts, c.inter, c.hin], seed + 2, { dtype: c.weightDtype, scale: 0.5 }),
      shape: [c.experts, c.inter, c.hin],
      dtype: c.weightDtype,
    },
    {
      values: randomData([c.experts, c.hout, c.inter], seed + 3, { dtype: c.weightDtype, scale: 0.5 }),
      shape: [c.experts, c.hout, c.inter],
      dtype: c.weightDtype,
    },
  ];
  if (c.biases) {
    ops.push(
      { values: randomData([c.experts, c.inter], seed + 4, { scale: 0.3 }), shape: [c.experts, c.inter], dtype: 'f32' },
      { values: randomData([c.experts, c.hout], seed + 5), shape: [c.experts, c.hout], dtype: 'f32' },
    );
  }
  return ops;
}

const callExperts = (indices: Tensor, [x, w, up, down, upBias, downBias]: Tensor[]) =>
  moeExperts(x!, indices, w!, up!, down!, upBias ? { upBias, downBias: downBias! } : {});

/** Forward and backward on `device` (outputs and gradients poisoned); the output and every gradient as f32. */
async function expertsWithGrads(d: Device, c: ExpertCase, indices: Int32Array, ops: ReturnType<typeof expertOperands>, upstream: Float32Array) {
  const ts = ops.map((o) => onDevice(o.values, o.shape, d, o.dtype).requiresGrad_());
  const idx = onDevice(indices, [c.tokens, c.slots], d);
  const out = poisoned(d, () => callExperts(idx, ts));
  poisoned(d, () => backward(out, { grad: onDevice(upstream, [c.tokens, c.hout], d) }));
  return { out: await out.toFloat32(), grads: await Promise.all(ts.map((t) => t.grad!.toFloat32())) };
}

describe.skipIf(!native)('native moeExperts forward and backward vs the reference', () => {
  const cases: ExpertCase[] = [
    { tokens: 37, experts: 12, slots: 3, hin: 29, inter: 13, hout: 31, weightDtype: 'f32', biases: true },
    { tokens: 37, experts: 8, slots: 2, hin: 40, inter: 24, hout: 21, weightDtype: 'bf16', xDtype: 'bf16', biases: true },
    { tokens: 37, experts: 8, slots: 2, hin: 40, inter: 24, hout: 21, weightDtype: 'bf16' },
    { tokens: 37, experts: 12, slots: 1, hin: 29, inter: 13, hout: 17, weightDtype: 'f32' },
    // Decode: a single token (its experts' GEMVs), and fewer pairs than experts.
    { tokens: 1, experts: 8, slots: 2, hin: 40, inter: 24, hout: 40, weightDtype: 'bf16' },
    { tokens: 3, experts: 12, slots: 3, hin: 29, inter: 13, hout: 31, weightDtype: 'f32', biases: true },
    // Experts with more than 32 rows: the BLAS paths (bf16 widened), threads in the combine.
    { tokens: 301, experts: 6, slots: 2, hin: 67, inter: 45, hout: 67, weightDtype: 'f32', biases: true },
    { tokens: 301, experts: 6, slots: 2, hin: 67, inter: 45, hout: 67, weightDtype: 'bf16', xDtype: 'bf16' },
  ];
  for (const c of cases) {
    const name = `T=${c.tokens} E=${c.experts} k=${c.slots} ${c.hin}→${c.inter}→${c.hout} ${c.xDtype ?? 'f32'}·${c.weightDtype}${c.biases ? ' biases' : ''}, expert 1 unused`;
    test(name, async () => {
      const indices = routingFor(c, 40, 1);
      const ops = expertOperands(c, 41);
      const upstream = randomData([c.tokens, c.hout], 49);
      const ref = await expertsWithGrads(cpu, c, indices, ops, upstream);
      const got = await expertsWithGrads(native!, c, indices, ops, upstream);
      expectClose(got.out, ref.out, { rtol: 1e-5, what: 'output' });
      const names = ['x', 'weights', 'upProj', 'downProj', 'upBias', 'downBias'];
      ref.grads.forEach((r, i) => expectClose(got.grads[i]!, r, { rtol: 2e-5, what: `gradient of ${names[i]}` }));
    });
  }

  for (const weightDtype of ['f32', 'bf16'] as const) {
    test(`decode path (every expert at most one row): 2 tokens, 6 distinct experts of 9, ${weightDtype}, biases`, async () => {
      const c: ExpertCase = { tokens: 2, experts: 9, slots: 3, hin: 83, inter: 37, hout: 83, weightDtype, biases: true };
      const indices = Int32Array.from([0, 4, 8, 2, 6, 3]);
      const ops = expertOperands(c, 71);
      const upstream = randomData([c.tokens, c.hout], 79);
      const ref = await expertsWithGrads(cpu, c, indices, ops, upstream);
      const got = await expertsWithGrads(native!, c, indices, ops, upstream);
      expectClose(got.out, ref.out, { rtol: 1e-5, what: 'output' });
      ref.grads.forEach((r, i) => expectClose(got.grads[i]!, r, { rtol: 2e-5, what: `gradient ${i}` }));
    });
  }

  test('without the system BLAS: our GEMM on the transposed gradient operands', async () => {
    const lib = native?.kind === 'cpu' ? native.native : null;
    const c: ExpertCase = { tokens: 301, experts: 6, slots: 2, hin: 67, inter: 45, hout: 67, weightDtype: 'bf16', biases: true };
    const indices = routingFor(c, 50, 2);
    const ops = expertOperands(c, 51);
    const upstream = randomData([c.tokens, c.hout], 59);
    const ref = await expertsWithGrads(cpu, c, indices, ops, upstream);
    lib!.symbols.nt_enable_blas(0);
    try {
      const got = await expertsWithGrads(native!, c, indices, ops, upstream);
      expectClose(got.out, ref.out, { rtol: 1e-5, what: 'output' });
      ref.grads.forEach((r, i) => expectClose(got.grads[i]!, r, { rtol: 2e-5, what: `gradient ${i}` }));
    } finally {
      lib!.symbols.nt_enable_blas(1);
    }
  });

  test('views: x and weights starting inside their storage, only some inputs requiring grad', async () => {
    const c: ExpertCase = { tokens: 37, experts: 8, slots: 2, hin: 29, inter: 24, hout: 21, weightDtype: 'bf16', xDtype: 'bf16' };
    const x = randomData([c.tokens + 1, c.hin], 9, { dtype: 'bf16' });
    const up = randomData([c.experts + 1, c.inter, c.hin], 10, { dtype: 'bf16' });
    const down = randomData([c.experts + 1, c.hout, c.inter], 11, { dtype: 'bf16' });
    const weights = randomData([c.tokens, c.slots], 12, { positive: true });
    const indices = routingFor(c, 13, 5);
    const upstream = randomData([c.tokens, c.hout], 14);
    const run = async (d: Device) => {
      const upT = onDevice(up, [c.experts + 1, c.inter, c.hin], d, 'bf16').requiresGrad_();
      const wT = onDevice(weights, [c.tokens, c.slots], d).requiresGrad_();
      const out = poisoned(d, () =>
        moeExperts(
          narrow(onDevice(x, [c.tokens + 1, c.hin], d, 'bf16'), 0, 1, c.tokens),
          onDevice(indices, [c.tokens, c.slots], d),
          wT,
          narrow(upT, 0, 1, c.experts),
          narrow(onDevice(down, [c.experts + 1, c.hout, c.inter], d, 'bf16'), 0, 1, c.experts),
        ),
      );
      poisoned(d, () => backward(out, { grad: onDevice(upstream, [c.tokens, c.hout], d) }));
      return [await out.toFloat32(), await upT.grad!.toFloat32(), await wT.grad!.toFloat32()];
    };
    const ref = await run(cpu);
    const got = await run(native!);
    ['output', 'upProj gradient', 'weights gradient'].forEach((what, i) => expectClose(got[i]!, ref[i]!, { rtol: 2e-5, what }));
  });

  test("a token's output reads only its own experts (the others hold NaN)", async () => {
    const c: ExpertCase = { tokens: 3, experts: 8, slots: 2, hin: 40, inter: 24, hout: 16, weightDtype: 'f32' };
    const [x, , up, down] = expertOperands(c, 21);
    for (let e = 0; e < c.experts; e++) {
      if (e === 3 || e === 5) continue;
      up!.values.fill(NaN, e * c.inter * c.hin, (e + 1) * c.inter * c.hin);
      down!.values.fill(NaN, e * c.hout * c.inter, (e + 1) * c.hout * c.inter);
    }
    const run = (d: Device) =>
      moeExperts(
        onDevice(x!.values, x!.shape, d),
        onDevice(Int32Array.from([3, 5, 5, 3, 3, 5]), [3, 2], d),
        onDevice(Float32Array.from([0.5, 1.5, 1, 2, 0.25, 0.75]), [3, 2], d),
        onDevice(up!.values, up!.shape, d),
        onDevice(down!.values, down!.shape, d),
      ).toFloat32();
    const got = await run(native!);
    expect(Array.from(got).every(Number.isFinite)).toBe(true);
    expectClose(got, await run(cpu), { rtol: 1e-5 });
    // Decode (one token, each expert one row): the single-region GEMV path.
    const step = await moeExperts(
      onDevice(x!.values.subarray(0, c.hin), [1, c.hin], native!),
      onDevice(Int32Array.from([5, 3]), [1, 2], native!),
      onDevice(Float32Array.from([0.5, 1.5]), [1, 2], native!),
      onDevice(up!.values, up!.shape, native!),
      onDevice(down!.values, down!.shape, native!),
    ).toFloat32();
    expect(Array.from(step).every(Number.isFinite)).toBe(true);
  });

  test('an out-of-range expert index is the same clear error as on the reference', () => {
    const t = (shape: number[]) => tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape, { device: native! });
    const indices = tensor(Int32Array.from([0, 1, 2, 9, 3, -1]), [3, 2], { dtype: 'i32', device: native! });
    expect(() => moeExperts(t([3, 5]), indices, t([3, 2]), t([4, 3, 5]), t([4, 2, 3]))).toThrow('token 1 slot 1 routes to expert 9, outside [0, 4)');
  });

  test('every MoE op ran its native kernel', () => {
    for (const [name, n] of calls) expect(n, name).toBeGreaterThan(0);
  });
});
