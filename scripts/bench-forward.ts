// Prefill throughput of the whole model on the default device: bench-small (and bench-moe) with
// random weights (the project's init), f32 and bf16 weights, one 512-token prompt, batch 1, logits
// for the last position only (what generation asks for). One JSON line per case after a warm-up
// run (which also compiles every kernel): the median of BENCH_REPS runs (default 3) — wall time,
// process CPU time (llvmpipe's threads included; steadier on a shared machine), tokens/s, and the
// best run's tokens/s — then a line with the wall time per layer kind from one more run
// synchronised after every block. peak_rss_bytes: the process's resident high-water mark so far
// (getrusage maxrss; models run in one process, so later rows include earlier peaks).
// With --profile (devices with the timestamp-query feature), one more prefill runs with every
// dispatch timed on the GPU: one JSON line per kernel name, largest total first. On cpu:native,
// every native call is timed instead (wall and process CPU ms per entry point and GEMM shape), and a
// line "outside native" holds the rest of the run (TypeScript ops, allocation, dispatch).
// Usage: bun scripts/bench-forward.ts [--small-only] [--profile]
import { join } from 'node:path';
import { NemotronHConfig } from '@nemotron-ts/core';
import { readConfigJson } from '@nemotron-ts/hub';
import { deviceLabel, Generator, initDevice, narrow, noGrad, tensor, tidy, type FloatDType, type Tensor } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../src';
import { profileNativeCalls } from './support/native-profile';

const device = await initDevice();
const reps = Number(process.env.BENCH_REPS ?? 3);
const tokens = 512;
const models = process.argv.includes('--small-only') ? ['small'] : ['small', 'moe'];
const profile = process.argv.includes('--profile');
if (profile && !(device.kind === 'cpu' && device.native) && (device.kind !== 'webgpu' || !device.canProfileKernels)) {
  console.error(
    `--profile needs cpu:native or a WebGPU device with the 'timestamp-query' feature; ${device.describe()} has neither (try NEMOTRON_BACKEND=vulkan)`,
  );
  process.exit(2);
}

for (const name of models) {
  const path = join(import.meta.dir, '..', 'bench', `${name}.config.json`);
  const config = NemotronHConfig.fromJSON(await readConfigJson(path), { source: path });
  for (const dtype of ['f32', 'bf16'] as FloatDType[]) {
    // Frozen weights: inference, and the matmul keeps re-laid-out copies of weights that cannot change.
    const model = NemotronHForCausalLM.fromConfig(config, { seed: 0, device, dtype }).eval().requiresGrad_(false);
    const gen = new Generator(1);
    const ids = tensor(
      Int32Array.from({ length: tokens }, () => Math.floor(gen.uniform() * config.vocabSize)),
      [1, tokens],
      { device },
    );
    const prefill = async (): Promise<{ ms: number; cpuMs: number }> => {
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      const { logits } = noGrad(() => model.forward({ inputIds: ids, logitsToKeep: 1 }));
      await logits.data();
      logits.dispose();
      const cpu = process.cpuUsage(c0);
      return { ms: performance.now() - t0, cpuMs: (cpu.user + cpu.system) / 1000 };
    };
    await prefill();
    const runs: { ms: number; cpuMs: number }[] = [];
    for (let i = 0; i < reps; i++) runs.push(await prefill());
    const { ms, cpuMs } = runs.sort((a, b) => a.ms - b.ms)[Math.floor(runs.length / 2)]!;
    const bench = `bench-${name}`;
    console.log(
      JSON.stringify({
        bench: 'prefill',
        model: bench,
        dtype,
        device: deviceLabel(device),
        tokens,
        ms: round(ms),
        cpu_ms: round(cpuMs),
        tokens_per_s: Math.round((tokens * 1000) / ms),
        best_tokens_per_s: Math.round((tokens * 1000) / runs[0]!.ms),
        peak_rss_bytes: process.resourceUsage().maxRSS * 1024,
      }),
    );
    console.log(JSON.stringify({ bench: 'prefill_breakdown', model: bench, dtype, device: deviceLabel(device), tokens, ms: await breakdown(model, ids) }));
    if (profile) await kernelProfile(bench, dtype, () => prefill());
    ids.dispose();
    model.dispose();
    Bun.gc(true); // the next model's peak_rss_bytes should not include this one's freed weights
  }
}

/** Milliseconds per layer kind (summed over layers), the embedding lookup and the head. */
async function breakdown(model: NemotronHForCausalLM, ids: Tensor): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  const timed = async (what: string, fn: () => Tensor): Promise<Tensor> => {
    const t0 = performance.now();
    const t = noGrad(fn);
    await device.sync();
    out[what] = round((out[what] ?? 0) + performance.now() - t0);
    return t;
  };
  let h = await timed('embedding', () => model.model.embeddings.forward(ids));
  for (const layer of model.model.layers) {
    const next = await timed(layer.kind, () => layer.forward(h));
    h.dispose();
    h = next;
  }
  const logits = await timed('norm_f+lm_head', () => tidy(() => model.lmHead.forward(narrow(model.model.normF.forward(h), 1, tokens - 1, 1))));
  h.dispose();
  logits.dispose();
  return out;
}

/** One kernel's line of a profile: its calls, `times` (ms, rounded) and its share of the total. */
function profileLine(model: string, dtype: string, kernel: string, calls: number, times: Record<string, number>, share: number): void {
  const rounded = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, round(v)]));
  console.log(JSON.stringify({ bench: 'prefill_kernel_profile', model, dtype, tokens, kernel, calls, ...rounded, share: +share.toFixed(3) }));
}

/** One prefill with every dispatch timed on the GPU (or every native call): a JSON line per kernel name. */
async function kernelProfile(model: string, dtype: string, run: () => Promise<{ ms: number; cpuMs: number }>): Promise<void> {
  if (device.kind === 'cpu') {
    if (!device.native) return;
    let total = { ms: 0, cpuMs: 0 };
    const calls = await profileNativeCalls(device.native, async () => {
      total = await run();
    });
    const outside = {
      key: 'outside native',
      calls: 0,
      ms: total.ms - calls.reduce((a, c) => a + c.ms, 0),
      cpuMs: total.cpuMs - calls.reduce((a, c) => a + c.cpuMs, 0),
    };
    for (const c of [...calls, outside]) profileLine(model, dtype, c.key, c.calls, { ms: c.ms, cpu_ms: c.cpuMs }, c.ms / total.ms);
    return;
  }
  const { kernels } = await device.profileKernels(run);
  const total = kernels.reduce((a, k) => a + k.gpuMs, 0);
  for (const k of kernels) profileLine(model, dtype, k.kernel, k.calls, { gpu_ms: k.gpuMs }, k.gpuMs / total);
}

function round(v: number): number {
  return +v.toFixed(1);
}
