// Kernel benchmark: one JSON object per line on stdout (progress notes on stderr).
//   bun run bench:kernels            all sections (a few minutes on 2 cores with llvmpipe)
//   bun run bench:kernels -- --quick  skips the Nemotron-H-8B shapes
// Times are wall clock around `device.sync()` after a warm-up run; reported values are medians
// (per call; fast cases record several calls per sync, see `measure`), with the best sample as
// `best_*` where the shared machine's speed swings between samples.
import { add, full, initDevice, linear, matmul, randn, type Tensor } from '@nemotron-ts/kernels';
import { Params } from '@nemotron-ts/kernels/internals';

const quick = process.argv.includes('--quick');
const note = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);
const emit = (record: Record<string, string | number>) => console.log(JSON.stringify(record));
const initial = await initDevice();
if (initial.kind !== 'webgpu') {
  emit({ bench: 'skipped', reason: `the default device is ${initial.describe()}; kernel benchmarks need WebGPU` });
  process.exit(0);
}
const device = initial;
note(`device: ${device.describe()}`);

/**
 * Median wall-clock ms per call of `run` (which returns tensors to dispose), after a warm-up call.
 * Fast cases record several calls per `sync()` so the wait for the device does not dominate (as
 * in a model, where many kernels share one submit); slow cases take at least three samples.
 */
async function measure(run: () => Tensor | Tensor[]): Promise<{ ms: number; bestMs: number; firstMs: number }> {
  const batch = async (calls: number) => {
    const t0 = performance.now();
    const outs: Tensor[] = [];
    for (let i = 0; i < calls; i++) outs.push(...[run()].flat());
    await device.sync();
    const ms = (performance.now() - t0) / calls;
    for (const t of outs) t.dispose();
    return ms;
  };
  const firstMs = await batch(1);
  const probe = await batch(1);
  const calls = Math.max(1, Math.min(64, Math.floor(20 / probe)));
  const times = [probe];
  const samples = Math.max(3, Math.min(15, Math.floor(1500 / (probe * calls))));
  for (let i = 0; i < samples; i++) times.push(await batch(calls));
  times.sort((x, y) => x - y);
  return { ms: times[Math.floor(times.length / 2)]!, bestMs: times[0]!, firstMs };
}

const round = (x: number, digits = 1) => Number(x.toFixed(digits));

// --- matmul f32 1024³: plain matmul(a, b), b [K, N] (re-laid out on every call where needed)
{
  const a = randn([1024, 1024], { device });
  const b = randn([1024, 1024], { device });
  const { ms, bestMs } = await measure(() => matmul(a, b));
  const flops = 2 * 1024 ** 3;
  emit({ bench: 'matmul', m: 1024, n: 1024, k: 1024, dtype: 'f32', gflops: round(flops / ms / 1e6), best_gflops: round(flops / bestMs / 1e6) });
  a.dispose();
  b.dispose();
}

/** x [M, K] · weightᵀ with a frozen bf16 weight [N, K] (what model layers run). */
async function linearCase(fields: Record<string, string | number>, weight: Tensor, m: number): Promise<void> {
  const [n, k] = weight.shape as [number, number];
  const x = randn([m, k], { device });
  const { ms, bestMs, firstMs } = await measure(() => linear(x, weight));
  x.dispose();
  const weightBytes = n * k * (weight.dtype === 'bf16' ? 2 : 4);
  emit({
    bench: 'matmul',
    ...fields,
    m,
    n,
    k,
    dtype: weight.dtype,
    gflops: round((2 * m * n * k) / ms / 1e6),
    best_gflops: round((2 * m * n * k) / bestMs / 1e6),
    gbps: round(weightBytes / ms / 1e6),
    ms: round(ms, 3),
    first_ms: round(firstMs, 1),
  });
}

// --- the prefill shape and decode GEMV
{
  const w = full([4096, 1024], 0.01, { dtype: 'bf16', device });
  await linearCase({ shape: 'prefill' }, w, 512);
  w.dispose();
  for (const dtype of ['bf16', 'f32'] as const) {
    const g = full([4096, 4096], 0.01, { dtype, device });
    const x = randn([1, 4096], { device });
    const { ms, bestMs } = await measure(() => linear(x, g));
    const bytes = 4096 * 4096 * (dtype === 'bf16' ? 2 : 4);
    emit({ bench: 'gemv', n: 4096, k: 4096, dtype, gbps: round(bytes / ms / 1e6), best_gbps: round(bytes / bestMs / 1e6), us: round(ms * 1000, 0) });
    x.dispose();
    g.dispose();
  }
}

// --- LLM shapes: bench-small (/work/shared/bench/small.config.json) and Nemotron-H-8B, M = 1, 8, 512
const models: { model: string; layers: [string, number, number][] }[] = [
  {
    model: 'bench-small',
    layers: [
      ['in_proj', 2320, 512],
      ['mlp_up', 2048, 512],
      ['mlp_down', 512, 2048],
      ['attn_q', 512, 512],
      ['attn_kv', 128, 512],
      ['lm_head', 16384, 512],
    ],
  },
  {
    model: 'nemotron-h-8b',
    layers: [
      ['in_proj', 18560, 4096],
      ['mlp_up', 21504, 4096],
      ['mlp_down', 4096, 21504],
      ['lm_head', 131072, 4096],
    ],
  },
];
for (const { model, layers } of models) {
  if (quick && model !== 'bench-small') continue;
  for (const [layer, n, k] of layers) {
    note(`${model} ${layer} ${k}→${n}`);
    // Speed does not depend on the values: a fill kernel makes even the 1 GiB lm_head instantly.
    const w = full([n, k], 0.01, { dtype: 'bf16', device });
    for (const m of [1, 8, 512]) await linearCase({ model, layer }, w, m);
    w.dispose();
  }
}

// --- elementwise add, 16 Mi f32 elements (bytes moved: two reads and a write)
{
  const elements = 16 * 1024 * 1024;
  const a = randn([elements], { device });
  const b = randn([elements], { device });
  const { ms } = await measure(() => add(a, b));
  emit({ bench: 'elementwise', op: 'add', elements, gbps: round((3 * 4 * elements) / ms / 1e6) });
  a.dispose();
  b.dispose();
}

// --- per-dispatch overhead of the batched encoder: a trivial kernel recorded many times, one sync;
// then the same through a full op (`add`: shape checks, allocation, kernel choice on top).
{
  const x = randn([64], { device });
  const y = randn([64], { device });
  const source = `${new Params().u32('n', 64).wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) { if (g.x < P.n) { y[g.x] = x[g.x] + 1.0; } }`;
  const bindings = [device.bind(x.storage, 0, 64).range, device.bind(y.storage, 0, 64).range];
  const count = 2000;
  const raw = await measure(() => {
    for (let i = 0; i < count; i++) device.run({ name: 'bench_dispatch', source, params: new Params().u32('n', 64), bindings, workgroups: [1, 1, 1] });
    return [];
  });
  emit({ bench: 'dispatch', us: round((raw.ms * 1000) / count, 1), dispatches: count });
  const op = await measure(() => {
    const outs: Tensor[] = [];
    for (let i = 0; i < count; i++) outs.push(add(x, 1));
    return outs;
  });
  emit({ bench: 'dispatch', op: 'add', us: round((op.ms * 1000) / count, 1), dispatches: count });
  x.dispose();
  y.dispose();
}

// --- the host on its own, to tell a busy machine from a slow kernel: a plain JS loop adding 16 Mi f32
{
  const n = 16 * 1024 * 1024;
  const a = new Float32Array(n).fill(1);
  const b = new Float32Array(n).fill(2);
  const c = new Float32Array(n);
  const times: number[] = [];
  for (let rep = 0; rep < 5; rep++) {
    const t0 = performance.now();
    for (let i = 0; i < n; i++) c[i] = a[i]! + b[i]!;
    times.push(performance.now() - t0);
  }
  times.sort((x, y) => x - y);
  emit({ bench: 'host', op: 'js-add', elements: n, gbps: round((3 * 4 * n) / times[2]! / 1e6) });
}
process.exit(0);
