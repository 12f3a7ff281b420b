import { describe, expect, test } from 'bun:test';
import { noGrad } from '../../autograd/graph';
import { tensor } from '../../creation';
import { getCpuDevice, type Device } from '../../device/device';
import type { WebGpuDevice } from '../../device/webgpu-device';
import type { DType } from '../../dtype';
import type { Tensor } from '../../tensor';
import { expectClose, onDevice, poisoned, randomData, testGpu } from '../../testing';
import { narrow, permute, reshape } from '../layout/layout';
import { attention, attentionWithStats, type AttentionOptions } from './attention';
import { withKernelOverrides } from '../../runtime/kernel-overrides';
import type { AttentionTuning } from './attention.wgsl';

const gpu = await testGpu();
const cpu = getCpuDevice();

/**
 * The launch shapes of the other device class, so both code paths run on whichever adapter tests
 * use; the narrow one reads dense f32 keys and values through textures (where storage-texture reads exist).
 */
const WIDE: Partial<AttentionTuning> = { workgroupSize: 64, rowsPerLane: 1, keyBlock: 4, targetLanes: 4096, minSplitKeys: 64, kvTextures: false };
const NARROW: Partial<AttentionTuning> = { workgroupSize: 8, rowsPerLane: 4, keyBlock: 1, targetLanes: 64, minSplitKeys: 64, kvTextures: true };
const TUNINGS = { narrow: NARROW, wide: WIDE };

interface Case {
  batch: number;
  queries: number;
  keys: number;
  qHeads: number;
  kvHeads: number;
  headDim: number;
  valueDim: number;
  dtype?: DType;
}

interface HostInputs {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
}

function inputs(c: Case, seed: number): HostInputs {
  const dtype = c.dtype ?? 'f32';
  return {
    q: randomData([c.batch, c.queries, c.qHeads, c.headDim], seed, { dtype }),
    k: randomData([c.batch, c.keys, c.kvHeads, c.headDim], seed + 1, { dtype }),
    v: randomData([c.batch, c.keys, c.kvHeads, c.valueDim], seed + 2, { dtype }),
  };
}

function onDev(c: Case, x: HostInputs, d: Device): [Tensor, Tensor, Tensor] {
  const dtype = c.dtype ?? 'f32';
  return [
    onDevice(x.q, [c.batch, c.queries, c.qHeads, c.headDim], d, dtype),
    onDevice(x.k, [c.batch, c.keys, c.kvHeads, c.headDim], d, dtype),
    onDevice(x.v, [c.batch, c.keys, c.kvHeads, c.valueDim], d, dtype),
  ];
}

/** Runs `attentionWithStats` on the CPU and (poisoned) on the GPU and compares output and lse. */
async function compare(
  c: Case,
  x: HostInputs,
  options: (d: Device) => AttentionOptions = () => ({}),
  tuning: Partial<AttentionTuning> = {},
  what = '',
): Promise<Float32Array> {
  const ref = attentionWithStats(...onDev(c, x, cpu), options(cpu));
  const got = withKernelOverrides({ attention: tuning }, () => poisoned(gpu!, () => attentionWithStats(...onDev(c, x, gpu!), options(gpu!))));
  expect(got.out.shape).toEqual([c.batch, c.queries, c.qHeads, c.valueDim]);
  const refOut = (await ref.out.data()) as Float32Array;
  expectClose((await got.out.data()) as Float32Array, refOut, { rtol: 2e-5, what: `out ${what}` });
  expectClose((await got.lse.data()) as Float32Array, (await ref.lse.data()) as Float32Array, { rtol: 2e-5, what: `lse ${what}` });
  return refOut;
}

const odd: Case = { batch: 2, queries: 37, keys: 37, qHeads: 6, kvHeads: 2, headDim: 16, valueDim: 12 };

describe('attention: WebGPU vs CPU reference', () => {
  for (const [name, tuning] of Object.entries(TUNINGS)) {
    for (const shape of [
      { kvHeads: 2, headDim: 16, valueDim: 12 },
      { kvHeads: 3, headDim: 5, valueDim: 7 },
    ]) {
      test.if(gpu !== null)(`${name} launch, Hkv=${shape.kvHeads} D=${shape.headDim} Dv=${shape.valueDim}, causal and not`, async () => {
        const c = { ...odd, ...shape };
        const x = inputs(c, 1);
        for (const causal of [true, false]) await compare(c, x, () => ({ causal }), tuning, `causal=${causal}`);
      });
    }
  }

  test.if(gpu !== null)('bf16 q, k, v (packed loads and per-element loads)', async () => {
    for (const headDim of [16, 5]) {
      const c: Case = { ...odd, headDim, valueDim: headDim === 16 ? 8 : 7, dtype: 'bf16' };
      await compare(c, inputs(c, 4), () => ({}), {}, `bf16 D=${headDim}`);
    }
  });

  test.if(gpu !== null)('scale and a key mask of any dtype', async () => {
    const c = { ...odd, queries: 9, keys: 23 };
    const x = inputs(c, 5);
    const mask = Float32Array.from({ length: 2 * 23 }, (_, i) => (i % 5 === 2 ? 0 : 1));
    for (const dtype of ['i32', 'bf16'] as const) {
      const values = dtype === 'i32' ? Int32Array.from(mask) : mask;
      await compare(c, x, (d) => ({ scale: 0.37, keyMask: onDevice(values, [2, 23], d, dtype) }), {}, `mask ${dtype}`);
    }
  });
});

describe('attention: masking', () => {
  test.if(gpu !== null)('left padding: fully masked query rows give zeros and lse +Infinity', async () => {
    const c = odd;
    const x = inputs(c, 7);
    const pads = [5, 0];
    const mask = Float32Array.from({ length: 2 * 37 }, (_, i) => (i % 37 < pads[Math.floor(i / 37)]! ? 0 : 1));
    for (const tuning of Object.values(TUNINGS)) {
      const ref = await compare(c, x, (d) => ({ keyMask: onDevice(mask, [2, 37], d) }), tuning, 'left padding');
      const got = withKernelOverrides({ attention: tuning }, () =>
        poisoned(gpu!, () => attentionWithStats(...onDev(c, x, gpu!), { keyMask: onDevice(mask, [2, 37], gpu!) })),
      );
      const out = (await got.out.data()) as Float32Array;
      const lse = (await got.lse.data()) as Float32Array;
      const rowSize = c.qHeads * c.valueDim;
      for (let i = 0; i < 37; i++) {
        const padded = i < 5;
        for (let e = 0; e < rowSize; e++) expect(out[i * rowSize + e] === 0).toBe(padded);
        for (let h = 0; h < c.qHeads; h++) expect(lse[i * c.qHeads + h] === Infinity).toBe(padded);
      }
      expect(ref.slice(0, 5 * rowSize).every((v) => v === 0)).toBe(true);
    }
  });

  test.if(gpu !== null)('packed documents (11, 1, 17, 3, 13) stay isolated', async () => {
    const lengths = [11, 1, 17, 3, 13];
    const total = lengths.reduce((a, b) => a + b, 0);
    const ids = new Int32Array(total);
    let at = 0;
    lengths.forEach((n, doc) => ids.fill(doc + 1, at, (at += n)));
    const c: Case = { ...odd, batch: 1, queries: total, keys: total };
    const x = inputs(c, 11);
    const seq = (d: Device) => ({ seqIds: onDevice(ids, [1, total], d) });
    for (const tuning of Object.values(TUNINGS)) await compare(c, x, seq, tuning, 'packed');
    // The reference itself: every document alone gives the same rows.
    const packed = (await attention(...onDev(c, x, cpu), seq(cpu)).data()) as Float32Array;
    let start = 0;
    const qRow = c.qHeads * c.headDim;
    const kRow = c.kvHeads * c.headDim;
    const vRow = c.kvHeads * c.valueDim;
    const oRow = c.qHeads * c.valueDim;
    for (const n of lengths) {
      const doc: Case = { ...c, queries: n, keys: n };
      const part = {
        q: x.q.slice(start * qRow, (start + n) * qRow),
        k: x.k.slice(start * kRow, (start + n) * kRow),
        v: x.v.slice(start * vRow, (start + n) * vRow),
      };
      const alone = (await attention(...onDev(doc, part, cpu)).data()) as Float32Array;
      expectClose(packed.slice(start * oRow, (start + n) * oRow), alone, { rtol: 1e-12, what: `document at ${start}` });
      start += n;
    }
  });

  test.if(gpu !== null)('queryOffset: a chunk of queries over the cache equals those rows of the full call', async () => {
    const c: Case = { ...odd, batch: 2, queries: 12, keys: 12 };
    const x = inputs(c, 13);
    const rowO = c.qHeads * c.valueDim;
    for (const d of [cpu, gpu!]) {
      const [q, k, v] = onDev(c, x, d);
      const full = (await attention(q, k, v).data()) as Float32Array;
      const chunkQ = narrow(q, 1, 5, 7);
      for (const options of [{}, { queryOffset: 5 }]) {
        const chunk = (await poisoned(d, () => attention(chunkQ, k, v, options)).data()) as Float32Array;
        for (let b = 0; b < 2; b++) {
          expectClose(chunk.slice(b * 7 * rowO, (b + 1) * 7 * rowO), full.slice((b * 12 + 5) * rowO, (b * 12 + 12) * rowO), {
            rtol: 1e-6,
            what: `chunk on ${d.kind}`,
          });
        }
      }
      expect(chunkQ.isContiguous).toBe(false);
    }
  });
});

describe('attention: decode', () => {
  test.if(gpu !== null)('one query over 1, 7, 300 and 2051 keys (split keys past a few hundred)', async () => {
    for (const keys of [1, 7, 300, 2051]) {
      const c: Case = { batch: 2, queries: 1, keys, qHeads: 8, kvHeads: 2, headDim: 16, valueDim: 16 };
      const x = inputs(c, 17 + keys);
      await compare(c, x, () => ({}), NARROW, `decode over ${keys}`);
      withKernelOverrides({ attention: NARROW }, () => attention(...onDev(c, x, gpu!)));
      const last = (gpu as WebGpuDevice).batch.recentLabels(1)[0]!;
      expect(last.startsWith('attention_combine')).toBe(keys >= 300);
    }
  });

  test.if(gpu !== null)('split keys with keys and values read through textures (prefill-sized, narrow launch)', async () => {
    const c: Case = { batch: 1, queries: 9, keys: 333, qHeads: 4, kvHeads: 2, headDim: 16, valueDim: 12 };
    const tuning = { ...NARROW, targetLanes: 512 };
    const x = inputs(c, 29);
    await compare(c, x, () => ({}), tuning, 'split + textures');
    withKernelOverrides({ attention: tuning }, () => attention(...onDev(c, x, gpu!)));
    expect((gpu as WebGpuDevice).batch.recentLabels(1)[0]!.startsWith('attention_combine')).toBe(true);
  });

  test.if(gpu !== null)('a few queries over a long cache, with mask, odd value dim, wide launch', async () => {
    const c: Case = { batch: 2, queries: 3, keys: 401, qHeads: 6, kvHeads: 3, headDim: 5, valueDim: 7 };
    const x = inputs(c, 19);
    const mask = Float32Array.from({ length: 2 * 401 }, (_, i) => (i < 40 ? 0 : 1));
    await compare(c, x, (d) => ({ keyMask: onDevice(mask, [2, 401], d) }), WIDE, 'wide decode');
  });

  test.if(gpu !== null)("'bhsd' cache with kvLength below capacity reads only the valid keys", async () => {
    const capacity = 50;
    const keys = 37;
    const c: Case = { batch: 2, queries: 1, keys, qHeads: 6, kvHeads: 2, headDim: 16, valueDim: 12 };
    const x = inputs(c, 23);
    // The cache: [B, Hkv, capacity, D], NaN in the unused positions.
    const cacheOf = (src: Float32Array, dim: number) => {
      const out = new Float32Array(2 * 2 * capacity * dim).fill(NaN);
      for (let b = 0; b < 2; b++)
        for (let j = 0; j < keys; j++)
          for (let g = 0; g < 2; g++)
            for (let e = 0; e < dim; e++) {
              out[((b * 2 + g) * capacity + j) * dim + e] = src[((b * keys + j) * 2 + g) * dim + e]!;
            }
      return out;
    };
    const kc = cacheOf(x.k, 16);
    const vc = cacheOf(x.v, 12);
    const ref = (await attention(...onDev(c, x, cpu)).data()) as Float32Array;
    for (const [d, tuning] of [
      [cpu, {}],
      [gpu!, NARROW],
      [gpu!, WIDE],
    ] as const) {
      const run = () =>
        attention(onDevice(x.q, [2, 1, 6, 16], d), onDevice(kc, [2, 2, capacity, 16], d), onDevice(vc, [2, 2, capacity, 12], d), {
          kvLayout: 'bhsd',
          kvLength: keys,
        });
      const got = (await withKernelOverrides({ attention: tuning }, () => poisoned(d, run)).data()) as Float32Array;
      expectClose(got, ref, { rtol: 2e-5, what: `bhsd on ${d.kind}` });
    }
  });
});

describe('attention: key count on the device', () => {
  test.if(gpu !== null)('a kvLength tensor equals the number, for every length, with one kernel source', async () => {
    const capacity = 300;
    const c: Case = { batch: 2, queries: 1, keys: capacity, qHeads: 6, kvHeads: 2, headDim: 16, valueDim: 12 };
    const x = inputs(c, 41);
    const mask = Float32Array.from({ length: 2 * capacity }, (_, i) => (i % capacity < 3 * (i < capacity ? 1 : 0) ? 0 : 1));
    for (const [name, tuning] of Object.entries(TUNINGS)) {
      let pipelines = -1;
      for (const keys of [1, 7, 150, 299, 300]) {
        const options = (n: number | Tensor, d: Device): AttentionOptions => ({ kvLength: n, keyMask: onDevice(mask, [2, capacity], d) });
        const ref = (await attention(...onDev(c, x, cpu), options(keys, cpu)).data()) as Float32Array;
        for (const d of [cpu, gpu!]) {
          const n = onDevice(Int32Array.of(keys), [1], d);
          const got = (await withKernelOverrides({ attention: tuning }, () =>
            poisoned(d, () => attention(...onDev(c, x, d), options(n, d))),
          ).data()) as Float32Array;
          expectClose(got, ref, { rtol: 2e-5, what: `${name} launch, ${keys} keys on ${d.kind}` });
        }
        const size = (gpu as WebGpuDevice).pipelines.size;
        if (pipelines >= 0) expect(size).toBe(pipelines);
        pipelines = size;
      }
    }
  });

  test.if(gpu !== null)('several causal queries at the end of a device-counted cache', async () => {
    const c: Case = { batch: 2, queries: 3, keys: 90, qHeads: 4, kvHeads: 2, headDim: 8, valueDim: 8 };
    const x = inputs(c, 43);
    const ref = (await attention(...onDev(c, x, cpu), { kvLength: 61 }).data()) as Float32Array;
    for (const d of [cpu, gpu!]) {
      const got = (await attention(...onDev(c, x, d), { kvLength: onDevice(Int32Array.of(61), [1], d) }).data()) as Float32Array;
      expectClose(got, ref, { rtol: 2e-5, what: `on ${d.kind}` });
    }
    const [q, k, v] = onDev(c, x, cpu);
    expect(() => attention(q, k, v, { kvLength: onDevice(Int32Array.of(1), [1], cpu), queryOffset: 0 })).toThrow(/queryOffset cannot be combined/);
    expect(() => attention(q, k, v, { kvLength: onDevice(Float32Array.of(1), [1], cpu) })).toThrow(/i32 with one element/);
  });
});

describe('attention: inputs', () => {
  test.if(gpu !== null)('strided views: q and k sliced from fused projections, a permuted v', async () => {
    const c: Case = { ...odd, queries: 13, keys: 13 };
    const x = inputs(c, 29);
    const fused = randomData([2, 13, (6 + 2) * 16], 31);
    const run = (d: Device) => {
      const proj = onDevice(fused, [2, 13, 8 * 16], d);
      const heads = reshape(proj, [2, 13, 8, 16]);
      const q = narrow(heads, 2, 0, 6);
      const k = narrow(heads, 2, 6, 2);
      const v = permute(onDevice(x.v, [2, 12, 13, 2], d), [0, 2, 3, 1]);
      return attention(q, k, v);
    };
    expectClose((await run(gpu!).data()) as Float32Array, (await run(cpu).data()) as Float32Array, { rtol: 2e-5 });
  });

  test('CPU reference: hand-computed softmax', async () => {
    // One query [1, 0] against keys [1, 0], [0, 1] (scale 1): weights e/(e+1), 1/(e+1).
    const q = tensor([1, 0], [1, 1, 1, 2], { device: cpu });
    const k = tensor([1, 0, 0, 1], [1, 2, 1, 2], { device: cpu });
    const v = tensor([10, 20], [1, 2, 1, 1], { device: cpu });
    const { out, lse } = attentionWithStats(q, k, v, { scale: 1, causal: false });
    const w = Math.E / (Math.E + 1);
    expectClose((await out.data()) as Float32Array, [10 * w + 20 * (1 - w)], { rtol: 1e-6 });
    expectClose((await lse.data()) as Float32Array, [Math.log(Math.E + 1)], { rtol: 1e-6 });
  });

  test('clear errors for bad shapes and options', () => {
    const t = (shape: number[], dtype: DType = 'f32') => tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape, { device: cpu, dtype });
    const q = t([1, 4, 6, 8]);
    const k = t([1, 4, 2, 8]);
    const v = t([1, 4, 2, 3]);
    expect(() => attention(q, t([1, 4, 4, 8]), t([1, 4, 4, 3]))).toThrow(/multiple of kv heads/);
    expect(() => attention(q, t([1, 4, 2, 7]), v)).toThrow(/head dims differ/);
    expect(() => attention(q, k, t([1, 5, 2, 3]))).toThrow(/k and v disagree/);
    expect(() => attention(t([4, 6, 8]), k, v)).toThrow(/rank 4/);
    expect(() => attention(q, k, t([1, 4, 2, 3], 'i32'))).toThrow(/f32 or bf16/);
    expect(() => attention(q, t([2, 4, 2, 8]), t([2, 4, 2, 3]))).toThrow(/batch sizes differ/);
    expect(() => attention(q, k, v, { kvLength: 5 })).toThrow(/kvLength 5/);
    expect(() => attention(q, k, v, { queryOffset: 1 })).toThrow(/queryOffset 1/);
    expect(() => attention(t([1, 5, 6, 8]), k, v)).toThrow(/queryOffset -1/);
    expect(() => attention(q, k, v, { keyMask: t([1, 3]) })).toThrow(/keyMask \[1, 3\]/);
    expect(() => attention(q, k, v, { seqIds: t([1, 4]) })).toThrow(/seqIds must be i32/);
    expect(() => attention(q, k, v, { scale: NaN })).toThrow(/scale/);
    expect(() => attention(q, t([1, 4, 4, 8]), t([1, 4, 4, 3]), { kvLayout: 'bhsd' })).toThrow(/multiple of kv heads/);
    expect(() => attention(q, k, v, { kvLayout: 'bsdh' as 'bshd' })).toThrow(/kvLayout/);
    // Non-causal cross attention with more queries than keys needs no offset.
    expect(attention(t([1, 9, 6, 8]), k, v, { causal: false }).shape).toEqual([1, 9, 6, 3]);
  });

  test('cached calls that require grad are refused while grad is enabled (the backward has its own tests)', () => {
    const q = tensor(new Float32Array(8), [1, 1, 1, 8], { device: cpu }).requiresGrad_();
    const kv = tensor(new Float32Array(8), [1, 1, 1, 8], { device: cpu });
    expect(() => attention(q, kv, kv, { kvLayout: 'bhsd' })).toThrow(/kvLayout 'bhsd' \(the generation cache\) has no backward/);
    expect(noGrad(() => attention(q, kv, kv, { kvLayout: 'bhsd' })).shape).toEqual([1, 1, 1, 8]);
  });
});
