// Attention kernel timings on the default WebGPU device, one JSON line per case (not a test).
// Shapes are bench-small's attention layer: 8 q heads / 2 kv heads × 64, batch 1. Prefill runs the
// 'bshd' layout (projections, causal); decode reads one query against the 'bhsd' KV cache through
// kvLength, as generation does; train runs prefill with q, k, v requiring grad plus its backward
// (the three gradients). `ms` is the median wall time per call over repetitions of `iters`
// back-to-back calls, `minMs` the fastest repetition; `cpuMs` the process CPU time per call
// (llvmpipe's threads included), steadier than wall time on a machine shared with other work.
//   bun scripts/bench-attention.ts [--iters N] [--reps N]
import { attention, backward, getWebGpuDevice, noGrad, randn, type Tensor } from '@nemotron-ts/kernels';

const args = process.argv.slice(2);
const flag = (name: string, fallback: number) => {
  const at = args.indexOf(name);
  return at >= 0 ? Number(args[at + 1]) : fallback;
};
const iters = flag('--iters', 5);
const reps = flag('--reps', 7);

const device = await getWebGpuDevice();
const qHeads = 8;
const kvHeads = 2;
const headDim = 64;

interface Timing {
  ms: number;
  minMs: number;
  cpuMs: number;
}

async function time(run: () => Tensor): Promise<Timing> {
  // The first calls compile the kernels.
  run().dispose();
  await device.sync();
  const samples: number[] = [];
  const cpu0 = process.cpuUsage();
  for (let r = 0; r < reps; r++) {
    const start = performance.now();
    for (let i = 0; i < iters; i++) run().dispose();
    await device.sync();
    samples.push((performance.now() - start) / iters);
  }
  const cpu = process.cpuUsage(cpu0);
  samples.sort((a, b) => a - b);
  return { ms: round(samples[Math.floor(samples.length / 2)]!), minMs: round(samples[0]!), cpuMs: round((cpu.user + cpu.system) / 1000 / (reps * iters)) };
}

function report(phase: string, lq: number, lk: number, layout: string, t: Timing): void {
  console.log(JSON.stringify({ bench: 'attention', phase, lq, lk, qHeads, kvHeads, headDim, layout, ...t, iters, reps, device: device.describe() }));
}

await noGrad(async () => {
  for (const length of [128, 512]) {
    const q = randn([1, length, qHeads, headDim], { device });
    const k = randn([1, length, kvHeads, headDim], { device });
    const v = randn([1, length, kvHeads, headDim], { device });
    report('prefill', length, length, 'bshd', await time(() => attention(q, k, v)));
    for (const t of [q, k, v]) t.dispose();
  }
  const capacity = 4096;
  const kCache = randn([1, kvHeads, capacity, headDim], { device });
  const vCache = randn([1, kvHeads, capacity, headDim], { device });
  const q = randn([1, 1, qHeads, headDim], { device });
  for (const depth of [128, 512, 2048]) {
    report('decode', 1, depth, 'bhsd', await time(() => attention(q, kCache, vCache, { kvLayout: 'bhsd', kvLength: depth })));
  }
  for (const t of [q, kCache, vCache]) t.dispose();
});

for (const length of [128, 512]) {
  const [q, k, v] = [qHeads, kvHeads, kvHeads].map((heads) => randn([1, length, heads, headDim], { device }).requiresGrad_());
  const grad = randn([1, length, qHeads, headDim], { device });
  const step = () => {
    const out = attention(q!, k!, v!);
    backward(out, { grad });
    for (const t of [q!, k!, v!]) {
      t.grad!.dispose();
      t.grad = null;
    }
    return out;
  };
  report('train', length, length, 'bshd', await time(step));
  for (const t of [q!, k!, v!, grad]) t.dispose();
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}
