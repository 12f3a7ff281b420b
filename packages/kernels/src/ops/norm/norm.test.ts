import { describe, expect, test } from 'bun:test';
import { backward } from '../../autograd/backward';
import { tensor } from '../../creation';
import { getCpuDevice, type Device } from '../../device/device';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { WGSL_ULP, expectClose, f32Atol, gradcheck, onDevice, poisoned, randomData, sumRoundings, testGpu, withBindingLimit } from '../../testing';
import { add, mul, rsqrt, silu } from '../elementwise/elementwise';
import { reshape } from '../layout/layout';
import { mean } from '../reduce/reduce';
import { groupedGatedRmsNorm, rmsNorm } from './norm';

const gpu = await testGpu();
const cpu = getCpuDevice();
type Float = 'f32' | 'bf16';

interface Case {
  rows: number;
  d: number;
  groups: number;
}

/** Forward and backward of the (gated) norm on `device`: output and the gradients of every input. */
async function run(device: Device, c: Case, gated: boolean, dtype: Float, wDtype: Float, seed = 1) {
  const shape = [c.rows, c.d];
  const x = onDevice(randomData(shape, seed, { dtype, scale: 2 }), shape, device, dtype).requiresGrad_();
  const z = onDevice(randomData(shape, seed + 1, { dtype, scale: 3 }), shape, device, dtype).requiresGrad_();
  const w = onDevice(randomData([c.d], seed + 2, { dtype: wDtype }), [c.d], device, wDtype).requiresGrad_();
  const out = poisoned(device, () => (gated ? groupedGatedRmsNorm(x, z, w, { groups: c.groups, eps: 1e-5 }) : rmsNorm(x, w, 1e-5)));
  poisoned(device, () => backward(out, { grad: onDevice(randomData(shape, seed + 3), shape, device) }));
  const grads = gated ? [x.grad!, z.grad!, w.grad!] : [x.grad!, w.grad!];
  return { out: await out.toFloat32(), grads: await Promise.all(grads.map((g) => g.toFloat32())) };
}

/**
 * The tolerance model (testing.ts) applied to the norm's gradients: dx = r·w⊙g − x·r³·mean(x⊙w⊙g)
 * with r = rsqrt(mean(v²) + eps) over a group of n channels. r's relative error: a sum of n squares,
 * the mean and eps, and inverseSqrt's ULPs; it enters the second term cubed. The terms cancel almost
 * completely at n = 1, so the magnitude is that of the terms (v = the normalised input; the gated
 * norm's v = y⊙silu(z) is bounded by |y|·|z|).
 */
function gradientAtol(c: Case, gated: boolean, dtype: Float, wDtype: Float, seed = 1): number {
  const n = c.d / c.groups;
  const y = randomData([c.rows, c.d], seed, { dtype, scale: 2 });
  const z = randomData([c.rows, c.d], seed + 1, { dtype, scale: 3 });
  const w = randomData([c.d], seed + 2, { dtype: wDtype });
  const g = randomData([c.rows, c.d], seed + 3);
  let magnitude = 0;
  for (let row = 0; row < c.rows; row++) {
    for (let k = 0; k < c.groups; k++) {
      const at = (j: number) => row * c.d + k * n + j;
      const v = (j: number) => Math.abs(y[at(j)]!) * (gated ? Math.abs(z[at(j)]!) : 1);
      let squares = 0;
      let s = 0;
      for (let j = 0; j < n; j++) {
        squares += v(j) ** 2 / n;
        s += (v(j) * Math.abs(w[k * n + j]! * g[at(j)]!)) / n;
      }
      const r = 1 / Math.sqrt(squares + 1e-5);
      for (let j = 0; j < n; j++) magnitude = Math.max(magnitude, r * Math.abs(w[k * n + j]! * g[at(j)]!) + v(j) * r ** 3 * s);
    }
  }
  const rRoundings = sumRoundings(n) + 2 + WGSL_ULP.inverseSqrt;
  const roundings = 4 * rRoundings + sumRoundings(n) + 7 + (gated ? 2 * WGSL_ULP.exp + 4 : 0);
  return f32Atol(roundings, magnitude);
}

async function compare(c: Case, gated: boolean, dtype: Float, wDtype: Float): Promise<void> {
  const ref = await run(cpu, c, gated, dtype, wDtype);
  const got = await run(gpu!, c, gated, dtype, wDtype);
  const what = `${gated ? 'gated' : 'rms'} [${c.rows},${c.d}]/${c.groups} ${dtype}/${wDtype}`;
  expectClose(got.out, ref.out, { rtol: 3e-6, what });
  const atol = gradientAtol(c, gated, dtype, wDtype);
  got.grads.forEach((g, i) => expectClose(g, ref.grads[i]!, { rtol: 1e-5, atol, what: `${what} grad ${i}` }));
}

describe('norms: WebGPU vs CPU reference', () => {
  const rmsCases: Case[] = [1, 13, 129, 5000].flatMap((d) => [1, 7, 37].map((rows) => ({ rows, d, groups: 1 })));
  // 150 rows: several runs of the weight-gradient kernel.
  const gatedCases: Case[] = [
    { rows: 7, d: 96, groups: 3 },
    { rows: 37, d: 129, groups: 3 },
    { rows: 1, d: 13, groups: 1 },
    { rows: 150, d: 40, groups: 8 },
    { rows: 3, d: 5000, groups: 8 },
  ];
  // f32 rows with groups of whole vec4s (d = 5000, 96/3) take the vec4 kernel, with an f32 or a bf16 weight.
  for (const [dtype, wDtype] of [
    ['f32', 'f32'],
    ['f32', 'bf16'],
    ['bf16', 'bf16'],
    ['bf16', 'f32'],
  ] as const) {
    test.if(gpu !== null)(`rmsNorm x ${dtype}, weight ${wDtype}`, async () => {
      for (const c of rmsCases) await compare(c, false, dtype, wDtype);
      await compare({ rows: 150, d: 33, groups: 1 }, false, dtype, wDtype);
    });
    test.if(gpu !== null)(`groupedGatedRmsNorm ${dtype}, weight ${wDtype}`, async () => {
      for (const c of gatedCases) await compare(c, true, dtype, wDtype);
    });
  }

  test.if(gpu !== null)('rows larger than one storage binding are processed in blocks', async () => {
    const device = gpu as WebGpuDevice;
    await withBindingLimit(device, 64 * 1024, async () => {
      await compare({ rows: 37, d: 5000, groups: 1 }, false, 'f32', 'f32');
      await compare({ rows: 37, d: 5000, groups: 5 }, true, 'f32', 'f32');
    });
  });
});

describe('norm CPU reference and gradients', () => {
  test('hand-checked rmsNorm', async () => {
    // mean([3², 4²]) = 12.5
    const x = tensor([3, 4], [1, 2], { device: cpu });
    const w = tensor([1, 2], [2], { device: cpu });
    const rms = Math.sqrt(12.5);
    expectClose(await rmsNorm(x, w, 0).toFloat32(), [3 / rms, 8 / rms], { rtol: 1e-7 });
    expectClose(await rmsNorm(x, w, 0.5).toFloat32(), [3 / Math.sqrt(13), 8 / Math.sqrt(13)], { rtol: 1e-7 });
  });

  test('grouped gated norm matches the composition silu-gate → per-group RMS → weight', async () => {
    const [rows, d, groups, eps] = [5, 96, 3, 1e-5];
    const y = onDevice(randomData([rows, d], 4), [rows, d], cpu);
    const z = onDevice(randomData([rows, d], 5, { scale: 3 }), [rows, d], cpu);
    const w = onDevice(randomData([d], 6), [d], cpu);
    const v = reshape(mul(y, silu(z)), [rows, groups, d / groups]);
    const normed = mul(v, rsqrt(add(mean(mul(v, v), -1, { keepdim: true }), eps)));
    const expected = mul(reshape(normed, [rows, d]), w);
    const got = groupedGatedRmsNorm(y, z, w, { groups, eps });
    expectClose(await got.toFloat32(), await expected.toFloat32(), { rtol: 1e-6 });
    // Normalising over all of d instead would differ.
    const whole = groupedGatedRmsNorm(y, z, w, { groups: 1, eps });
    expect(Math.abs((await whole.toFloat32())[0]! - (await got.toFloat32())[0]!)).toBeGreaterThan(1e-4);
  });

  test('errors name the op and the shapes', () => {
    const x = tensor(new Float32Array(20), [2, 10], { device: cpu });
    const w = tensor(new Float32Array(10), [10], { device: cpu });
    expect(() => groupedGatedRmsNorm(x, x, w, { groups: 3, eps: 1e-5 })).toThrow(
      /groupedGatedRmsNorm: the last dim 10 of \[2, 10\] is not divisible by groups = 3/,
    );
    expect(() => rmsNorm(x, tensor(new Float32Array(4), [4], { device: cpu }), 1e-5)).toThrow(/rmsNorm: weight must be an f32 or bf16 vector \[10\]/);
    expect(() => groupedGatedRmsNorm(x, tensor(new Float32Array(10), [10], { device: cpu }), w, { groups: 2, eps: 1e-5 })).toThrow(
      /y \[2, 10\] and gate z \[10\]/,
    );
  });

  test('gradcheck', async () => {
    const shape = [3, 12];
    const x = { values: randomData(shape, 7), shape };
    const z = { values: randomData(shape, 8, { scale: 2 }), shape };
    const w = { values: randomData([12], 9), shape: [12] };
    await gradcheck((a, b) => rmsNorm(a!, b!, 1e-5), [x, w]);
    await gradcheck((a, b, c) => groupedGatedRmsNorm(a!, b!, c!, { groups: 3, eps: 1e-5 }), [x, z, w]);
    await gradcheck((a, b, c) => groupedGatedRmsNorm(a!, b!, c!, { groups: 1, eps: 1e-5 }), [x, z, w]);
  });
});
