// Training throughput of the whole model on the default device: bench-small (bench/small.config.json,
// the project's random init), f32 (or --dtype bf16: bf16 weights with f32 masters), batch 1,
// sequence 512, random token rows. Each step is the
// trainer's full update (forward with loss, backward, gradient clipping, AdamW, device sync).
// Prints one JSON line:
//   {"bench":"train","model":"bench-small","dtype":…,"batch":1,"seq_len":512,"gradient_checkpointing":…,
//    "tokens_per_s":…,"ms":…,"cpu_ms":…,"peak_bytes":…,"device":…,"rss_bytes":…}
// tokens_per_s and ms are the median over BENCH_STEPS (default 3) steps after BENCH_WARMUP (default 2)
// warm-up steps; cpu_ms is that step's process CPU time (all threads; steadier than wall time on a
// shared machine); peak_bytes is the largest per-step high-water mark of live device memory.
// BENCH_BATCH (default 1) sets the rows per step: activations, which checkpointing trims, grow with it,
// while weights, gradients and AdamW's moments (4 × 205 MB in f32, the step's floor) do not.
// NEMOTRON_PROFILE_OPS=1 also prints (stderr) the time per op and phase of the timed steps (runtime/op-profile.ts).
// --ceiling adds gemm_gflops (this device's GEMM rate on the model's training shapes, measured after
// the steps), train_gflop_per_step (6 × linear weights × tokens) and gemm_ceiling_tokens_per_s.
// --model moe trains bench-moe (bench/moe.config.json) instead.
// Usage: bun scripts/bench-train-small.ts [--model small|moe] [--dtype f32|bf16] [--gradient-checkpointing] [--ceiling]
import { join } from 'node:path';
import { NemotronHConfig } from '@nemotron-ts/core';
import { readConfigJson } from '@nemotron-ts/hub';
import { deviceLabel, formatOpProfile, Generator, initDevice, linear, noGrad, opProfiling, randn, resetOpProfile, type Device } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../src';
import { BlockSampler, Trainer } from '../src/train';

const SEQ = 512;
const WARMUP = Number(process.env.BENCH_WARMUP ?? 2);
const BATCH = Number(process.env.BENCH_BATCH ?? 1);
const checkpointing = process.argv.includes('--gradient-checkpointing');
const ceiling = process.argv.includes('--ceiling');
const STEPS = Number(process.env.BENCH_STEPS ?? 3);

const dtypeArg = process.argv.indexOf('--dtype');
const dtype = dtypeArg >= 0 ? process.argv[dtypeArg + 1] : 'f32';
if (dtype !== 'f32' && dtype !== 'bf16') throw new Error(`--dtype must be f32 or bf16, got '${dtype}'`);

const device = await initDevice();
const modelArg = process.argv.indexOf('--model');
const modelName = modelArg >= 0 ? process.argv[modelArg + 1] : 'small';
if (modelName !== 'small' && modelName !== 'moe') throw new Error(`--model must be small or moe, got '${modelName}'`);
const path = join(import.meta.dir, '..', 'bench', `${modelName}.config.json`);
const config = NemotronHConfig.fromJSON(await readConfigJson(path), { source: path });
const gen = new Generator(1);
const rows = Array.from({ length: (WARMUP + STEPS) * BATCH }, () => Int32Array.from({ length: SEQ }, () => gen.nextU32() % config.vocabSize));
const model = NemotronHForCausalLM.fromConfig(config, { seed: 0, device, dtype });
const trainer = new Trainer(
  model,
  { train: new BlockSampler(rows, 0), eval: null, seqLen: SEQ },
  { steps: WARMUP + STEPS, batchSize: BATCH, lr: 1e-4, warmup: 1, outDir: null, gradientCheckpointing: checkpointing },
);
const timed: { ms: number; cpuMs: number; tokensPerS: number }[] = [];
let peakBytes = 0;
for (let i = 0; i < WARMUP + STEPS; i++) {
  if (i === WARMUP) resetOpProfile();
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const log = await trainer.trainStep();
  const cpu = process.cpuUsage(c0);
  if (i >= WARMUP) timed.push({ ms: performance.now() - t0, cpuMs: (cpu.user + cpu.system) / 1000, tokensPerS: log.tokens_per_s });
  peakBytes = Math.max(peakBytes, log.peak_bytes ?? 0);
}
timed.sort((a, b) => a.ms - b.ms);
// Training FLOPs of the linear layers (6 per weight per token: forward, input and weight gradients),
// counted before the model is gone; the embedding table is a lookup and the depthwise conv no product.
const linearWeights = model.namedParameters().filter(([name, p]) => p.rank === 2 && !name.includes('embed') && !name.includes('conv'));
const gflopPerStep = (6 * BATCH * SEQ * linearWeights.reduce((n, [, p]) => n + p.size, 0)) / 1e9;
trainer.dispose();
model.dispose();
if (opProfiling) console.error(formatOpProfile(STEPS));
const gemm = ceiling ? await gemmGflops(device) : null;
const median = timed[Math.floor(timed.length / 2)]!;
console.log(
  JSON.stringify({
    bench: 'train',
    model: `bench-${modelName}`,
    dtype,
    batch: BATCH,
    seq_len: SEQ,
    gradient_checkpointing: checkpointing,
    tokens_per_s: Math.round(median.tokensPerS),
    ms: Math.round(median.ms),
    cpu_ms: Math.round(median.cpuMs),
    peak_bytes: peakBytes,
    device: deviceLabel(device),
    device_detail: device.describe(),
    rss_bytes: process.memoryUsage().rss,
    ...(gemm === null
      ? {}
      : {
          gemm_gflops: Math.round(gemm),
          train_gflop_per_step: Math.round(gflopPerStep * 10) / 10,
          gemm_ceiling_tokens_per_s: Math.round((gemm / gflopPerStep) * BATCH * SEQ),
        }),
  }),
);

/**
 * The device's GEMM rate (GFLOP/s) on this model's training shapes, measured now (so on a busy
 * machine it is as busy as the steps were): x·Wᵀ, dY·W and dYᵀ·X for the MLP and the LM head, the
 * best of 5 rounds. The operands stay allocated across rounds and each output is freed at once, so
 * after the first round a product's output comes from the pool as in a training step: timing fresh
 * buffers (zero-fill and page faults of a 32 MB output) read ~25 % below the rate the steps' GEMMs
 * reach. `gemm_ceiling_tokens_per_s` is the training rate if every linear layer's FLOPs ran at it and
 * nothing else took time.
 */
async function gemmGflops(d: Device): Promise<number> {
  const shapes: [number, number, number][] = [
    [SEQ, 2048, 512],
    [SEQ, 512, 2048],
    [2048, 512, SEQ],
    [SEQ, 16384, 512],
    [SEQ, 512, 16384],
    [16384, 512, SEQ],
  ];
  const operands = shapes.map(([m, n, k]) => ({ x: randn([m, k], { device: d }), w: randn([n, k], { device: d }), flops: 2 * m * n * k }));
  let best = 0;
  for (let round = 0; round < 5; round++) {
    let flops = 0;
    let ms = 0;
    for (const { x, w, flops: f } of operands) {
      const t0 = performance.now();
      const y = noGrad(() => linear(x, w));
      await d.sync();
      ms += performance.now() - t0;
      y.dispose();
      flops += f;
    }
    best = Math.max(best, flops / ms / 1e6);
  }
  for (const { x, w } of operands) {
    x.dispose();
    w.dispose();
  }
  return best;
}
