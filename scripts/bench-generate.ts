// Generation throughput on the default device: bench-small (bench/small.config.json, the project's
// random init) with f32 and bf16 weights, batch 1, greedy. One JSON line per measurement:
//   {"bench":"prefill","model":"bench-small","dtype":…,"depth":512,"tokens_per_s":…,"peak_bytes":…}
//   {"bench":"decode", "model":"bench-small","dtype":…,"depth":N,  "tokens_per_s":…,"peak_bytes":…}
// prefill: a 512-token prompt through the cache (logits of the last position, first token chosen),
// best of BENCH_REPS (default 3) runs after a warm-up. decode: steady-state steps per second with N
// positions already cached (N = 128, 512, 2048), timed from the 4th to the last of 64 generated
// tokens (the first steps compile, run unrecorded and record); depths interleaved, best of
// BENCH_REPS each, so contention on a shared machine hits every depth alike. Also wall and process CPU ms per token (llvmpipe's
// threads included) and the device pool's peak bytes (weights, cache, temporaries) plus the cached
// weight textures. rss_bytes is the resident set when the row is printed, peak_rss_bytes the process's
// high-water mark so far (getrusage maxrss: weights, Bun's heap, native buffers; run one --dtype per
// process for that dtype's own peak). --model moe runs bench-moe (bench/moe.config.json) instead.
// Usage: bun scripts/bench-generate.ts [--model small|moe] [--dtype f32|bf16] [--depth N[,N…]] [--prefill-only | --decode-only]
import { join } from 'node:path';
import { NemotronHConfig } from '@nemotron-ts/core';
import { readConfigJson } from '@nemotron-ts/hub';
import { deviceLabel, Generator, initDevice, matmulTextureMemoryStats, type FloatDType } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../src';

const device = await initDevice();
const arg = (name: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const dtypes = (arg('dtype') ? [arg('dtype')] : ['f32', 'bf16']) as FloatDType[];
const depths = arg('depth') ? arg('depth')!.split(',').map(Number) : [128, 512, 2048];
if (depths.some((d) => !Number.isInteger(d) || d < 1)) throw new Error(`--depth must be positive integers separated by commas, got '${arg('depth')}'`);
const reps = Number(process.env.BENCH_REPS ?? 3);
const DECODE_TOKENS = 64;
const SKIP = 3;

const decodeOnly = process.argv.includes('--decode-only');
const modelName = arg('model') ?? 'small';
if (modelName !== 'small' && modelName !== 'moe') throw new Error(`--model must be small or moe, got '${modelName}'`);
const path = join(import.meta.dir, '..', 'bench', `${modelName}.config.json`);
const config = NemotronHConfig.fromJSON(await readConfigJson(path), { source: path });
const gen = new Generator(1);
const prompt = (n: number) => [Array.from({ length: n }, () => Math.floor(gen.uniform() * config.vocabSize))];
const textureBytes = () => (device.kind === 'webgpu' ? matmulTextureMemoryStats(device).cachedWeightBytes : 0);
const round = (v: number) => +v.toFixed(2);
/** The process's peak resident set so far (maxrss is in KiB). */
const peakRssBytes = () => process.resourceUsage().maxRSS * 1024;

for (const dtype of dtypes) {
  const model = NemotronHForCausalLM.fromConfig(config, { seed: 0, device, dtype }).eval().requiresGrad_(false);
  const common = { model: `bench-${modelName}`, dtype, device: deviceLabel(device) };

  // Prefill: the prompt and the first token (skipped with --decode-only, so that a process's peak
  // RSS covers only its decode rows, as llama-bench's -d runs do).
  if (!decodeOnly) {
    // Prefill: the prompt and the first token.
    const prefillPrompt = prompt(512);
    await model.generate({ inputIds: prefillPrompt, maxNewTokens: 1 });
    let best = Infinity;
    device.resetPeak();
    for (let i = 0; i < reps; i++) best = Math.min(best, (await model.generate({ inputIds: prefillPrompt, maxNewTokens: 1 })).stats.prefillMs);
    console.log(
      JSON.stringify({
        bench: 'prefill',
        ...common,
        depth: 512,
        tokens_per_s: Math.round((512 * 1000) / best),
        ms: round(best),
        peak_bytes: device.memoryStats().peakLiveBytes,
        texture_bytes: textureBytes(),
        rss_bytes: process.memoryUsage().rss,
        peak_rss_bytes: peakRssBytes(),
      }),
    );
  }

  if (process.argv.includes('--prefill-only')) {
    model.dispose();
    Bun.gc(true); // the next model's peak_rss_bytes should not include this one's freed weights
    continue;
  }
  // Depths interleaved, best of BENCH_REPS runs each: contention on a shared machine hits them alike.
  const prompts = new Map(depths.map((depth) => [depth, prompt(depth)]));
  const decode = async (depth: number) => {
    const times: number[] = [];
    const cpu: number[] = [];
    const r = await model.generate({
      inputIds: prompts.get(depth)!,
      maxNewTokens: DECODE_TOKENS,
      eosTokenId: null,
      onToken: () => {
        times.push(performance.now());
        const u = process.cpuUsage();
        cpu.push((u.user + u.system) / 1000);
      },
    });
    const steps = r.stats.steps - 1 - SKIP;
    return { ms: (times.at(-1)! - times[SKIP]!) / steps, cpuMs: (cpu.at(-1)! - cpu[SKIP]!) / steps };
  };
  for (const depth of depths) await decode(depth); // compiles, warms the caches
  const fastest = new Map<number, { ms: number; cpuMs: number }>();
  const peaks = new Map<number, number>();
  for (let i = 0; i < reps; i++) {
    for (const depth of depths) {
      device.resetPeak();
      const run = await decode(depth);
      peaks.set(depth, device.memoryStats().peakLiveBytes);
      if (run.ms < (fastest.get(depth)?.ms ?? Infinity)) fastest.set(depth, run);
    }
  }
  for (const depth of depths) {
    const { ms, cpuMs } = fastest.get(depth)!;
    console.log(
      JSON.stringify({
        bench: 'decode',
        ...common,
        depth,
        tokens_per_s: round(1000 / ms),
        ms_per_token: round(ms),
        cpu_ms_per_token: round(cpuMs),
        peak_bytes: peaks.get(depth),
        texture_bytes: textureBytes(),
        rss_bytes: process.memoryUsage().rss,
        peak_rss_bytes: peakRssBytes(),
      }),
    );
  }
  model.dispose();
  Bun.gc(true); // the next model's peak_rss_bytes should not include this one's freed weights
}
