/**
 * Every native CPU kernel against the TypeScript reference on the same host data: odd sizes,
 * bf16 operands, strided (transposed, sliced) and broadcast views, bias. Skipped when the native
 * library is unavailable here (NEMOTRON_TEST_DEVICES naming `native` makes that an error).
 */
import { describe, expect, test } from 'bun:test';
import { deviceLabel, deviceOptionsFromEnv, getCpuDevice, type Device } from '../device/device';
import type { DType } from '../dtype';
import { matmul, linear } from '../ops/matmul/matmul';
import { binary, unary, unaryGrad } from '../ops/elementwise/elementwise';
import { BINARY, UNARY, UNARY_GRAD, type BinaryOp, type UnaryOp } from '../ops/elementwise/definitions';
import { cast, contiguous, copyInto } from '../ops/layout/layout';
import { AdamW } from '../optim/adamw';
import { empty } from '../creation';
import { narrow, transpose } from '../ops/layout/layout';
import { ssdScan } from '../ops/scan/scan';
import { causalConv1dUpdate, selectiveStateUpdate } from '../ops/scan/mamba-decode-host';
import { groupedGatedRmsNorm, rmsNorm } from '../ops/norm/norm';
import { causalConv1d } from '../ops/conv/conv';
import { attention, attentionWithStats } from '../ops/attention/attention';
import { crossEntropy } from '../ops/cross-entropy/cross-entropy';
import { embedding } from '../ops/index/gather';
import { clipGradNorm } from '../optim/clip';
import { tensor } from '../creation';
import type { Tensor } from '../tensor';
import { expectBackwardMatches, expectClose, onDevice, poisoned, randomData, seqIdsFromLengths, testNative } from '../testing';

const native = testNative();
const cpu = getCpuDevice();

/**
 * ssdScan's gradients on the native device against the reference, for shape [batch, length, heads,
 * head dim, groups, state dim]: x, dt (> 0), A (< 0), B, C, D and an initial state from seeds
 * `seed` … `seed + 6`; `documents`: each row's document lengths (null: one sequence per row).
 */
async function expectScanBackwardMatches(
  [bb, ll, hh, pp, gg, nn]: readonly [number, number, number, number, number, number],
  seed: number,
  documents: readonly number[] | null,
  chunkSize: number,
  what: string,
): Promise<void> {
  const inputs = [
    { values: randomData([bb, ll, hh, pp], seed), shape: [bb, ll, hh, pp] },
    { values: randomData([bb, ll, hh], seed + 1, { positive: true, scale: 0.3 }), shape: [bb, ll, hh] },
    { values: randomData([hh], seed + 2).map((v) => -Math.abs(v) - 0.1), shape: [hh] },
    { values: randomData([bb, ll, gg, nn], seed + 3), shape: [bb, ll, gg, nn] },
    { values: randomData([bb, ll, gg, nn], seed + 4), shape: [bb, ll, gg, nn] },
    { values: randomData([hh], seed + 5), shape: [hh] },
    { values: randomData([bb, hh, pp, nn], seed + 6), shape: [bb, hh, pp, nn] },
  ];
  const ids = documents
    ? seqIdsFromLengths(
        Array.from({ length: bb }, () => documents),
        ll,
      )
    : null;
  await expectBackwardMatches(
    native!,
    (x, dt, A, B, C, D, init) => {
      const seqIdx = ids ? tensor(ids, [bb, ll], { device: x!.device }) : null;
      return ssdScan(x!, dt!, A!, B!, C!, { chunkSize, D, initialState: init, seqIdx }).y;
    },
    inputs,
    { rtol: 2e-5, what },
  );
}

// Counts the calls into each native entry point, so a lost dispatch hook (the op silently running
// the reference on both sides) fails the last test instead of passing every comparison.
const calls = new Map<string, number>();
if (native?.kind === 'cpu' && native.native) {
  const symbols = native.native.symbols as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const [name, fn] of Object.entries(symbols)) {
    calls.set(name, 0);
    symbols[name] = (...args: unknown[]) => {
      calls.set(name, calls.get(name)! + 1);
      return fn(...args);
    };
  }
}

async function same(what: string, run: (d: Device) => Tensor, rtol: number): Promise<void> {
  const ref = run(cpu);
  const got = poisoned(native!, () => run(native!));
  expect(got.shape).toEqual(ref.shape);
  expectClose(await got.toFloat32(), await ref.toFloat32(), { rtol, what });
}

const lib = native?.kind === 'cpu' ? native.native : null;
/** Runs `fn` with our own f32 GEMM/GEMV (the system BLAS, when loaded, switched off). */
async function withoutBlas(fn: () => Promise<void>): Promise<void> {
  lib!.symbols.nt_enable_blas(0);
  try {
    await fn();
  } finally {
    lib!.symbols.nt_enable_blas(1);
  }
}

describe.skipIf(!native)('native matmul', () => {
  const cases: { m: number; n: number; k: number; batch?: number[]; aType?: DType; bType?: DType; bias?: DType }[] = [
    { m: 1, n: 37, k: 29 },
    { m: 3, n: 45, k: 67, bType: 'bf16' },
    { m: 7, n: 16, k: 16, bias: 'f32' },
    { m: 9, n: 33, k: 17, bType: 'bf16', bias: 'bf16' },
    { m: 37, n: 45, k: 29 },
    { m: 65, n: 129, k: 300, bType: 'bf16', aType: 'bf16' },
    { m: 101, n: 70, k: 513, bias: 'f32' },
    { m: 5, n: 11, k: 13, batch: [3] },
    { m: 40, n: 27, k: 70, bType: 'bf16', bias: 'f32' },
    // bf16 weights widened for the BLAS a column block at a time (2¹⁸ floats: 97 columns of k = 2700).
    { m: 33, n: 100, k: 2700, bType: 'bf16' },
  ];
  for (const c of cases) {
    const tag = `${c.batch ? `[${c.batch}]×` : ''}${c.m}×${c.n}×${c.k} a ${c.aType ?? 'f32'} w ${c.bType ?? 'f32'}${c.bias ? ` bias ${c.bias}` : ''}`;
    const batch = c.batch ?? [];
    const operands = (d: Device) => ({
      x: onDevice(randomData([...batch, c.m, c.k], 1, { dtype: c.aType }), [...batch, c.m, c.k], d, c.aType ?? 'f32'),
      w: onDevice(randomData([c.n, c.k], 2, { dtype: c.bType }), [c.n, c.k], d, c.bType ?? 'f32'),
      bias: c.bias ? onDevice(randomData([c.n], 3, { dtype: c.bias }), [c.n], d, c.bias) : undefined,
    });
    const rtol = 3e-6 * Math.sqrt(c.k) + 1e-6;
    const both = async (run: (d: Device) => Tensor) => {
      await same(`${tag} (BLAS if loaded)`, run, rtol);
      await withoutBlas(() => same(`${tag} (own kernels)`, run, rtol));
    };
    test(`linear ${tag}`, () =>
      both((d) => {
        const { x, w, bias } = operands(d);
        return linear(x, w, bias);
      }));
    test(`matmul ${tag}, both transposed`, () =>
      both((d) => {
        const { x, w } = operands(d);
        return matmul(transpose(x, -1, -2), w, { transA: true, transB: true });
      }));
  }

  test('strided and broadcast views: sliced rows, a 2-D b shared by a batch, gradient shapes', async () => {
    await withoutBlas(() =>
      same(
        'sliced f32',
        (d) => matmul(narrow(onDevice(randomData([4, 23, 50], 5), [4, 23, 50], d), 2, 7, 41), narrow(onDevice(randomData([41, 31], 6), [41, 31], d), 1, 3, 19)),
        3e-5,
      ),
    );
    await same(
      'sliced f32, BLAS if loaded',
      (d) => matmul(narrow(onDevice(randomData([4, 23, 50], 5), [4, 23, 50], d), 2, 7, 41), narrow(onDevice(randomData([41, 31], 6), [41, 31], d), 1, 3, 19)),
      3e-5,
    );
    await same(
      'sliced',
      (d) => {
        const a = onDevice(randomData([4, 23, 50], 5), [4, 23, 50], d);
        const b = onDevice(randomData([41, 31], 6, { dtype: 'bf16' }), [41, 31], d, 'bf16');
        return matmul(narrow(a, 2, 7, 41), narrow(b, 1, 3, 19));
      },
      3e-5,
    );
    const bf16Rows = (d: Device) =>
      matmul(onDevice(randomData([40, 70], 9), [40, 70], d), onDevice(randomData([70, 27], 10, { dtype: 'bf16' }), [70, 27], d, 'bf16'));
    await same('f32 · bf16 [k, n] with many rows (widened for the BLAS if loaded)', bf16Rows, 3e-5);
    await withoutBlas(() => same('f32 · bf16 [k, n] with many rows, own kernels', bf16Rows, 3e-5));
    await same(
      'f32 · bf16 [k, n] in several widened column blocks',
      (d) => matmul(onDevice(randomData([33, 2700], 19), [33, 2700], d), onDevice(randomData([2700, 100], 20, { dtype: 'bf16' }), [2700, 100], d, 'bf16')),
      3e-4,
    );
    const gradLayout = (d: Device) => matmul(onDevice(randomData([70, 19], 7), [70, 19], d), onDevice(randomData([70, 33], 8), [70, 33], d), { transA: true });
    await same('transA (weight gradient layout)', gradLayout, 3e-5);
    await withoutBlas(() => same('transA (weight gradient layout), own kernels', gradLayout, 3e-5));
  });
});

describe.skipIf(!native)('native elementwise', () => {
  const x = (d: Device, dtype: DType = 'f32') => onDevice(randomData([13, 37], 11, { dtype, scale: 2 }), [13, 37], d, dtype);
  const positive = (d: Device) => onDevice(randomData([13, 37], 12, { positive: true }), [13, 37], d);
  for (const op of Object.keys(UNARY) as UnaryOp[]) {
    const domain = ['log', 'sqrt', 'rsqrt', 'reciprocal'].includes(op);
    test(`unary ${op} (and its gradient), f32 and bf16 input`, async () => {
      await same(op, (d) => unary(op, domain ? positive(d) : x(d), -0.5, 0.75), 2e-6);
      await same(`${op} bf16`, (d) => unary(op, domain ? positive(d) : x(d, 'bf16'), -0.5, 0.75), 2e-6);
      if (UNARY_GRAD[op]) await same(`${op} grad`, (d) => unaryGrad(op, domain ? positive(d) : x(d), x(d, 'bf16'), -0.5, 0.75), 2e-6);
    });
  }
  test('dense f32 fast paths (vector loops and tails) keep NaN, ±inf and −0 as the reference does', async () => {
    const special = (d: Device, seed: number) => {
      const v = randomData([3, 37], seed, { scale: 2 });
      v.set([Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -0, 0, 1e-30, -1e-30], 3);
      v.set([Number.NaN, -0, Number.NEGATIVE_INFINITY], 70);
      return onDevice(v, [3, 37], d);
    };
    for (const op of ['neg', 'square', 'relu', 'relu2'] as const) {
      await same(`dense ${op}`, (d) => unary(op, special(d, 18)), 0);
      await same(`dense ${op} grad`, (d) => unaryGrad(op, special(d, 18), special(d, 19)), 0);
    }
    await same('dense div', (d) => binary('div', special(d, 18), special(d, 19)), 0);
  });
  test('vector unary ops (exp, SiLU, ReLU, relu²) at the edges of the f32 range: NaN, ±inf, overflow, underflow', async () => {
    const v = randomData([3, 41], 18, { scale: 30 });
    v.set([NaN, Infinity, -Infinity, 88.5, 88.8, -87.2, -87.5, -100, 100, 0, -0, 1e-30, -1e-30, 20.5, -20.5, 0.5], 0);
    for (const op of ['exp', 'silu', 'relu', 'relu2'] as const) await same(`${op} edges`, (d) => unary(op, onDevice(v, [3, 41], d)), 2e-6);
  });
  test('copies: contiguous of a transposed bf16 view, copyInto a strided f32 destination', async () => {
    await same('contiguous', (d) => contiguous(transpose(x(d, 'bf16'), 0, 1)), 0);
    await same(
      'cast to bf16 (round to nearest even, NaN and ±inf kept)',
      (d) => {
        const v = randomData([13, 37], 17);
        v.set([NaN, Infinity, -Infinity, 3.4e38, 1 + 2 ** -8, 1 + 3 * 2 ** -8], 0);
        return cast(transpose(onDevice(v, [13, 37], d), 0, 1), 'bf16');
      },
      0,
    );
    await same(
      'copyInto',
      (d) => {
        const dst = empty([11, 15], { device: d });
        copyInto(narrow(dst, 1, 2, 13), transpose(narrow(x(d), 1, 4, 11), 0, 1));
        copyInto(narrow(dst, 1, 0, 2), onDevice(Float32Array.of(1, 2), [2], d));
        return dst;
      },
      0,
    );
  });
  for (const op of Object.keys(BINARY) as BinaryOp[]) {
    test(`binary ${op}: broadcast row, transposed bf16 operand, scalar`, async () => {
      const row = (d: Device) => onDevice(randomData([37], 13), [37], d);
      const tr = (d: Device) => transpose(onDevice(randomData([37, 13], 14, { dtype: 'bf16' }), [37, 13], d, 'bf16'), 0, 1);
      await same(op, (d) => binary(op, x(d), row(d)), 2e-6);
      await same(`${op} transposed`, (d) => binary(op, tr(d), x(d)), 2e-6);
      await same(`${op} scalar`, (d) => binary(op, 1.5, x(d)), 2e-6);
      await same(`${op} batched`, (d) => binary(op, onDevice(randomData([3, 1, 5], 15), [3, 1, 5], d), onDevice(randomData([4, 5], 16), [4, 5], d)), 2e-6);
    });
  }
});

describe.skipIf(!native)('native Mamba2 scan, state update and norms', () => {
  // Odd sizes: 3 heads in 1 group... 6 heads in 3 groups, head dim 5, state dim 19 (not a vector multiple).
  const [b, l, h, p, g, n] = [2, 23, 6, 5, 3, 19];
  const ops = (d: Device, dtype: DType = 'f32') => ({
    x: onDevice(randomData([b, l, h, p], 21), [b, l, h, p], d),
    dt: onDevice(randomData([b, l, h], 22, { positive: true, scale: 0.3 }), [b, l, h], d),
    A: onDevice(
      randomData([h], 23, { dtype }).map((v) => -Math.abs(v) - 0.1),
      [h],
      d,
      dtype,
    ),
    B: onDevice(randomData([b, l, g, n], 24), [b, l, g, n], d),
    C: onDevice(randomData([b, l, g, n], 25), [b, l, g, n], d),
    D: onDevice(randomData([h], 26, { dtype }), [h], d, dtype),
    init: onDevice(randomData([b, h, p, n], 27), [b, h, p, n], d),
    seq: tensor(
      Int32Array.from({ length: b * l }, (_, i) => (i % l < 9 ? 0 : i % l < 17 ? 1 : 2)),
      [b, l],
      { device: d },
    ),
  });
  for (const dtype of ['f32', 'bf16'] as const) {
    test(`ssdScan: y and final state, with D, initial state and packed documents (A, D ${dtype})`, async () => {
      for (const packed of [false, true]) {
        const run = (d: Device) => {
          const o = ops(d, dtype);
          return ssdScan(o.x, o.dt, o.A, o.B, o.C, { chunkSize: 8, D: o.D, initialState: o.init, seqIdx: packed ? o.seq : null });
        };
        await same(`y packed=${packed}`, (d) => run(d).y, 1e-5);
        await same(`final state packed=${packed}`, (d) => run(d).finalState, 1e-5);
      }
    });
    test(`selectiveStateUpdate: dt bias, softplus, limit, A_log (A, D ${dtype})`, async () => {
      const step = (d: Device) => {
        const o = ops(d, dtype);
        const state = onDevice(randomData([b, h, p, n], 31), [b, h, p, n], d);
        const x = onDevice(randomData([b, h, p], 32), [b, h, p], d);
        const dt = onDevice(randomData([b, h], 33), [b, h], d);
        const B = onDevice(randomData([b, g, n], 34), [b, g, n], d);
        const C = onDevice(randomData([b, g, n], 35), [b, g, n], d);
        const bias = onDevice(randomData([h], 36, { dtype }), [h], d, dtype);
        const y = selectiveStateUpdate(state, x, dt, o.A, B, C, o.D, { dtBias: bias, dtSoftplus: true, dtLimit: [0.01, 0.9], aIsLog: true });
        return { y, state };
      };
      await same('y', (d) => step(d).y, 1e-5);
      await same('state', (d) => step(d).state, 1e-5);
    });
  }
  test('ssdScan backward: every input gradient, with D, initial state and packed documents', async () => {
    for (const packed of [false, true]) await expectScanBackwardMatches([b, l, h, p, g, n], 21, packed ? [9, l - 9] : null, 8, `ssdScan packed=${packed}`);
  });
  test('ssdScan backward over several recomputed chunks, threaded, documents crossing chunk starts', async () => {
    // 75 positions: chunks of 32 with a partial last one; state dim 67 has a vector tail; enough work for threads.
    await expectScanBackwardMatches([1, 75, 8, 8, 2, 67], 41, [31, 33, 11], 16, 'ssdScan chunks');
  });
  test('ssdScan backward with one group split across threads, documents starting on a chunk start', async () => {
    // One group of 4 heads in one row on 2 threads: the heads are split in two slices summed into dB and dC;
    // 70 positions are chunks of 32, 32 and 6; documents start at 32 (a chunk start) and 45.
    await expectScanBackwardMatches([1, 70, 4, 16, 1, 67], 51, [32, 13, 25], 16, 'ssdScan one group');
  });
  test('rmsNorm and groupedGatedRmsNorm backward', async () => {
    await expectBackwardMatches(
      native!,
      (x, w) => rmsNorm(x!, w!, 1e-5),
      [
        { values: randomData([9, 45], 46), shape: [9, 45] },
        { values: randomData([45], 47), shape: [45] },
      ],
      { rtol: 2e-5, what: 'rmsNorm' },
    );
    await expectBackwardMatches(
      native!,
      (y, z, w) => groupedGatedRmsNorm(y!, z!, w!, { groups: 3, eps: 1e-6 }),
      [
        { values: randomData([2, 5, 42], 48), shape: [2, 5, 42] },
        { values: randomData([2, 5, 42], 49), shape: [2, 5, 42] },
        { values: randomData([42], 50), shape: [42] },
      ],
      { rtol: 2e-5, what: 'groupedGatedRmsNorm' },
    );
  });
  test('rmsNorm and groupedGatedRmsNorm on odd rows, bf16 weight and input', async () => {
    await same(
      'rmsNorm',
      (d) => rmsNorm(onDevice(randomData([7, 45], 41), [7, 45], d), onDevice(randomData([45], 42, { dtype: 'bf16' }), [45], d, 'bf16'), 1e-5),
      1e-5,
    );
    await same(
      'rmsNorm bf16 x',
      (d) => rmsNorm(onDevice(randomData([3, 2, 45], 41, { dtype: 'bf16' }), [3, 2, 45], d, 'bf16'), onDevice(randomData([45], 42), [45], d), 1e-5),
      1e-5,
    );
    await same(
      'gated',
      (d) =>
        groupedGatedRmsNorm(
          onDevice(randomData([2, 5, 42], 43), [2, 5, 42], d),
          onDevice(randomData([2, 5, 42], 44), [2, 5, 42], d),
          onDevice(randomData([42], 45), [42], d),
          { groups: 3, eps: 1e-6 },
        ),
      1e-5,
    );
  });
});

describe.skipIf(!native)('native causal conv1d', () => {
  test('prefill over more channels than one block (133: a full block and a ragged one), packed documents', async () => {
    const [b, l, c, k] = [2, 9, 133, 4];
    const run = (d: Device) =>
      causalConv1d(onDevice(randomData([b, l, c], 57), [b, l, c], d), onDevice(randomData([c, k], 58, { dtype: 'bf16' }), [c, k], d, 'bf16'), null, {
        initialState: onDevice(randomData([b, c, k], 59), [b, c, k], d),
        seqIdx: tensor(
          Int32Array.from({ length: b * l }, (_, i) => (i % l < 3 ? 0 : 1)),
          [b, l],
          { device: d },
        ),
      });
    await same('y', (d) => run(d).y, 1e-6);
    await same('final state', (d) => run(d).finalState, 1e-6);
  });
  const [b, l, c, k] = [2, 13, 11, 4];
  for (const dtype of ['f32', 'bf16'] as const) {
    test(`prefill with bias, initial state and packed documents; decode update (weights ${dtype})`, async () => {
      const seq = (d: Device) =>
        tensor(
          Int32Array.from({ length: b * l }, (_, i) => (i % l < 2 ? 0 : i % l < 7 ? 1 : 2)),
          [b, l],
          { device: d },
        );
      const run = (d: Device, packed: boolean) =>
        causalConv1d(
          onDevice(randomData([b, l, c], 51), [b, l, c], d),
          onDevice(randomData([c, k], 52, { dtype }), [c, k], d, dtype),
          onDevice(randomData([c], 53, { dtype }), [c], d, dtype),
          {
            initialState: onDevice(randomData([b, c, k], 54), [b, c, k], d),
            seqIdx: packed ? seq(d) : undefined,
          },
        );
      for (const packed of [false, true]) {
        await same(`y packed=${packed}`, (d) => run(d, packed).y, 1e-6);
        await same(`final state packed=${packed}`, (d) => run(d, packed).finalState, 1e-6);
      }
      const step = (d: Device) => {
        const state = onDevice(randomData([b, c, k], 55), [b, c, k], d);
        const y = causalConv1dUpdate(state, onDevice(randomData([b, c], 56), [b, c], d), onDevice(randomData([c, k], 52, { dtype }), [c, k], d, dtype), null);
        return { y, state };
      };
      await same('update y', (d) => step(d).y, 1e-6);
      await same('update state', (d) => step(d).state, 1e-6);
    });
    test(`backward: x, weight, bias and initial state gradients, packed documents (weights ${dtype})`, async () => {
      for (const packed of [false, true]) {
        await expectBackwardMatches(
          native!,
          (x, w, bias, init) => {
            const seqIdx = packed
              ? tensor(
                  Int32Array.from({ length: b * l }, (_, i) => (i % l < 2 ? 0 : i % l < 7 ? 1 : 2)),
                  [b, l],
                  { device: x!.device },
                )
              : undefined;
            return causalConv1d(x!, dtype === 'bf16' ? cast(w!, 'bf16') : w!, bias!, { initialState: init, seqIdx }).y;
          },
          [
            { values: randomData([b, l, c], 51), shape: [b, l, c] },
            { values: randomData([c, k], 52, { dtype }), shape: [c, k] },
            { values: randomData([c], 53), shape: [c] },
            { values: randomData([b, c, k], 54), shape: [b, c, k] },
          ],
          { rtol: 2e-6, what: `conv packed=${packed}` },
        );
      }
    });
  }
  test('forward and backward over channel blocks with vector tails, threaded; with and without SiLU and initial state', async () => {
    // 300 channels: forward blocks of 256 and 44, backward blocks of 64 with a tail of 44; 450 positions × 300 × 4 taps is threaded work.
    const [bb, ll, cc, kk] = [1, 450, 300, 4];
    await same(
      'final state over channel blocks',
      (d) =>
        causalConv1d(onDevice(randomData([bb, ll, cc], 65), [bb, ll, cc], d), onDevice(randomData([cc, kk], 66), [cc, kk], d), null, {
          initialState: onDevice(randomData([bb, cc, kk], 67), [bb, cc, kk], d),
          seqIdx: tensor(
            Int32Array.from({ length: bb * ll }, (_, i) => (i < 448 ? 0 : 1)),
            [bb, ll],
            { device: d },
          ),
        }).finalState,
      0,
    );
    for (const [activation, withInit] of [
      ['silu', true],
      [null, false],
    ] as const) {
      await expectBackwardMatches(
        native!,
        (x, w, bias, init) => {
          const seqIdx = tensor(
            Int32Array.from({ length: bb * ll }, (_, i) => (i < 200 ? 0 : 1)),
            [bb, ll],
            { device: x!.device },
          );
          return causalConv1d(x!, w!, bias!, { initialState: withInit ? init : undefined, seqIdx, activation }).y;
        },
        [
          { values: randomData([bb, ll, cc], 61), shape: [bb, ll, cc] },
          { values: randomData([cc, kk], 62), shape: [cc, kk] },
          { values: randomData([cc], 63), shape: [cc] },
          { values: randomData([bb, cc, kk], 64), shape: [bb, cc, kk] },
        ],
        { rtol: 2e-6, what: `conv ${activation} init=${withInit}` },
      );
    }
  });
});

describe.skipIf(!native)('native attention', () => {
  const [b, lq, lk, hq, hkv, dh] = [2, 7, 7, 6, 2, 19];
  const qkv = (d: Device, dtype: DType, keys = lk, queries = lq) => ({
    q: onDevice(randomData([b, queries, hq, dh], 61), [b, queries, hq, dh], d),
    k: onDevice(randomData([b, keys, hkv, dh], 62, { dtype }), [b, keys, hkv, dh], d, dtype),
    v: onDevice(randomData([b, keys, hkv, dh + 2], 63, { dtype }), [b, keys, hkv, dh + 2], d, dtype),
  });
  const both = async (what: string, run: (d: Device) => ReturnType<typeof attentionWithStats>) => {
    await same(`${what} out`, (d) => run(d).out, 1e-5);
    await same(`${what} lse`, (d) => run(d).lse, 1e-5);
  };
  for (const dtype of ['f32', 'bf16'] as const) {
    test(`prefill: GQA causal, padding mask, packed documents (k, v ${dtype})`, async () => {
      await both('causal', (d) => {
        const { q, k, v } = qkv(d, dtype);
        return attentionWithStats(q, k, v);
      });
      await both('padded', (d) => {
        const { q, k, v } = qkv(d, dtype);
        const mask = tensor(
          Int32Array.from({ length: b * lk }, (_, i) => (i < 2 || i === lk + 3 ? 0 : 1)),
          [b, lk],
          { device: d },
        );
        return attentionWithStats(q, k, v, { keyMask: mask });
      });
      await both('packed', (d) => {
        const { q, k, v } = qkv(d, dtype);
        const ids = tensor(
          Int32Array.from({ length: b * lk }, (_, i) => (i % lk < 3 ? 0 : 1)),
          [b, lk],
          { device: d },
        );
        return attentionWithStats(q, k, v, { seqIds: ids, causal: true });
      });
      await both('non-causal transposed q', (d) => {
        const { k, v } = qkv(d, dtype);
        const q = transpose(onDevice(randomData([b, hq, lq, dh], 64), [b, hq, lq, dh], d), 1, 2);
        return attentionWithStats(q, k, v, { causal: false });
      });
    });
    test(`prefill with many queries and vector-wide values (the vector path): causal, padded, packed, continuing a cache (k, v ${dtype})`, async () => {
      const [queries, keys] = [37, 37];
      const wide = (d: Device, n = queries, m = keys, vd = 32) => ({
        q: onDevice(randomData([b, n, hq, dh], 65), [b, n, hq, dh], d),
        k: onDevice(randomData([b, m, hkv, dh], 66, { dtype }), [b, m, hkv, dh], d, dtype),
        v: onDevice(randomData([b, m, hkv, vd], 67, { dtype }), [b, m, hkv, vd], d, dtype),
      });
      const ids = (d: Device, f: (i: number) => number) =>
        tensor(
          Int32Array.from({ length: b * keys }, (_, i) => f(i)),
          [b, keys],
          { device: d },
        );
      // 16, 32, 64 values: 2, 4, 8 vectors of AVX2 (1, 2, 4 of AVX-512), each accumulator count the kernel has.
      for (const vd of [16, 32, 64])
        await both(`wide causal, ${vd} values`, (d) => {
          const { q, k, v } = wide(d, queries, keys, vd);
          return attentionWithStats(q, k, v);
        });
      await both('wide padded (rows with no visible key)', (d) => {
        const { q, k, v } = wide(d);
        return attentionWithStats(q, k, v, { keyMask: ids(d, (i) => (i % keys < 3 || i === keys + 20 ? 0 : 1)) });
      });
      await both('wide packed', (d) => {
        const { q, k, v } = wide(d);
        return attentionWithStats(q, k, v, { seqIds: ids(d, (i) => (i % keys < 11 ? 0 : i % keys < 30 ? 1 : 2)) });
      });
      await both('wide non-causal', (d) => {
        const { q, k, v } = wide(d);
        return attentionWithStats(q, k, v, { causal: false });
      });
      await both('wide continuing a cache', (d) => {
        const { q, k, v } = wide(d, 12, 40);
        return attentionWithStats(q, k, v, { kvLength: 33 });
      });
    });
    test(`prefill heads taken in blocks per kv head: 1, 4 and 5 heads per kv head, even and odd value vectors, padded rows (k, v ${dtype})`, async () => {
      const [queries, keys] = [37, 37];
      // 8 values: one AVX2 vector (odd: each head on its own); 48: six (pairs shared by the block).
      for (const [heads, kvHeads] of [
        [3, 3],
        [8, 2],
        [5, 1],
      ] as const) {
        for (const vd of [8, 48]) {
          const operands = (d: Device) => ({
            q: onDevice(randomData([b, queries, heads, dh], 68), [b, queries, heads, dh], d),
            k: onDevice(randomData([b, keys, kvHeads, dh], 69, { dtype }), [b, keys, kvHeads, dh], d, dtype),
            v: onDevice(randomData([b, keys, kvHeads, vd], 70, { dtype }), [b, keys, kvHeads, vd], d, dtype),
          });
          await both(`${heads}/${kvHeads} heads, ${vd} values, causal`, (d) => {
            const { q, k, v } = operands(d);
            return attentionWithStats(q, k, v);
          });
          await both(`${heads}/${kvHeads} heads, ${vd} values, padded`, (d) => {
            const { q, k, v } = operands(d);
            const mask = tensor(
              Int32Array.from({ length: b * keys }, (_, i) => (i % keys < 4 || i === keys + 20 ? 0 : 1)),
              [b, keys],
              { device: d },
            );
            return attentionWithStats(q, k, v, { keyMask: mask });
          });
        }
      }
    });
    test(`backward: GQA causal with padding, and packed documents (k, v ${dtype})`, async () => {
      for (const variant of ['padded', 'packed'] as const) {
        await expectBackwardMatches(
          native!,
          (q, k, v) => {
            const d = q!.device;
            const ids = tensor(
              Int32Array.from({ length: b * lk }, (_, i) => (variant === 'packed' ? (i % lk < 3 ? 0 : 1) : i < 2 ? 0 : 1)),
              [b, lk],
              { device: d },
            );
            const [kk, vv] = dtype === 'bf16' ? [cast(k!, 'bf16'), cast(v!, 'bf16')] : [k!, v!];
            return attention(q!, kk, vv, variant === 'packed' ? { seqIds: ids } : { keyMask: ids });
          },
          [
            { values: randomData([b, lq, hq, dh], 61), shape: [b, lq, hq, dh] },
            { values: randomData([b, lk, hkv, dh], 62, { dtype }), shape: [b, lk, hkv, dh] },
            { values: randomData([b, lk, hkv, dh + 2], 63, { dtype }), shape: [b, lk, hkv, dh + 2] },
          ],
          { rtol: 2e-5, what: `attention ${variant}` },
        );
      }
    });
    test(`decode over a cache: one query, kvLength on the host and as a tensor (k, v ${dtype})`, async () => {
      await both('host length', (d) => {
        const { q, k, v } = qkv(d, dtype, 23, 1);
        return attentionWithStats(q, k, v, { kvLength: 17 });
      });
      await both('device length', (d) => {
        const { q, k, v } = qkv(d, dtype, 23, 1);
        return attentionWithStats(q, k, v, { kvLength: tensor(Int32Array.of(13), [1], { device: d }) });
      });
    });
  }
  test('backward threaded: 2 kv-head tasks, 45 causal positions, head dim 40 (vector loops and tails)', async () => {
    const [bb, ll, hqq, hkk, dd] = [1, 45, 4, 2, 40];
    await expectBackwardMatches(
      native!,
      (q, k, v) => attention(q!, k!, v!, { causal: true }),
      [
        { values: randomData([bb, ll, hqq, dd], 71), shape: [bb, ll, hqq, dd] },
        { values: randomData([bb, ll, hkk, dd], 72), shape: [bb, ll, hkk, dd] },
        { values: randomData([bb, ll, hkk, dd + 3], 73), shape: [bb, ll, hkk, dd + 3] },
      ],
      { rtol: 2e-5, what: 'attention threaded' },
    );
  });
  test('backward tiles: 150 positions (blocks of 32 queries and 64 keys with tails), causal, packed, padded, a query offset', async () => {
    const [bb, ll, hqq, hkk, dd] = [2, 150, 4, 2, 20];
    const inputs = (lq: number) => [
      { values: randomData([bb, lq, hqq, dd], 81), shape: [bb, lq, hqq, dd] },
      { values: randomData([bb, ll, hkk, dd], 82), shape: [bb, ll, hkk, dd] },
      { values: randomData([bb, ll, hkk, dd + 3], 83), shape: [bb, ll, hkk, dd + 3] },
    ];
    for (const variant of ['packed', 'padded'] as const) {
      await expectBackwardMatches(
        native!,
        (q, k, v) => {
          // Documents start at 70 and 131; the second row pads its first 9 keys.
          const ids = tensor(
            Int32Array.from({ length: bb * ll }, (_, i) => (variant === 'packed' ? (i % ll < 70 ? 0 : i % ll < 131 ? 1 : 2) : i >= ll && i < ll + 9 ? 0 : 1)),
            [bb, ll],
            { device: q!.device },
          );
          return attention(q!, k!, v!, { causal: true, ...(variant === 'packed' ? { seqIds: ids } : { keyMask: ids }) });
        },
        inputs(ll),
        { rtol: 2e-5, what: `attention tiles ${variant}` },
      );
    }
    // 41 queries continuing 109 cached positions.
    await expectBackwardMatches(native!, (q, k, v) => attention(q!, k!, v!, { causal: true, queryOffset: ll - 41 }), inputs(41), {
      rtol: 2e-5,
      what: 'attention tiles offset',
    });
  });
});

describe.skipIf(!native)('native AdamW', () => {
  test('three steps with weight decay match the reference (threaded, vector tail)', async () => {
    const run = async (d: Device) => {
      // 131 × 129 = 16 899 elements: split across threads, 3 past the last whole vector.
      const p = onDevice(randomData([131, 129], 71), [131, 129], d).requiresGrad_();
      const opt = new AdamW([p], { lr: 0.01, weightDecay: 0.1 });
      for (let i = 0; i < 3; i++) {
        p.grad = onDevice(randomData([131, 129], 72 + i), [131, 129], d);
        opt.step();
      }
      return p.toFloat32();
    };
    expectClose(await run(native!), await run(cpu), { rtol: 1e-6, what: 'AdamW parameters' });
  });
});

test('device selection: NEMOTRON_DEVICE accepts native, rejects unknown names listing the choices; labels', () => {
  expect(deviceOptionsFromEnv({ NEMOTRON_DEVICE: 'native' }).kind).toBe('native');
  expect(() => deviceOptionsFromEnv({ NEMOTRON_DEVICE: 'nativ' })).toThrow(/webgpu, native, cpu, auto.*'nativ'/);
  expect(deviceLabel(cpu)).toBe('cpu');
  if (native) {
    expect(deviceLabel(native)).toBe('cpu:native');
    expect(native.describe()).toMatch(/^CPU native \(.*\d+ threads?/);
  }
});

describe.skipIf(!native)('native training kernels (each also tested in its op family)', () => {
  test('cross-entropy forward and backward, embedding gradient, gradient-norm clipping', async () => {
    const labels = (d: Device) =>
      tensor(
        Int32Array.from({ length: 9 }, (_, i) => (i === 4 ? -100 : (i * 7) % 37)),
        [9],
        { device: d },
      );
    await expectBackwardMatches(
      native!,
      (x) => crossEntropy(x!, labels(x!.device), { reduction: 'none' }),
      [{ values: randomData([9, 37], 81), shape: [9, 37] }],
      {
        rtol: 2e-5,
        what: 'crossEntropy',
      },
    );
    const ids = (d: Device) => tensor(Int32Array.from([3, 0, 3, 5, 3, 1]), [2, 3], { device: d });
    await expectBackwardMatches(native!, (t) => embedding(t!, ids(t!.device)), [{ values: randomData([7, 13], 82), shape: [7, 13] }], {
      rtol: 1e-6,
      what: 'embedding',
    });
    const clipped = async (d: Device) => {
      const p = tensor(new Float32Array(21), [3, 7], { device: d });
      p.grad = tensor(randomData([3, 7], 83, { scale: 3 }), [3, 7], { device: d });
      const norm = await clipGradNorm([p], 1).item();
      return { norm, grad: await p.grad.toFloat32() };
    };
    const [ref, got] = [await clipped(cpu), await clipped(native!)];
    expect(got.norm).toBeCloseTo(ref.norm, 4);
    expectClose(got.grad, ref.grad, { rtol: 1e-6, what: 'clipGradNorm' });
  });
});

test.skipIf(!native)('every op kernel was reached through its dispatch hook', () => {
  expect(calls.size).toBeGreaterThan(5);
  // The MoE kernels are tested (and their hooks counted) in ops/moe/moe-native.test.ts.
  for (const [name, count] of calls)
    if (
      !name.startsWith('nt_stream') &&
      name !== 'nt_fma_peak' &&
      // The whole-step decode kernel has its own test (ops/decode/native-decode.test.ts).
      !name.startsWith('nt_decode') &&
      !name.startsWith('nt_moe_') &&
      // Token choice is tested against the reference in ops/sampling/sampling.test.ts.
      name !== 'nt_sample_tokens' &&
      name.startsWith('nt_') &&
      !['nt_set_threads', 'nt_cpu_features', 'nt_compiled_features', 'nt_load_blas', 'nt_enable_blas'].includes(name)
    )
      expect(count, name).toBeGreaterThan(0);
});
