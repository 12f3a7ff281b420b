import { describe, expect, test } from 'bun:test';
import { backward } from '../../autograd/backward';
import { noGrad } from '../../autograd/graph';
import { tensor } from '../../creation';
import { getCpuDevice, type Device } from '../../device/device';
import type { WebGpuDevice } from '../../device/webgpu-device';
import type { DType } from '../../dtype';
import { expectClose, gradcheck, onDevice, poisoned, randomData, testGpu } from '../../testing';
import { narrow, reshape } from '../layout/layout';
import { attention, attentionWithStats, type AttentionOptions } from './attention';
import { withKernelOverrides } from '../../runtime/kernel-overrides';
import type { AttentionTuning } from './attention.wgsl';

const gpu = await testGpu();
const cpu = getCpuDevice();

/**
 * Both launch shapes: one row or key per invocation in wide groups, storage buffers only (real GPUs);
 * four per invocation in narrow groups, loop operands through textures where the device reads them.
 */
const TUNINGS: Record<string, Partial<AttentionTuning>> = {
  wide: { workgroupSize: 64, rowsPerLane: 1, kvTextures: false },
  narrow: { workgroupSize: 8, rowsPerLane: 4, kvTextures: true },
};

interface Case {
  batch: number;
  queries: number;
  keys: number;
  qHeads: number;
  kvHeads: number;
  headDim: number;
  valueDim: number;
}

const shapes = (c: Case) => ({
  q: [c.batch, c.queries, c.qHeads, c.headDim],
  k: [c.batch, c.keys, c.kvHeads, c.headDim],
  v: [c.batch, c.keys, c.kvHeads, c.valueDim],
});

/** Key masks for 2 rows of `n` keys: row 0 left-padded by 3, row 1 fully padded (no row of it sees a key). */
function paddingMask(n: number): Float32Array {
  return Float32Array.from({ length: 2 * n }, (_, i) => (i < n ? Number(i >= 3) : 0));
}

/** Document ids for 2 rows of `n` keys: row 0 packs documents of 4, 1 and n − 5 tokens, row 1 is one document. */
function packedIds(n: number): Int32Array {
  return Int32Array.from({ length: 2 * n }, (_, i) => (i >= n ? 7 : i < 4 ? 1 : i < 5 ? 2 : 3));
}

const small: Case = { batch: 2, queries: 11, keys: 11, qHeads: 6, kvHeads: 2, headDim: 5, valueDim: 5 };

describe('attention backward: gradcheck of the CPU reference', () => {
  const variants: [string, Case, (d: Device) => AttentionOptions][] = [
    ['causal', small, () => ({})],
    ['causal, left padding and a fully padded row', small, (d) => ({ keyMask: onDevice(paddingMask(11), [2, 11], d) })],
    ['causal, packed documents, scale 0.7', small, (d) => ({ seqIds: onDevice(packedIds(11), [2, 11], d), scale: 0.7 })],
    ['not causal, more keys than queries, Dv ≠ D', { ...small, queries: 4, keys: 9, valueDim: 3 }, () => ({ causal: false })],
  ];
  for (const [name, c, options] of variants) {
    test(name, async () => {
      const s = shapes(c);
      await gradcheck(
        (q, k, v) => attention(q!, k!, v!, options(cpu)),
        [
          { values: randomData(s.q, 1), shape: s.q },
          { values: randomData(s.k, 2), shape: s.k },
          { values: randomData(s.v, 3), shape: s.v },
        ],
      );
    });
  }

  test('fully padded rows give zero gradients, never NaN; masked keys get none', async () => {
    const s = shapes(small);
    const q = onDevice(randomData(s.q, 4), s.q, cpu).requiresGrad_();
    const k = onDevice(randomData(s.k, 5), s.k, cpu).requiresGrad_();
    const v = onDevice(randomData(s.v, 6), s.v, cpu).requiresGrad_();
    const out = attention(q, k, v, { keyMask: onDevice(paddingMask(11), [2, 11], cpu) });
    backward(out, { grad: onDevice(randomData(out.shape, 7), out.shape, cpu) });
    for (const t of [q, k, v]) {
      const grad = await t.grad!.toFloat32();
      const perPosition = grad.length / (2 * 11);
      // The gradient entries of positions [from, to) of batch row b.
      const positions = (b: number, from: number, to: number) => grad.slice((b * 11 + from) * perPosition, (b * 11 + to) * perPosition);
      expect(grad.every(Number.isFinite)).toBe(true);
      // Row 1 is fully padded; in row 0 the first 3 keys are masked (and queries 0..2 see nothing).
      expect(positions(1, 0, 11).every((x) => x === 0)).toBe(true);
      expect(positions(0, 0, 3).every((x) => x === 0)).toBe(true);
      expect(positions(0, 3, 11).some((x) => x !== 0)).toBe(true);
    }
  });
});

/** Forward and backward on `device` (everything it allocates poisoned); the output and the three gradients. */
async function forwardBackward(
  device: Device,
  c: Case,
  dtype: DType,
  seed: number,
  options: (d: Device) => AttentionOptions,
  tuning: Partial<AttentionTuning>,
) {
  const s = shapes(c);
  const q = onDevice(randomData(s.q, seed, { dtype }), s.q, device, dtype).requiresGrad_();
  const k = onDevice(randomData(s.k, seed + 1, { dtype }), s.k, device, dtype).requiresGrad_();
  const v = onDevice(randomData(s.v, seed + 2, { dtype }), s.v, device, dtype).requiresGrad_();
  const grad = onDevice(randomData(s.q.slice(0, 3).concat(c.valueDim), seed + 3), [c.batch, c.queries, c.qHeads, c.valueDim], device);
  const out = withKernelOverrides({ attention: tuning }, () =>
    poisoned(device, () => {
      const o = attention(q, k, v, options(device));
      backward(o, { grad });
      return o;
    }),
  );
  return Promise.all([out, q.grad!, k.grad!, v.grad!].map((t) => t.toFloat32()));
}

async function compare(
  c: Case,
  dtype: DType,
  seed: number,
  options: (d: Device) => AttentionOptions,
  tuning: Partial<AttentionTuning>,
  what: string,
): Promise<void> {
  const ref = await forwardBackward(cpu, c, dtype, seed, options, {});
  const got = await forwardBackward(gpu!, c, dtype, seed, options, tuning);
  ['out', 'dq', 'dk', 'dv'].forEach((name, i) => expectClose(got[i]!, ref[i]!, { rtol: 5e-5, what: `${name} ${what}` }));
}

describe('attention backward: WebGPU vs CPU reference', () => {
  const odd: Case = { batch: 2, queries: 13, keys: 13, qHeads: 6, kvHeads: 2, headDim: 16, valueDim: 12 };
  for (const [name, tuning] of Object.entries(TUNINGS)) {
    test.if(gpu !== null)(`${name} launch: f32 vec4 heads, causal and not, padding with a fully padded row`, async () => {
      await compare(odd, 'f32', 11, () => ({}), tuning, 'causal');
      await compare({ ...odd, queries: 7, keys: 10 }, 'f32', 12, () => ({ causal: false }), tuning, 'not causal');
      await compare(odd, 'f32', 13, (d) => ({ keyMask: onDevice(paddingMask(13), [2, 13], d, 'i32') }), tuning, 'padding');
    });
    test.if(gpu !== null)(`${name} launch: odd head dims (D=5, Dv=7, Hkv=3), packed documents, scale`, async () => {
      const c: Case = { ...odd, queries: 11, keys: 11, kvHeads: 3, headDim: 5, valueDim: 7 };
      await compare(c, 'f32', 14, (d) => ({ seqIds: onDevice(packedIds(11), [2, 11], d), scale: 0.6 }), tuning, 'packed');
    });
  }

  test.if(gpu !== null)('wide heads own fewer rows and keys per invocation (3 rows, 2 keys at D=48, Dv=40)', async () => {
    const c: Case = { batch: 1, queries: 10, keys: 10, qHeads: 4, kvHeads: 2, headDim: 48, valueDim: 40 };
    await compare(c, 'f32', 23, () => ({}), TUNINGS.narrow!, 'D=48');
  });

  test.if(gpu !== null)('bf16 q, k, v (packed and per-element loads) with a bf16 key mask', async () => {
    await compare(
      { batch: 2, queries: 9, keys: 9, qHeads: 4, kvHeads: 2, headDim: 16, valueDim: 8 },
      'bf16',
      21,
      (d) => ({ keyMask: onDevice(paddingMask(9), [2, 9], d, 'bf16') }),
      {},
      'bf16 D=16',
    );
    await compare({ batch: 2, queries: 9, keys: 9, qHeads: 4, kvHeads: 2, headDim: 5, valueDim: 7 }, 'bf16', 22, () => ({}), {}, 'bf16 D=5');
  });

  test.if(gpu !== null)('strided q and k sliced from a fused projection, and queryOffset', async () => {
    const run = async (d: Device) => {
      const fused = onDevice(randomData([2, 9, 8 * 8], 31), [2, 9, 64], d).requiresGrad_();
      const v = onDevice(randomData([2, 9, 2, 8], 32), [2, 9, 2, 8], d).requiresGrad_();
      const heads = reshape(fused, [2, 9, 8, 8]);
      // Queries 4..8 over all 9 keys.
      const q = narrow(narrow(heads, 2, 0, 6), 1, 4, 5);
      const k = narrow(heads, 2, 6, 2);
      const o = poisoned(d, () => attention(q, k, v, { queryOffset: 4 }));
      poisoned(d, () => backward(o, { grad: onDevice(randomData(o.shape, 33), o.shape, d) }));
      return Promise.all([fused.grad!.toFloat32(), v.grad!.toFloat32()]);
    };
    const [ref, got] = [await run(cpu), await run(gpu!)];
    expectClose(got[0]!, ref[0]!, { rtol: 5e-5, what: 'd fused' });
    expectClose(got[1]!, ref[1]!, { rtol: 5e-5, what: 'dv' });
  });

  test.if(gpu !== null)('only the gradients needed are computed', async () => {
    const s = shapes(small);
    const q = onDevice(randomData(s.q, 41), s.q, gpu!);
    const k = onDevice(randomData(s.k, 42), s.k, gpu!).requiresGrad_();
    const v = onDevice(randomData(s.v, 43), s.v, gpu!);
    backward(attention(q, k, v), { grad: onDevice(randomData(s.q, 44), s.q, gpu!) });
    const labels = (gpu as WebGpuDevice).batch.recentLabels(2);
    expect(labels.some((l) => l.startsWith('attention_bwd_dkv'))).toBe(true);
    expect(labels.some((l) => l.startsWith('attention_bwd_dq'))).toBe(false);
    expect(q.grad).toBeNull();
    expect(k.grad!.shape).toEqual(s.k);
  });
});

describe('attention backward: memory', () => {
  for (const device of gpu ? [cpu, gpu] : [cpu]) {
    test(`${device.kind}: the node holds only the output and lse beyond its inputs, and backward leaks nothing`, async () => {
      const s = shapes(small);
      const q = onDevice(randomData(s.q, 51), s.q, device).requiresGrad_();
      const k = onDevice(randomData(s.k, 52), s.k, device).requiresGrad_();
      const v = onDevice(randomData(s.v, 53), s.v, device).requiresGrad_();
      const mask = onDevice(paddingMask(11), [2, 11], device);
      const grad = onDevice(randomData(s.q, 54), s.q, device);
      const before = device.memoryStats().liveBytes;
      // What an output and its lse take (in the pool's buckets).
      const stats = noGrad(() => attentionWithStats(q, k, v, { keyMask: mask }));
      const outAndLse = device.memoryStats().liveBytes - before;
      stats.out.dispose();
      stats.lse.dispose();
      const out = attention(q, k, v, { keyMask: mask });
      expect(device.memoryStats().liveBytes - before).toBe(outAndLse);
      backward(out, { grad });
      out.dispose();
      for (const t of [q, k, v]) {
        t.grad!.dispose();
        t.grad = null;
      }
      expect(device.memoryStats().liveBytes).toBe(before);
    });
  }
});

describe('attention backward: what has none', () => {
  const q = () => tensor(new Float32Array(16), [1, 2, 1, 8], { device: cpu }).requiresGrad_();
  const kv = tensor(new Float32Array(16), [1, 2, 1, 8], { device: cpu });

  test('cached calls and attentionWithStats refuse inputs that require grad, naming the option', () => {
    expect(() => attention(q(), kv, kv, { kvLayout: 'bhsd' })).toThrow(/kvLayout 'bhsd'.*no backward/);
    expect(() => attention(q(), kv, kv, { kvLength: 2 })).toThrow(/kvLength.*no backward/);
    expect(() => attentionWithStats(q(), kv, kv)).toThrow(/attentionWithStats has no backward/);
    expect(noGrad(() => attention(q(), kv, kv, { kvLength: 2 })).shape).toEqual([1, 2, 1, 8]);
  });

  test('no queries: k and v get zero gradients', async () => {
    for (const device of gpu ? [cpu, gpu] : [cpu]) {
      const k = onDevice(randomData([1, 3, 1, 4], 61), [1, 3, 1, 4], device).requiresGrad_();
      const out = attention(onDevice(new Float32Array(0), [1, 0, 2, 4], device), k, k);
      backward(out, { grad: onDevice(new Float32Array(0), [1, 0, 2, 4], device) });
      expect(Array.from(await k.grad!.toFloat32())).toEqual(new Array(12).fill(0));
    }
  });

  test('under noGrad nothing is recorded or saved', () => {
    const out = noGrad(() => attention(q(), kv, kv));
    expect(out.requiresGrad).toBe(false);
    expect(out.gradFn).toBeNull();
    const recorded = attention(q(), kv, kv);
    expect(recorded.gradFn?.name).toBe('attention');
    // q, k, v, the output and the lse.
    expect(recorded.gradFn?.saved.length).toBe(5);
  });
});
