// Times the row-wise kernel families (softmax, norms, cumsum, topk/argmax, cross-entropy) on the
// WebGPU device and prints one JSON line per case: median milliseconds per call and the GB/s of
// the input it reads once. Usage: bun scripts/bench-rowwise.ts [--quick]
import {
  argmax,
  backward,
  crossEntropy,
  cumsum,
  getWebGpuDevice,
  groupedGatedRmsNorm,
  logSoftmax,
  randint,
  randn,
  rmsNorm,
  softmax,
  tidy,
  topk,
  type Tensor,
} from '@nemotron-ts/kernels';

const device = await getWebGpuDevice();
const quick = process.argv.includes('--quick');
const repeats = quick ? 3 : 7;

interface Case {
  name: string;
  shape: number[];
  /** Bytes of the main input, for the bandwidth figure. */
  bytes: number;
  run: () => void;
}

/** Drops the gradients a timed backward accumulated, so every repeat starts alike. */
function clearGrads(...leaves: Tensor[]): void {
  for (const t of leaves) {
    t.grad?.dispose();
    t.grad = null;
  }
}

const cases: Case[] = [];
function add(name: string, shape: number[], dtype: 'f32' | 'bf16', make: (x: Tensor) => () => void): void {
  const x = randn(shape, { device, dtype });
  cases.push({ name, shape, bytes: x.size * (dtype === 'bf16' ? 2 : 4), run: make(x) });
}

add('softmax', [4096, 4096], 'f32', (x) => () => tidy(() => void softmax(x)));
add('logSoftmax', [8, 131072], 'f32', (x) => () => tidy(() => void logSoftmax(x)));
add('rmsNorm', [4096, 2688], 'bf16', (x) => {
  const w = randn([2688], { device });
  return () => tidy(() => void rmsNorm(x, w, 1e-5));
});
add('rmsNorm fwd+bwd', [1024, 2688], 'f32', (x) => {
  const w = randn([2688], { device }).requiresGrad_();
  const xg = x.requiresGrad_();
  const g = randn([1024, 2688], { device });
  return () =>
    tidy(() => {
      backward(rmsNorm(xg, w, 1e-5), { grad: g });
      clearGrads(xg, w);
    });
});
add('groupedGatedRmsNorm', [4096, 4096], 'f32', (y) => {
  const z = randn([4096, 4096], { device });
  const w = randn([4096], { device });
  return () => tidy(() => void groupedGatedRmsNorm(y, z, w, { groups: 8, eps: 1e-5 }));
});
add('cumsum', [64, 65536], 'f32', (x) => () => tidy(() => void cumsum(x)));
add('argmax (greedy decode)', [1, 131072], 'f32', (x) => () => tidy(() => void argmax(x)));
add('topk k=50 (sampling)', [1, 131072], 'f32', (x) => () => tidy(() => void topk(x, 50)));
add('topk k=1000', [1, 131072], 'f32', (x) => () => tidy(() => void topk(x, 1000)));
add('topk k=22 (MoE routing)', [4096, 512], 'f32', (x) => () => tidy(() => void topk(x, 22)));
add('crossEntropy fwd', [512, 131072], 'bf16', (x) => {
  const labels = randint(0, 131072, [512], { device });
  return () => tidy(() => void crossEntropy(x, labels));
});
add('crossEntropy fwd+bwd', [256, 131072], 'f32', (x) => {
  const labels = randint(0, 131072, [256], { device });
  const xg = x.requiresGrad_();
  return () =>
    tidy(() => {
      backward(crossEntropy(xg, labels));
      clearGrads(xg);
    });
});

for (const c of cases) {
  c.run();
  await device.sync();
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    c.run();
    await device.sync();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const ms = times[Math.floor(times.length / 2)]!;
  console.log(
    JSON.stringify({ op: c.name, shape: c.shape, ms: Number(ms.toFixed(3)), inputGBps: Number((c.bytes / ms / 1e6).toFixed(2)), device: device.describe() }),
  );
}
