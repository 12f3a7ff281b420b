import { afterEach, describe, expect, test } from 'bun:test';
import { backward } from '../../autograd/backward';
import { noGrad } from '../../autograd/graph';
import { SGD } from '../../optim/sgd';
import { sumAll } from '../reduce/reduce';
import { getCpuDevice, type Device } from '../../device/device';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { tensor } from '../../creation';
import type { DType } from '../../dtype';
import type { Tensor } from '../../tensor';
import { expectClose, gradcheck, onDevice, poisoned, randomData, testGpu, withBindingLimit } from '../../testing';
import { copyInto, narrow, transpose } from '../layout/layout';
import { linear, matmul } from './matmul';
import { setKernelOverrides, type KernelOverrides } from '../../runtime/kernel-overrides';
import { textureMemoryStats } from '../../runtime/texture-pool';

const gpu = (await testGpu()) as WebGpuDevice | null;
const cpu = getCpuDevice();

afterEach(() => setKernelOverrides({}));

interface Case {
  name: string;
  a: number[];
  b: number[];
  transA?: boolean;
  transB?: boolean;
  bias?: DType;
  aType?: DType;
  bType?: DType;
}

function operands(c: Case, device: Device): { a: Tensor; b: Tensor; bias?: Tensor } {
  const a = onDevice(randomData(c.a, 1, { dtype: c.aType }), c.a, device, c.aType ?? 'f32');
  const b = onDevice(randomData(c.b, 2, { dtype: c.bType }), c.b, device, c.bType ?? 'f32');
  const n = c.transB ? c.b.at(-2)! : c.b.at(-1)!;
  const bias = c.bias ? onDevice(randomData([n], 3, { dtype: c.bias }), [n], device, c.bias) : undefined;
  return { a, b, bias };
}

async function compare(c: Case, run: (d: Device) => Tensor): Promise<void> {
  const ref = run(cpu);
  const got = poisoned(gpu!, () => run(gpu!));
  expect(got.shape).toEqual(ref.shape);
  expect(got.dtype).toBe('f32');
  expectClose((await got.data()) as Float32Array, (await ref.data()) as Float32Array, { rtol: 2e-6 * Math.sqrt(c.a.at(-1)!) + 1e-6, what: c.name });
}

const matmulOf = (c: Case) => (d: Device) => {
  const { a, b, bias } = operands(c, d);
  return matmul(a, b, { transA: c.transA, transB: c.transB, bias });
};

/**
 * Shapes for the tiled and texture kernels: odd sizes straddling 16/32/64 tile edges and the K
 * steps of 4 and 8; N a multiple of 4 or not (the vec4-store texture tile writes padded rows then).
 */
const GEMM_CASES: Case[] = [
  { name: 'odd 37×45×29', a: [37, 29], b: [29, 45] },
  { name: 'tile edges 65×33×17', a: [65, 17], b: [17, 33] },
  { name: 'K a multiple of 4, not of 8; N a multiple of 4', a: [21, 36], b: [36, 44], bias: 'f32' },
  { name: 'bf16 weight, K a multiple of 8, N a multiple of 4', a: [23, 48], b: [52, 48], transB: true, bType: 'bf16', bias: 'bf16' },
  { name: 'batched, N a multiple of 4', a: [3, 19, 24], b: [3, 24, 40] },
  { name: 'narrow N=16: bf16 weight with bias (the Mamba dt projection)', a: [45, 40], b: [16, 40], transB: true, bType: 'bf16', bias: 'f32' },
  { name: 'narrow N=3, batched B', a: [2, 37, 24], b: [2, 24, 3] },
  { name: 'narrow N=32, f32 weight', a: [70, 33], b: [32, 33], transB: true },
  { name: 'transA', a: [29, 37], b: [29, 45], transA: true },
  { name: 'transB', a: [37, 29], b: [45, 29], transB: true },
  { name: 'transA transB', a: [29, 37], b: [45, 29], transA: true, transB: true },
  { name: 'bf16 A and B, f32 bias', a: [37, 29], b: [45, 29], transB: true, aType: 'bf16', bType: 'bf16', bias: 'f32' },
  { name: 'bf16 B [K, N] with bf16 bias', a: [19, 64], b: [64, 40], bType: 'bf16', bias: 'bf16' },
  { name: 'batched', a: [3, 19, 13], b: [3, 13, 21] },
  { name: 'batch broadcast: 2-D B', a: [2, 3, 7, 13], b: [13, 21], bias: 'f32' },
  { name: 'batch broadcast: 2-D A', a: [7, 13], b: [4, 13, 21] },
  { name: 'batch broadcast both ways', a: [2, 1, 7, 13], b: [1, 3, 13, 21] },
  { name: 'K = 1', a: [17, 1], b: [1, 9] },
  { name: 'weight [N, K] over two workgroup strips', a: [19, 40], b: [300, 40], transB: true },
];

/** Decode shapes for the GEMV kernels (and each decode tile of the texture kernel: 1, 2, 4, 8 rows × f32, bf16). */
const GEMV_CASES: Case[] = [
  { name: 'M=1 bf16 weight [N, K]', a: [1, 29], b: [45, 29], transB: true, bType: 'bf16' },
  { name: 'M=1 f32 B [K, N]', a: [1, 29], b: [29, 45] },
  { name: 'M=2 batched', a: [3, 2, 29], b: [3, 29, 45] },
  { name: 'M=2 bf16', a: [2, 64], b: [64, 33], bType: 'bf16' },
  { name: 'M=3 B [K, N]', a: [3, 29], b: [29, 45] },
  { name: 'M=4 bf16 weight, bf16 bias', a: [4, 30], b: [50, 30], transB: true, bType: 'bf16', bias: 'bf16' },
  { name: 'M=8 bias', a: [8, 64], b: [100, 64], transB: true, bias: 'f32' },
  { name: 'M=5 transA', a: [29, 5], b: [29, 45], transA: true, bType: 'bf16' },
];

const PATHS: [string, NonNullable<KernelOverrides['matmul']>, Case[]][] = [
  ['tiled (hardware shapes)', { path: 'tiled', software: false }, GEMM_CASES],
  ['gemv (hardware shapes)', { path: 'gemv', software: false }, GEMV_CASES],
  ['gemv (software shapes)', { path: 'gemv', software: true }, GEMV_CASES],
  ['texture', { path: 'texture' }, [...GEMM_CASES, ...GEMV_CASES]],
  ['texture, sampled reads (devices without storage-texture reads)', { path: 'texture', storageReads: false }, GEMM_CASES],
];

/** The first use of a large-tile texture shader compiles it (seconds on llvmpipe without Mesa's shader cache). */
const COMPILE_TIMEOUT = 60_000;

describe('matmul: WebGPU kernels vs CPU reference', () => {
  for (const [label, override, cases] of PATHS) {
    describe(label, () => {
      for (const c of cases) {
        test.if(gpu !== null)(
          c.name,
          async () => {
            setKernelOverrides({ matmul: override });
            await compare(c, matmulOf(c));
          },
          COMPILE_TIMEOUT,
        );
      }
    });
  }

  test.if(gpu !== null)(
    'automatic choice at decode and prefill shapes',
    async () => {
      for (const c of [
        ...GEMV_CASES,
        GEMM_CASES[0]!,
        { name: 'prefill-like 40×300×64 bf16', a: [40, 64], b: [300, 64], transB: true, bType: 'bf16' as const },
      ]) {
        await compare(c, matmulOf(c));
      }
    },
    COMPILE_TIMEOUT,
  );

  test.if(gpu !== null)(
    'strided views: transposes map to strides, offsets and gaps are honoured',
    async () => {
      const base = randomData([23, 40], 7);
      const other = randomData([40, 31], 8);
      for (const override of [{ path: 'tiled' as const }, { path: 'texture' as const }, { path: 'gemv' as const }]) {
        setKernelOverrides({ matmul: override });
        const run = (d: Device) => {
          const x = onDevice(base, [23, 40], d);
          const y = onDevice(other, [40, 31], d);
          // a = rows 3..10 of xᵀ columns 5..33 (offset, non-unit strides); b = columns 2..29 of y, transposed twice.
          const a = narrow(narrow(x, 0, 3, 8), 1, 5, 29);
          const b = transpose(transpose(narrow(narrow(y, 0, 6, 29), 1, 2, 27)));
          return matmul(a, b);
        };
        await compare({ name: `views ${override.path}`, a: [8, 29], b: [29, 27] }, run);
      }
    },
    COMPILE_TIMEOUT,
  );
});

test.if(gpu !== null)(
  'weights read transposed: aligned row pitch with a ragged K, both dtypes, batched',
  async () => {
    setKernelOverrides({ matmul: { path: 'texture' } });
    for (const dtype of ['f32', 'bf16'] as const) {
      const w = randomData([2, 37, 64], 30, { dtype });
      const x = randomData([2, 19, 61], 31);
      const run = (d: Device) => {
        // b = w[..., :61] read as [K=61, N=37]: rows 64 apart, K not a multiple of a texel.
        const b = narrow(onDevice(w, [2, 37, 64], d, dtype), 2, 0, 61);
        return matmul(onDevice(x, [2, 19, 61], d), b, { transB: true });
      };
      await compare({ name: `transposed ${dtype}`, a: [2, 19, 61], b: [2, 37, 61] }, run);
    }
  },
  COMPILE_TIMEOUT,
);

describe('linear', () => {
  test.if(gpu !== null)(
    'frozen bf16 weight: decode and prefill shapes, cached texture reused and released',
    async () => {
      const before = textureMemoryStats(gpu!).cachedWeights;
      const wValues = randomData([45, 29], 4, { dtype: 'bf16' });
      const weight = onDevice(wValues, [45, 29], gpu!, 'bf16');
      const weightCpu = onDevice(wValues, [45, 29], cpu, 'bf16');
      for (const m of [1, 3, 8, 37]) {
        const x = randomData([m, 29], m);
        const ref = await linear(onDevice(x, [m, 29], cpu), weightCpu).data();
        for (let rep = 0; rep < 2; rep++) {
          const got = await poisoned(gpu!, () => linear(onDevice(x, [m, 29], gpu!), weight)).data();
          expectClose(got as Float32Array, ref as Float32Array, { rtol: 2e-5, what: `linear M=${m} call ${rep}` });
        }
      }
      if (gpu!.tuning.textureOperands) expect(textureMemoryStats(gpu!).cachedWeights).toBe(before + 1);
      // Writing the weight in place drops the cached copy: the next call sees the new values.
      const w2 = randomData([45, 29], 9, { dtype: 'bf16' });
      copyInto(weight, onDevice(w2, [45, 29], gpu!, 'bf16'));
      const x = randomData([1, 29], 5);
      const got = await linear(onDevice(x, [1, 29], gpu!), weight).data();
      const ref = await linear(onDevice(x, [1, 29], cpu), onDevice(w2, [45, 29], cpu, 'bf16')).data();
      expectClose(got as Float32Array, ref as Float32Array, { rtol: 2e-5, what: 'after an in-place write' });
      weight.dispose();
      expect(textureMemoryStats(gpu!).cachedWeights).toBe(before);
    },
    COMPILE_TIMEOUT,
  );

  test.if(gpu !== null)(
    'a trainable f32 weight under noGrad reuses a cached copy that an optimizer step drops',
    async () => {
      const before = textureMemoryStats(gpu!).cachedWeights;
      const wValues = randomData([23, 41], 21);
      const weight = onDevice(wValues, [23, 41], gpu!).requiresGrad_();
      const x = randomData([1, 41], 22);
      const infer = async () => (await noGrad(() => linear(onDevice(x, [1, 41], gpu!), weight)).data()) as Float32Array;
      const ref = (await linear(onDevice(x, [1, 41], cpu), onDevice(wValues, [23, 41], cpu)).data()) as Float32Array;
      expectClose(await infer(), ref, { rtol: 2e-5, what: 'noGrad on a trainable weight' });
      if (gpu!.tuning.textureOperands) expect(textureMemoryStats(gpu!).cachedWeights).toBe(before + 1);
      // With grad recording on, the product must not read the cached copy (the weight may change).
      const step = new SGD([weight], { lr: 0.5 });
      const loss = sumAll(linear(onDevice(x, [1, 41], gpu!), weight));
      backward(loss);
      step.step();
      expect(textureMemoryStats(gpu!).cachedWeights).toBe(before);
      const updated = (await weight.data()) as Float32Array;
      const ref2 = (await linear(onDevice(x, [1, 41], cpu), onDevice(updated, [23, 41], cpu)).data()) as Float32Array;
      expectClose(await infer(), ref2, { rtol: 2e-5, what: 'noGrad after an optimizer step' });
      expect(Math.max(...ref2.map((v, i) => Math.abs(v - ref[i]!)))).toBeGreaterThan(1e-3);
      weight.dispose();
      loss.dispose();
      expect(textureMemoryStats(gpu!).cachedWeights).toBe(before);
    },
    COMPILE_TIMEOUT,
  );

  test.if(gpu !== null)(
    'a weight beyond the texture cache budget is not cached and still right',
    async () => {
      const saved = process.env.NEMOTRON_MATMUL_TEXTURE_CACHE_BYTES;
      process.env.NEMOTRON_MATMUL_TEXTURE_CACHE_BYTES = '0';
      try {
        const before = textureMemoryStats(gpu!).cachedWeights;
        const w = randomData([45, 29], 12, { dtype: 'bf16' });
        for (const m of [1, 20]) {
          const x = randomData([m, 29], 13);
          const ref = await linear(onDevice(x, [m, 29], cpu), onDevice(w, [45, 29], cpu, 'bf16')).data();
          const got = await poisoned(gpu!, () => linear(onDevice(x, [m, 29], gpu!), onDevice(w, [45, 29], gpu!, 'bf16'))).data();
          expectClose(got as Float32Array, ref as Float32Array, { rtol: 2e-5, what: `uncached M=${m}` });
        }
        expect(textureMemoryStats(gpu!).cachedWeights).toBe(before);
      } finally {
        if (saved === undefined) delete process.env.NEMOTRON_MATMUL_TEXTURE_CACHE_BYTES;
        else process.env.NEMOTRON_MATMUL_TEXTURE_CACHE_BYTES = saved;
      }
    },
    COMPILE_TIMEOUT,
  );

  test.if(gpu !== null)('3-D input, 1-D input and bias', async () => {
    const w = randomData([21, 13], 1);
    const bias = randomData([21], 2);
    for (const shape of [[2, 5, 13], [13]]) {
      const x = randomData(shape, 3);
      const run = (d: Device) => linear(onDevice(x, shape, d), onDevice(w, [21, 13], d), onDevice(bias, [21], d));
      const ref = run(cpu);
      const got = poisoned(gpu!, () => run(gpu!));
      expect(got.shape).toEqual([...shape.slice(0, -1), 21]);
      expectClose((await got.data()) as Float32Array, (await ref.data()) as Float32Array, { rtol: 1e-5 });
    }
  });
});

describe('operands larger than one storage binding', () => {
  // A small odd problem against a binding limit a few KiB wide: every path must split it.
  test.if(gpu !== null)(
    'split along N, M and K',
    async () => {
      await withBindingLimit(gpu!, 4096, async () => {
        const cases: Case[] = [
          { name: 'weight [N, K] bigger than a binding', a: [5, 37], b: [301, 37], transB: true, bias: 'f32' },
          { name: 'bf16 weight, decode', a: [1, 37], b: [301, 37], transB: true, bType: 'bf16' },
          { name: 'B [K, N] bigger than a binding', a: [19, 70], b: [70, 53] },
          { name: 'batched output bigger than a binding', a: [3, 41, 9], b: [3, 9, 33] },
          { name: 'strips of a wide weight packed a few at a time', a: [5, 3], b: [600, 3], transB: true, bType: 'bf16' },
          { name: 'narrow output bigger than a binding', a: [70, 9], b: [9, 20], bias: 'f32' },
        ];
        for (const path of ['tiled', 'gemv', 'texture'] as const) {
          setKernelOverrides({ matmul: { path } });
          for (const c of cases) await compare({ ...c, name: `${c.name} (${path})` }, matmulOf(c));
        }
        // The frozen-weight texture is packed in panels that each fit a binding.
        setKernelOverrides({});
        const w = randomData([301, 37], 6, { dtype: 'bf16' });
        const x = randomData([2, 37], 7);
        const ref = await linear(onDevice(x, [2, 37], cpu), onDevice(w, [301, 37], cpu, 'bf16')).data();
        const weight = onDevice(w, [301, 37], gpu!, 'bf16');
        const got = await poisoned(gpu!, () => linear(onDevice(x, [2, 37], gpu!), weight)).data();
        weight.dispose();
        expectClose(got as Float32Array, ref as Float32Array, { rtol: 2e-5, what: 'cached weight in panels' });
      });
    },
    COMPILE_TIMEOUT,
  );
});

describe('gradients', () => {
  const A = { values: randomData([4, 5], 11), shape: [4, 5] };
  const At = { values: randomData([5, 4], 12), shape: [5, 4] };
  const B = { values: randomData([5, 3], 13), shape: [5, 3] };
  const Bt = { values: randomData([3, 5], 14), shape: [3, 5] };
  const bias = { values: randomData([3], 15), shape: [3] };

  test('matmul: a, b and bias in every orientation', async () => {
    await gradcheck((a, b, c) => matmul(a!, b!, { bias: c }), [A, B, bias]);
    await gradcheck((a, b) => matmul(a!, b!, { transA: true }), [At, B]);
    await gradcheck((a, b) => matmul(a!, b!, { transB: true }), [A, Bt]);
    await gradcheck((a, b) => matmul(a!, b!, { transA: true, transB: true }), [At, Bt]);
  });

  test('matmul: batched and broadcast batch dimensions reduce to each operand', async () => {
    const a3 = { values: randomData([2, 4, 5], 16), shape: [2, 4, 5] };
    const b3 = { values: randomData([2, 5, 3], 17), shape: [2, 5, 3] };
    await gradcheck((a, b) => matmul(a!, b!), [a3, b3]);
    await gradcheck((a, b) => matmul(a!, b!), [a3, B]);
    await gradcheck((a, b) => matmul(a!, b!, { transB: true }), [a3, Bt]);
    await gradcheck((a, b) => matmul(a!, b!), [A, b3]);
    const a4 = { values: randomData([2, 1, 4, 5], 18), shape: [2, 1, 4, 5] };
    const b4 = { values: randomData([3, 5, 3], 19), shape: [3, 5, 3] };
    await gradcheck((a, b) => matmul(a!, b!), [a4, b4]);
  });

  test('linear: x, weight and bias', async () => {
    const x = { values: randomData([2, 3, 5], 20), shape: [2, 3, 5] };
    await gradcheck((a, w, c) => linear(a!, w!, c), [x, Bt, bias]);
    await gradcheck((a, w) => linear(a!, w!), [{ values: randomData([5], 21), shape: [5] }, Bt]);
  });

  test.if(gpu !== null)('backward on WebGPU matches the CPU backend', async () => {
    const x = randomData([2, 7, 13], 22);
    const w = randomData([9, 13], 23);
    const gOut = randomData([2, 7, 9], 24);
    const grads = async (d: Device) => {
      const xs = onDevice(x, [2, 7, 13], d).requiresGrad_();
      const ws = onDevice(w, [9, 13], d).requiresGrad_();
      backward(linear(xs, ws), { grad: onDevice(gOut, [2, 7, 9], d) });
      return [await xs.grad!.data(), await ws.grad!.data()] as Float32Array[];
    };
    const [ref, got] = [await grads(cpu), await grads(gpu!)];
    expectClose(got[0]!, ref[0]!, { rtol: 1e-5, what: 'dx' });
    expectClose(got[1]!, ref[1]!, { rtol: 1e-5, what: 'dW' });
  });
});

describe('bad input', () => {
  const t = (shape: number[], dtype: DType = 'f32') => tensor(new Float32Array(shape.reduce((n, d) => n * d, 1)), shape, { device: cpu, dtype });
  test('clear errors naming the op and shapes', () => {
    expect(() => matmul(t([3, 4]), t([5, 6]))).toThrow(/matmul: inner dimensions differ: a \[3, 4\] has K=4, b \[5, 6\] has K=5/);
    expect(() => matmul(t([3, 4]), t([6, 4]), { transB: false })).toThrow(/inner dimensions differ/);
    expect(() => matmul(t([4]), t([4, 2]))).toThrow(/matmul: a \[4\] must have at least 2 dimensions/);
    expect(() => matmul(t([2, 3, 4]), t([5, 4, 2]))).toThrow(/batch dimensions of a \[2, 3, 4\] and b \[5, 4, 2\] cannot be broadcast/);
    expect(() => matmul(t([3, 4]), t([4, 2]), { bias: t([3]) })).toThrow(/matmul: bias \[3\] must be \[2\]/);
    expect(() => matmul(t([3, 4], 'i32'), t([4, 2]))).toThrow(/matmul: a has dtype i32/);
    expect(() => linear(t([3, 4]), t([5, 3]))).toThrow(/linear: x \[3, 4\] must end in in_features=3 to match weight \[5, 3\]/);
    expect(() => linear(t([3, 4]), t([4]))).toThrow(/linear: weight \[4\] must be \[out, in\]/);
    const gone = t([2, 2]);
    gone.dispose();
    expect(() => matmul(gone, t([2, 2]))).toThrow(/used after dispose/);
  });

  test('empty dimensions', async () => {
    expect(matmul(t([0, 4]), t([4, 3])).shape).toEqual([0, 3]);
    const z = matmul(t([2, 0]), t([0, 3]), { bias: tensor([1, 2, 3], [3], { device: cpu }) });
    expect(Array.from(await z.data())).toEqual([1, 2, 3, 1, 2, 3]);
  });
});
