// Mamba2 kernel timings on the default WebGPU device: one JSON line per kernel and shape
// (`*_grad`: forward and backward of the training path at L=512, every input requiring grad).
// Shapes are bench-small's Mamba layer (H=16 heads of P=64, G=8 groups, N=128, chunk 128, K=4);
// `BENCH_REPS` sets the repetitions (default 5, after one warm-up run that also compiles). `ms` is
// wall time per call; `cpuMs` the process CPU time per call (llvmpipe's threads included), which
// is steadier than wall time on a machine shared with other work.
import {
  backward,
  causalConv1d,
  dispose,
  Generator,
  getWebGpuDevice,
  mambaDecodeStep,
  type MambaDecodeOptions,
  noGrad,
  ssdScan,
  tensor,
  tidy,
  type Tensor,
  type WebGpuDevice,
  zeroGrad,
} from '@nemotron-ts/kernels';

const device = await getWebGpuDevice();
const reps = Number(process.env.BENCH_REPS ?? 5);
const gen = new Generator(1);

function random(shape: number[], low: number, high: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = low + (high - low) * gen.uniform();
  return tensor(v, shape, { device });
}

async function time(d: WebGpuDevice, fn: () => void, options: { grad?: boolean } = {}): Promise<{ ms: number; cpuMs: number }> {
  const once = () => (options.grad ? tidy(fn) : noGrad(() => tidy(fn)));
  once();
  await d.sync();
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  for (let i = 0; i < reps; i++) once();
  await d.sync();
  const cpu = process.cpuUsage(c0);
  const round = (v: number) => +v.toFixed(3);
  return { ms: round((performance.now() - t0) / reps), cpuMs: round((cpu.user + cpu.system) / 1000 / reps) };
}

const H = 16;
const P = 64;
const G = 8;
const N = 128;
const chunk = 128;
const K = 4;
const channels = H * P + 2 * G * N;

for (const L of [512, 2048]) {
  const x = random([1, L, H, P], -1, 1);
  const dt = random([1, L, H], 1e-3, 0.1);
  const A = random([H], -16, -1);
  const B = random([1, L, G, N], -1, 1);
  const C = random([1, L, G, N], -1, 1);
  const D = random([H], -1, 1);
  const scan = await time(device, () => void ssdScan(x, dt, A, B, C, { chunkSize: chunk, D }));
  console.log(JSON.stringify({ bench: 'ssd_scan', L, H, P, G, N, chunk, ...scan }));

  const xc = random([1, L, channels], -1, 1);
  const w = random([channels, K], -0.5, 0.5);
  const bias = random([channels], -0.5, 0.5);
  const conv = await time(device, () => void causalConv1d(xc, w, bias));
  console.log(JSON.stringify({ bench: 'causal_conv1d', L, C: channels, K, ...conv }));
  if (L === 512) {
    const scanInputs = [x, dt, A, B, C, D];
    const convInputs = [xc, w, bias];
    for (const t of [...scanInputs, ...convInputs]) t.requiresGrad_();
    const scanGrad = await time(
      device,
      () => {
        const { y } = ssdScan(x, dt, A, B, C, { chunkSize: chunk, D });
        backward(y, { grad: y });
        zeroGrad(scanInputs);
      },
      { grad: true },
    );
    console.log(JSON.stringify({ bench: 'ssd_scan_grad', L, H, P, G, N, chunk, ...scanGrad }));
    const convGrad = await time(
      device,
      () => {
        const { y } = causalConv1d(xc, w, bias);
        backward(y, { grad: y });
        zeroGrad(convInputs);
      },
      { grad: true },
    );
    console.log(JSON.stringify({ bench: 'causal_conv1d_grad', L, C: channels, K, ...convGrad }));
  }
  dispose([x, dt, A, B, C, D, xc, w, bias]);
}

{
  // One decode step as the model runs it on WebGPU: the fused conv update, dt transform, state
  // update, gate and grouped RMSNorm (the separate decode kernels it replaced are gone).
  const dInner = H * P;
  const zxbcdt = random([1, dInner + channels + H], -1, 1);
  const convState = random([1, channels, K], -1, 1);
  const ssmState = random([1, H, P, N], -1, 1);
  const options: MambaDecodeOptions = {
    convWeight: random([channels, K], -0.5, 0.5),
    convBias: random([channels], -0.5, 0.5),
    dtBias: random([H], -1, 1),
    aLog: random([H], 0, 2),
    D: random([H], -1, 1),
    normWeight: random([dInner], 0.5, 1.5),
    groups: G,
    eps: 1e-5,
    dtLimit: null,
  };
  const step = await time(device, () => void mambaDecodeStep(zxbcdt, convState, ssmState, options));
  console.log(JSON.stringify({ bench: 'mamba_decode_step', B: 1, H, P, G, N, K, ...step }));
}
process.exit(0);
