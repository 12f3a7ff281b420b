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
import { expectClose, onDevice, poisoned, randomData, testNative } from '../../testing';
import { narrow } from '../layout/layout';
import { moeExperts } from './moe-experts';
import { moeRoute } from './moe-route';
import {
  type ExpertCase,
  expertCaseName,
  expertOperands,
  expectExpertsWithGradsMatch,
  poisonExpertsExcept,
  ROUTE_CASES,
  type RouteCase,
  route,
  routeCaseName,
  routingFor,
} from './moe-test-cases';

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

describe.skipIf(!native)('native moeRoute vs the reference', () => {
  const cases: RouteCase[] = [
    ...ROUTE_CASES,
    // Enough tokens for the kernel's threads.
    { tokens: 1031, experts: 128, o: route({ topK: 6 }), bias: true },
  ];
  for (const c of cases) {
    test(routeCaseName(c), async () => {
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
    test(`${expertCaseName(c)}, expert 1 unused`, async () => {
      await expectExpertsWithGradsMatch(native!, c, routingFor(c, 40, 1), expertOperands(c, 41), randomData([c.tokens, c.hout], 49), 2e-5);
    });
  }

  for (const weightDtype of ['f32', 'bf16'] as const) {
    test(`decode path (every expert at most one row): 2 tokens, 6 distinct experts of 9, ${weightDtype}, biases`, async () => {
      const c: ExpertCase = { tokens: 2, experts: 9, slots: 3, hin: 83, inter: 37, hout: 83, weightDtype, biases: true };
      const indices = Int32Array.from([0, 4, 8, 2, 6, 3]);
      await expectExpertsWithGradsMatch(native!, c, indices, expertOperands(c, 71), randomData([c.tokens, c.hout], 79), 2e-5);
    });
  }

  test('without the system BLAS: our GEMM on the transposed gradient operands', async () => {
    const lib = native?.kind === 'cpu' ? native.native : null;
    const c: ExpertCase = { tokens: 301, experts: 6, slots: 2, hin: 67, inter: 45, hout: 67, weightDtype: 'bf16', biases: true };
    lib!.symbols.nt_enable_blas(0);
    try {
      await expectExpertsWithGradsMatch(native!, c, routingFor(c, 50, 2), expertOperands(c, 51), randomData([c.tokens, c.hout], 59), 2e-5);
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
    poisonExpertsExcept(c, up!.values, down!.values, [3, 5]);
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
