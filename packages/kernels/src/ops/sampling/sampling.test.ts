import { describe, expect, test } from 'bun:test';
import { tensor } from '../../creation';
import { getCpuDevice, type Device } from '../../device/device';
import { Generator } from '../../random';
import { narrow } from '../layout/layout';
import { onDevice, poisoned, randomData, testGpu, testNative } from '../../testing';
import { uniformHash } from './counter-random';
import { keptTokens } from './sampling.cpu';
import { NON_FINITE_TOKEN, recordTokens, sampleTokens, type SamplingOptions } from './sampling';

const gpu = await testGpu();
const native = testNative();
const cpu = getCpuDevice();
const devices: Device[] = [cpu, ...(native ? [native] : []), ...(gpu ? [gpu] : [])];

/** Logits [rows, vocab] with a spread like a model's (a few large values, a long tail). */
function logits(rows: number, vocab: number, seed: number): Float32Array {
  return randomData([rows, vocab], seed, { scale: 3 });
}

async function choose(
  d: Device,
  values: Float32Array,
  shape: [number, number],
  options: SamplingOptions & { counterValue?: number; seenIds?: number[][] } = {},
): Promise<number[]> {
  const { counterValue, seenIds, ...rest } = options;
  const seen = seenIds
    ? onDevice(
        Int32Array.from({ length: shape[0] * shape[1] }, (_, i) => (seenIds[Math.floor(i / shape[1])]!.includes(i % shape[1]) ? 1 : 0)),
        shape,
        d,
      )
    : undefined;
  const counter = counterValue === undefined ? undefined : onDevice(Int32Array.of(counterValue), [1], d);
  const out = poisoned(d, () => sampleTokens(onDevice(values, shape, d), { ...rest, counter, seen }));
  return Array.from((await out.data()) as Int32Array);
}

describe('sampleTokens', () => {
  test('greedy: the lowest index of the largest value, with the repetition penalty applied first (WebGPU = CPU)', async () => {
    const shape: [number, number] = [3, 1001];
    const x = logits(3, 1001, 1);
    const ties = Float32Array.from(x);
    ties[7] = ties[500] = 50; // row 0: a tie, the lower index wins
    for (const d of devices) {
      const plain = await choose(d, ties, shape);
      expect(plain[0]).toBe(7);
      const argmax = (r: number) => ties.subarray(r * 1001, (r + 1) * 1001).reduce((best, v, i, a) => (v > a[best]! ? i : best), 0);
      expect(plain).toEqual([0, 1, 2].map(argmax));
      // Penalising row 0's winners hands the choice to the next best token.
      const penalised = await choose(d, ties, shape, { repetitionPenalty: 1e3, seenIds: [[7, 500], [], []] });
      expect(penalised[0]).not.toBe(7);
      expect(penalised[0]).not.toBe(500);
      expect(penalised.slice(1)).toEqual(plain.slice(1));
    }
  });

  test('a row with NaN or ±Infinity logits gets NON_FINITE_TOKEN; the other rows are unaffected (f32 and bf16)', async () => {
    const shape: [number, number] = [5, 333];
    const x = logits(5, 333, 11);
    x[1 * 333 + 331] = NaN;
    x[2 * 333 + 0] = Infinity;
    x[3 * 333 + 170] = -Infinity;
    const argmax = (r: number) => x.subarray(r * 333, (r + 1) * 333).reduce((best, v, i, a) => (v > a[best]! ? i : best), 0);
    for (const d of devices) {
      for (const dtype of ['f32', 'bf16'] as const) {
        for (const options of [{}, { doSample: true, topK: 7, temperature: 1e-30, seed: 3 }] as SamplingOptions[]) {
          const got = Array.from((await poisoned(d, () => sampleTokens(onDevice(x, shape, d, dtype), options)).data()) as Int32Array);
          const what = { device: d.kind, dtype, sample: options.doSample ?? false };
          expect({ ...what, got: got.slice(1, 4) }).toEqual({ ...what, got: [NON_FINITE_TOKEN, NON_FINITE_TOKEN, NON_FINITE_TOKEN] });
          // A tiny temperature scales finite logits past f32's range: still a token, not an error.
          if (dtype === 'f32') expect({ ...what, got: [got[0], got[4]] }).toEqual({ ...what, got: [argmax(0), argmax(4)] });
          else expect(got[0]! >= 0 && got[4]! >= 0).toBe(true);
        }
      }
    }
  });

  const cases: [string, SamplingOptions][] = [
    ['temperature 0.7', { temperature: 0.7 }],
    ['top-k 20', { topK: 20 }],
    ['top-p 0.6', { topP: 0.6 }],
    ['min-p 0.05', { minP: 0.05 }],
    ['all together, penalty 1.3', { temperature: 1.3, topK: 50, topP: 0.9, minP: 0.02, repetitionPenalty: 1.3 }],
  ];
  for (const [name, options] of cases) {
    test.if(gpu !== null)(`sampling, ${name}: WebGPU draws the CPU reference's tokens (f32 and bf16 logits)`, async () => {
      const shape: [number, number] = [3, 777];
      const x = logits(3, 777, 2);
      const seenIds = options.repetitionPenalty ? [[1, 2, 3, 400], [5], []] : undefined;
      for (const dtype of ['f32', 'bf16'] as const) {
        for (let counter = 0; counter < 12; counter++) {
          const opts = { ...options, doSample: true, seed: 1234, counterValue: counter, seenIds };
          const run = async (d: Device) => {
            const t = onDevice(x, shape, d, dtype);
            const counterT = onDevice(Int32Array.of(counter), [1], d);
            const seen = seenIds
              ? onDevice(
                  Int32Array.from({ length: 3 * 777 }, (_, i) => (seenIds[Math.floor(i / 777)]!.includes(i % 777) ? 1 : 0)),
                  shape,
                  d,
                )
              : undefined;
            return Array.from((await poisoned(d, () => sampleTokens(t, { ...opts, counter: counterT, seen })).data()) as Int32Array);
          };
          expect({ counter, dtype, got: await run(gpu!) }).toEqual({ counter, dtype, got: await run(cpu) });
        }
      }
    });
  }

  test.if(native !== null)('native: the reference tokens for every processor, with ties, -0, bf16 and a row offset (odd vocabularies)', async () => {
    const options: SamplingOptions[] = [
      {},
      { doSample: true },
      { doSample: true, temperature: 0.7 },
      { doSample: true, topK: 1 },
      { doSample: true, topK: 20 },
      { doSample: true, topK: 4000 },
      { doSample: true, topP: 0.6 },
      { doSample: true, topP: 0.95 },
      { doSample: true, minP: 0.05 },
      { doSample: true, temperature: 1.3, topK: 50, topP: 0.9, minP: 0.02, repetitionPenalty: 1.3 },
      { repetitionPenalty: 2 },
    ];
    for (const vocab of [777, 4099]) {
      const rows = 3;
      const random = logits(rows + 1, vocab, vocab);
      // Half-unit steps: many equal values, so top-k's k-th value and top-p's groups hold ties.
      const tied = random.map((v, i) => (i % 5 === 0 ? -0 : Math.round(v * 2) / 2));
      const seen = Int32Array.from({ length: rows * vocab }, (_, i) => (i % 97 === 3 || i % vocab === 5 ? 1 : 0));
      for (const [name, values] of [
        ['random', random],
        ['tied', tied],
      ] as const) {
        for (const dtype of ['f32', 'bf16'] as const) {
          for (const option of options) {
            for (const counterValue of [0, 1, 7]) {
              const run = async (d: Device) => {
                // Rows 1..3 of 4: the logits start at an offset into their storage.
                const x = narrow(onDevice(values, [rows + 1, vocab], d, dtype), 0, 1, rows);
                const counter = onDevice(Int32Array.of(counterValue), [1], d);
                const seenT = option.repetitionPenalty ? onDevice(seen, [rows, vocab], d) : undefined;
                return Array.from((await sampleTokens(x, { ...option, seed: 99, counter, counterOffset: 3, seen: seenT }).data()) as Int32Array);
              };
              const what = { vocab, name, dtype, option, counterValue };
              expect({ ...what, got: await run(native!) }).toEqual({ ...what, got: await run(cpu) });
            }
          }
        }
      }
    }
  });

  test('the CPU draws follow the kept distribution (frequencies over 3000 counters)', async () => {
    const values = Float32Array.of(2, 1, 0.5, -1, 3, 0.2);
    const shape: [number, number] = [1, 6];
    const check = async (options: SamplingOptions, expected: number[]) => {
      const counts = new Array<number>(6).fill(0);
      const t = tensor(values, shape, { device: cpu });
      for (let c = 0; c < 3000; c++) {
        const id = (await sampleTokens(t, { ...options, doSample: true, seed: 9, counter: tensor(Int32Array.of(c), [1], { device: cpu }) }).data())[0]!;
        counts[id]!++;
      }
      counts.forEach((n, i) => expect(Math.abs(n / 3000 - expected[i]!)).toBeLessThan(0.03));
    };
    const softmax = (xs: number[], keep: boolean[]) => {
      const w = xs.map((v, i) => (keep[i] ? Math.exp(v) : 0));
      const z = w.reduce((a, b) => a + b, 0);
      return w.map((v) => v / z);
    };
    await check({}, softmax([...values], [true, true, true, true, true, true]));
    await check({ topK: 2 }, softmax([...values], [true, false, false, false, true, false]));
    await check(
      { temperature: 0.5, topP: 0.95 },
      softmax(
        [...values].map((v) => v / 0.5),
        [true, true, false, false, true, false],
      ),
    );
  });

  test('top-k 1, a near-zero temperature and a tiny top-p all give the greedy token', async () => {
    const shape: [number, number] = [2, 513];
    const x = logits(2, 513, 3);
    for (const d of devices) {
      const greedy = await choose(d, x, shape);
      for (const options of [{ topK: 1 }, { temperature: 1e-5 }, { topP: 1e-6 }]) {
        for (const counterValue of [0, 5, 99]) expect(await choose(d, x, shape, { ...options, doSample: true, seed: 3, counterValue })).toEqual(greedy);
      }
    }
  });

  test('a seed reproduces the draws; another seed or counter changes them', async () => {
    const shape: [number, number] = [4, 300];
    const x = logits(4, 300, 4).map((v) => v / 4); // flat enough that draws vary
    for (const d of devices) {
      const draw = (seed: number, counterValue: number) => choose(d, x, shape, { doSample: true, seed, counterValue });
      const a = [await draw(7, 0), await draw(7, 1), await draw(7, 2)];
      expect([await draw(7, 0), await draw(7, 1), await draw(7, 2)]).toEqual(a);
      expect([await draw(8, 0), await draw(8, 1), await draw(8, 2)]).not.toEqual(a);
      expect(a[1]).not.toEqual(a[0]);
      // The offset is added to the counter.
      expect(await choose(d, x, shape, { doSample: true, seed: 7, counterValue: 12, counterOffset: -10 })).toEqual(a[2]!);
    }
  });

  test('processors on fixed logits: the kept sets of top-k, top-p and min-p', () => {
    const s = Float32Array.of(1, 4, 3, 3, 0, 2);
    const keep = (o: { topK?: number; topP?: number; minP?: number }) => Array.from(keptTokens({ topK: o.topK ?? 0, topP: o.topP ?? 1, minP: o.minP ?? 0 }, s));
    expect(keep({ topK: 2 })).toEqual([0, 1, 1, 1, 0, 0]); // ties with the 2nd value stay
    // Probabilities ∝ e^s: 4 → 0.574, 3 → 0.211 each, 2 → 0.078, ...
    expect(keep({ topP: 0.5 })).toEqual([0, 1, 0, 0, 0, 0]);
    expect(keep({ topP: 0.8 })).toEqual([0, 1, 1, 1, 0, 0]);
    expect(keep({ minP: 0.3 })).toEqual([0, 1, 1, 1, 0, 0]);
    expect(keep({ minP: 0.1 })).toEqual([0, 1, 1, 1, 0, 1]);
  });

  test('uniformHash: uniform-looking numbers in [0, 1), different per seed, row and counter', () => {
    const g = new Generator(1);
    let sum = 0;
    for (let i = 0; i < 10000; i++) {
      const u = uniformHash(g.nextU32(), i % 7, i);
      expect(u >= 0 && u < 1).toBe(true);
      sum += u;
    }
    expect(Math.abs(sum / 10000 - 0.5)).toBeLessThan(0.01);
    expect(uniformHash(1, 0, 0)).not.toBe(uniformHash(2, 0, 0));
    expect(uniformHash(1, 0, 0)).not.toBe(uniformHash(1, 1, 0));
    expect(uniformHash(1, 0, 0)).not.toBe(uniformHash(1, 0, 1));
  });

  test('clear errors', () => {
    const x = tensor(new Float32Array(8), [2, 4], { device: cpu });
    expect(() => sampleTokens(x, { temperature: 0 })).toThrow(/temperature must be a positive number/);
    expect(() => sampleTokens(x, { topP: 0 })).toThrow(/topP must be in/);
    expect(() => sampleTokens(x, { minP: 2 })).toThrow(/minP must be in/);
    expect(() => sampleTokens(x, { topK: 1.5 })).toThrow(/topK must be an integer/);
    expect(() => sampleTokens(x, { repetitionPenalty: 1.2 })).toThrow(/needs the `seen` set/);
    expect(() => sampleTokens(tensor(new Float32Array(4), [4], { device: cpu }))).toThrow(/\[B, V\]/);
    expect(() => sampleTokens(x, { seen: tensor(new Int32Array(4), [1, 4], { device: cpu }) })).toThrow(/seen \[1, 4\] must be \[2, 4\]/);
  });
});

describe('recordTokens', () => {
  test('finished rows get pad, EOS finishes a row, the history column follows the position (WebGPU = CPU)', async () => {
    const results: number[][][] = [];
    for (const d of devices) {
      const i32 = (values: number[], shape: number[]) => onDevice(Int32Array.from(values), shape, d);
      const ids = i32([0, 0, 0], [3]);
      const finished = i32([0, 1, 0], [3]);
      const history = i32(new Array(3 * 4).fill(-7), [3, 4]);
      const seen = i32(new Array(3 * 10).fill(0), [3, 10]);
      const eos = i32([2, 9], [2]);
      const position = i32([5], [1]);
      const steps = [
        [4, 4, 2],
        [9, 1, 3],
        [6, 6, 6],
      ];
      for (const [k, step] of steps.entries()) {
        position.dispose();
        const pos = i32([5 + k], [1]);
        poisoned(d, () => recordTokens(i32(step, [3]), { ids, finished, padId: 0, eos, history, position: pos, base: 5, seen }));
      }
      const read = async (t: typeof ids) => Array.from((await t.data()) as Int32Array);
      results.push([await read(ids), await read(finished), await read(history), await read(seen)]);
    }
    const [ids, finished, history, seen] = results[0]!;
    expect(ids).toEqual([0, 0, 0]);
    expect(finished).toEqual([1, 1, 1]);
    // Row 0: 4, then EOS 9, then pad. Row 1 was finished: pads. Row 2: EOS at once, then pads.
    expect(history).toEqual([4, 9, 0, -7, 0, 0, 0, -7, 2, 0, 0, -7]);
    expect(seen.slice(0, 10)).toEqual([0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
    expect(seen.slice(10, 20).every((v) => v === 0)).toBe(true);
    if (results[1]) expect(results[1]).toEqual(results[0]!);
  });
});
