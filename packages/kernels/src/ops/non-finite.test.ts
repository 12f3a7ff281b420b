// NaN and ±Infinity reach every kernel's output as they reach the CPU reference's: a non-finite
// weight or activation must never come out finite (relu² once mapped a NaN to 0 on WebGPU, so a
// corrupt checkpoint gave plausible logits). Each op family gets inputs holding NaN, +∞ and −∞ and
// is compared with the CPU reference element by element (expectClose requires NaN where NaN is
// expected and equal infinities).
import { describe, expect, test } from 'bun:test';
import { noGrad } from '../autograd/graph';
import { getCpuDevice, type Device } from '../device/device';
import { deviceLabel, expectClose, onDevice, randomData, testGpus } from '../testing';
import type { Tensor } from '../tensor';
import { attention } from './attention/attention';
import { crossEntropy } from './cross-entropy/cross-entropy';
import { BINARY, UNARY, UNARY_GRAD, type BinaryOp, type UnaryOp } from './elementwise/definitions';
import { binary, unary, unaryGrad } from './elementwise/elementwise';
import { fusedLinear } from './matmul/fused-linear';
import { linear, matmul } from './matmul/matmul';
import { moeExperts } from './moe/moe-experts';
import { moeRoute } from './moe/moe-route';
import { groupedGatedRmsNorm, rmsNorm } from './norm/norm';
import { max, mean, min, sum } from './reduce/reduce';
import { NON_FINITE_TOKEN, sampleTokens } from './sampling/sampling';
import { mambaDecodeStep } from './scan/mamba-decode';
import { ssdScan } from './scan/scan';
import { logSoftmax, softmax } from './softmax/softmax';
import { argmax, topk } from './topk/topk';

const cpu = getCpuDevice();
const gpus = await testGpus();

/** Seeded data with NaN, +∞ and −∞ planted at the given flat positions. */
function planted(shape: number[], seed: number, at: { nan?: number[]; inf?: number[]; ninf?: number[] }, scale = 1): Float32Array {
  const v = randomData(shape, seed, { scale });
  for (const i of at.nan ?? []) v[i] = NaN;
  for (const i of at.inf ?? []) v[i] = Infinity;
  for (const i of at.ninf ?? []) v[i] = -Infinity;
  return v;
}

/** Runs `f` on the CPU reference and on `gpu` with the same host inputs; every output must agree. */
async function agree(gpu: Device, what: string, f: (d: Device) => Tensor | Tensor[], rtol = 2e-5): Promise<void> {
  const read = async (d: Device) => Promise.all([f(d)].flat().map((t) => t.toFloat32()));
  const ref = await read(cpu);
  const got = await read(gpu);
  ref.forEach((r, k) => expectClose(got[k]!, r, { rtol, what: `${what} output ${k}` }));
}

const SPECIALS = [NaN, Infinity, -Infinity, 0, -0, 0.75, -2.5, 3.4e38, -1e-30];

for (const gpu of gpus) {
  describe(`non-finite values on ${deviceLabel(gpu)}`, () => {
    test('elementwise: every unary op and its gradient, every binary op (relu, relu², clamp, maximum, minimum, ...)', async () => {
      const x = Float32Array.from(SPECIALS);
      const g = randomData([x.length], 30);
      for (const op of Object.keys(UNARY) as UnaryOp[]) {
        const [p0, p1] = op === 'clamp' ? [-1, 1] : op === 'pow_scalar' ? [2, 0] : [0, 0];
        await agree(gpu, op, (d) => unary(op, onDevice(x, [x.length], d), p0, p1));
        // Gradients without the f32-overflowing 3.4e38 (the f64 reference of 2·x·g would stay finite).
        const xg = x.map((v) => (Number.isFinite(v) && Math.abs(v) > 1e38 ? 1.5 : v));
        if (UNARY_GRAD[op]) await agree(gpu, `${op} gradient`, (d) => unaryGrad(op, onDevice(xg, [x.length], d), onDevice(g, [g.length], d), p0, p1));
      }
      const a = Float32Array.from(SPECIALS.flatMap((s) => SPECIALS.map(() => s)));
      const b = Float32Array.from(SPECIALS.flatMap(() => SPECIALS));
      for (const op of Object.keys(BINARY) as BinaryOp[]) {
        if (op === 'pow') continue; // WGSL pow of ±∞ operands is implementation-defined; pow_scalar covers the kernel
        await agree(gpu, op, (d) => binary(op, onDevice(a, [a.length], d), onDevice(b, [b.length], d)));
      }
    });

    test('reductions: sum, mean, max, min over rows and columns', async () => {
      const x = planted([5, 37], 1, { nan: [3, 40, 41], inf: [80, 150], ninf: [81, 160] });
      for (const axis of [0, 1]) {
        await agree(gpu, `sum ${axis}`, (d) => sum(onDevice(x, [5, 37], d), axis), 1e-5);
        await agree(gpu, `mean ${axis}`, (d) => mean(onDevice(x, [5, 37], d), axis), 1e-5);
        await agree(gpu, `max ${axis}`, (d) => max(onDevice(x, [5, 37], d), axis));
        await agree(gpu, `min ${axis}`, (d) => min(onDevice(x, [5, 37], d), axis));
      }
    });

    test('softmax, logSoftmax and cross-entropy: a row with NaN, one with +∞, one with −∞', async () => {
      const x = planted([4, 29], 2, { nan: [5], inf: [29 + 7], ninf: [58 + 2] });
      await agree(gpu, 'softmax', (d) => softmax(onDevice(x, [4, 29], d)));
      await agree(gpu, 'logSoftmax', (d) => logSoftmax(onDevice(x, [4, 29], d)));
      const labels = Int32Array.from([1, 2, 3, 4]);
      await agree(gpu, 'crossEntropy', (d) => crossEntropy(onDevice(x, [4, 29], d), onDevice(labels, [4], d), { reduction: 'none' }));
    });

    test('norms: rmsNorm and the grouped gated norm', async () => {
      const x = planted([4, 24], 3, { nan: [2], inf: [30], ninf: [50] });
      const w = randomData([24], 4);
      await agree(gpu, 'rmsNorm', (d) => rmsNorm(onDevice(x, [4, 24], d), onDevice(w, [24], d), 1e-5));
      const z = planted([4, 24], 5, { nan: [75] });
      await agree(gpu, 'groupedGatedRmsNorm', (d) =>
        groupedGatedRmsNorm(onDevice(x, [4, 24], d), onDevice(z, [4, 24], d), onDevice(w, [24], d), { groups: 2, eps: 1e-5 }),
      );
    });

    test('top-k, argmax and MoE routing: NaN ranks highest, as on the CPU', async () => {
      const x = planted([3, 19], 6, { nan: [4], inf: [19 + 3], ninf: [38 + 1] });
      await agree(gpu, 'topk', (d) => {
        const r = topk(onDevice(x, [3, 19], d), 5);
        return [r.values, r.indices];
      });
      await agree(gpu, 'argmax', (d) => argmax(onDevice(x, [3, 19], d)));
      const logits = planted([3, 8], 7, { nan: [2], inf: [8 + 5] });
      await agree(gpu, 'moeRoute', (d) => {
        const r = moeRoute(onDevice(logits, [3, 8], d), null, { topK: 2, nGroup: 1, topkGroup: 1, normTopkProb: true, routedScalingFactor: 2.5 });
        return [r.weights, r.indices];
      });
    });

    test('sampling: a row holding NaN or ±∞ gets NON_FINITE_TOKEN, greedy or sampled', async () => {
      const x = planted([4, 33], 8, { nan: [10], inf: [33 + 4], ninf: [66 + 9] });
      for (const options of [{}, { doSample: true, seed: 3, topK: 5, temperature: 0.7 }, { doSample: true, seed: 3, topP: 0.9 }]) {
        const got = Array.from(await sampleTokens(onDevice(x, [4, 33], gpu), options).data());
        const ref = Array.from(await sampleTokens(onDevice(x, [4, 33], cpu), options).data());
        expect(got.slice(0, 3)).toEqual([NON_FINITE_TOKEN, NON_FINITE_TOKEN, NON_FINITE_TOKEN]);
        expect(ref.slice(0, 3)).toEqual([NON_FINITE_TOKEN, NON_FINITE_TOKEN, NON_FINITE_TOKEN]);
        expect(got[3]).not.toBe(NON_FINITE_TOKEN);
      }
    });

    test('matmul, linear and fusedLinear (relu², norm, residual): one NaN weight poisons its output column', async () => {
      const x = randomData([3, 20], 9);
      const w = planted([13, 20], 10, { nan: [20 * 4 + 7], inf: [20 * 9 + 2] });
      await agree(gpu, 'matmul', (d) => matmul(onDevice(x, [3, 20], d), onDevice(planted([20, 13], 11, { nan: [30] }), [20, 13], d)), 1e-5);
      await agree(gpu, 'linear', (d) => linear(onDevice(x, [3, 20], d), onDevice(w, [13, 20], d)), 1e-5);
      for (const rows of [1, 3]) {
        const xr = x.subarray(0, rows * 20);
        await agree(
          gpu,
          `fusedLinear relu² (${rows} rows)`,
          (d) =>
            noGrad(() =>
              fusedLinear(onDevice(xr, [rows, 20], d), onDevice(w, [13, 20], d), {
                activation: 'relu2',
                norm: { weight: onDevice(randomData([20], 12), [20], d), eps: 1e-5 },
                residual: onDevice(randomData([rows, 13], 13), [rows, 13], d),
              }),
            ),
          1e-5,
        );
      }
    });

    test("MoE experts: a NaN in one expert's up projection survives relu²", async () => {
      const [T, H, I, E] = [5, 12, 10, 4];
      const up = planted([E, I, H], 14, { nan: [I * H + 3 * H + 5] });
      const down = randomData([E, H, I], 15);
      const indices = Int32Array.from([0, 1, 1, 2, 3, 1, 2, 0, 1, 3]);
      const weights = randomData([T, 2], 16, { positive: true });
      await agree(
        gpu,
        'moeExperts',
        (d) =>
          noGrad(() =>
            moeExperts(
              onDevice(randomData([T, H], 17), [T, H], d),
              onDevice(indices, [T, 2], d),
              onDevice(weights, [T, 2], d),
              onDevice(up, [E, I, H], d),
              onDevice(down, [E, H, I], d),
            ),
          ),
        1e-5,
      );
    });

    test('attention: a NaN key and an infinite query', async () => {
      const [B, L, Hh, D] = [1, 6, 2, 8];
      const q = planted([B, L, Hh, D], 18, { inf: [3 * Hh * D + 1] });
      const k = planted([B, L, Hh, D], 19, { nan: [2 * Hh * D + 4] });
      const v = randomData([B, L, Hh, D], 20);
      await agree(gpu, 'attention', (d) => attention(onDevice(q, [B, L, Hh, D], d), onDevice(k, [B, L, Hh, D], d), onDevice(v, [B, L, Hh, D], d)));
    });

    test('Mamba: a NaN time step through the clamped decode step, a NaN input through the scan', async () => {
      const [B, Hh, P, G, N, K] = [1, 4, 3, 2, 5, 4];
      const dInner = Hh * P;
      const convDim = dInner + 2 * G * N;
      // in_proj's output z | x | B | C | dt with a NaN, +Infinity and −Infinity raw time step.
      const zxbcdt = randomData([B, dInner + convDim + Hh], 21);
      zxbcdt.set([Number.NaN, 0.1, Infinity, -Infinity], dInner + convDim);
      const run = (d: Device) => {
        const convState = onDevice(randomData([B, convDim, K], 22), [B, convDim, K], d);
        const ssmState = onDevice(randomData([B, Hh, P, N], 23), [B, Hh, P, N], d);
        const y = mambaDecodeStep(onDevice(zxbcdt, [B, dInner + convDim + Hh], d), convState, ssmState, {
          convWeight: onDevice(randomData([convDim, K], 24, { scale: 0.5 }), [convDim, K], d),
          convBias: null,
          dtBias: onDevice(randomData([Hh], 25), [Hh], d),
          aLog: onDevice(randomData([Hh], 30), [Hh], d),
          D: null,
          normWeight: onDevice(randomData([dInner], 31), [dInner], d),
          groups: G,
          eps: 1e-5,
          dtLimit: [0.01, 0.5],
        });
        return [y, convState, ssmState];
      };
      await agree(gpu, 'mambaDecodeStep', run);
      // The chunked scan mixes positions inside a chunk (masked terms are multiplied by 0, and
      // 0·NaN is NaN), so it may mark more positions than the sequential reference: compare only
      // that every non-finite reference value is non-finite here too.
      const L = 7;
      const x = planted([B, L, Hh, P], 26, { nan: [4 * Hh * P + 2] });
      const scan = async (d: Device) =>
        noGrad(() =>
          ssdScan(
            onDevice(x, [B, L, Hh, P], d),
            onDevice(randomData([B, L, Hh], 27, { positive: true, scale: 0.1 }), [B, L, Hh], d),
            onDevice(Float32Array.from([-1, -0.5, -2, -0.1]), [Hh], d),
            onDevice(randomData([B, L, G, N], 28), [B, L, G, N], d),
            onDevice(randomData([B, L, G, N], 29), [B, L, G, N], d),
            { chunkSize: 4 },
          ),
        ).finalState.toFloat32();
      const ref = await scan(cpu);
      const got = await scan(gpu);
      let refBad = 0;
      ref.forEach((r, i) => {
        if (!Number.isFinite(r)) {
          refBad++;
          expect(Number.isFinite(got[i]!), `finalState ${i}`).toBe(false);
        }
      });
      expect(refBad).toBeGreaterThan(0);
    });
  });
}
