// Parallelism on this host: tokens/s and tensor bytes moved per step for pipeline (PP), data (DP)
// and expert (EP) parallelism over Bun Workers against one device, the worker transfer cost, and
// what the same schedules would give with N real GPUs, modelled from the measured transfer cost.
//
// Models: bench-small (PP, DP) and bench-moe (EP), the project's random init, f32; batch 4 × 128
// tokens. The host model and every worker use the default device (WebGPU; on a GPU-less host GL on
// llvmpipe, which all workers share), or --devices SPEC (e.g. cpu). On this 2-core host the workers
// share the cores: no speed-up is possible, the numbers measure the overhead.
// One JSON line per measurement:
//   {"bench":"parallel","model","mode":"single|pp|dp|ep|pp×ep","n","op":"forward|train","tokens","ms","tokens_per_s","bytes_per_step","vs_single"}
//   (dp rows carry "allreduce": "overlapped" with the backward, or "after-backward")
//   {"bench":"parallel-transfer","bytes","round_trip_ms","mb_per_s"}          (host ⇄ worker, both ways)
//   {"bench":"parallel-model","mode","n","op","modeled_ms","modeled_tokens_per_s","modeled_speedup","comm_ms"}
// ms is the median of BENCH_STEPS (default 2) timed steps after one warm-up.
// Usage: bun scripts/bench-parallel.ts [--devices cpu|webgpu|...]
import { join } from 'node:path';
import { NemotronHConfig, MoE } from '@nemotron-ts/core';
import { readConfigJson } from '@nemotron-ts/hub';
import { AdamW, backward, deviceLabel, initDevice, noGrad } from '@nemotron-ts/kernels';
import { DataParallel, ExpertParallel, HostTensor, PipelineParallel, WorkerGroup, type ParallelBatch } from '@nemotron-ts/parallel';
import { NemotronHForCausalLM } from '../src';

const STEPS = Number(process.env.BENCH_STEPS ?? 2);
const BATCH = 4;
const SEQ = 128;
const TOKENS = BATCH * SEQ;
const devicesArg = process.argv.indexOf('--devices');
const device = await initDevice();
// Workers default to the host's kind of device: native CPU kernels, the TypeScript reference, or WebGPU.
const hostKind = device.kind === 'webgpu' ? 'webgpu' : device.name === 'cpu:native' ? 'native' : 'cpu';
const workerDevices = [devicesArg >= 0 ? process.argv[devicesArg + 1]! : hostKind];

function line(fields: Record<string, unknown>): void {
  console.log(JSON.stringify(fields, (_k, v: unknown) => (typeof v === 'number' && !Number.isInteger(v) ? Number(v.toPrecision(4)) : v)));
}

/** A timed step: the median ms and the tensor bytes one step moves. */
interface Timing {
  ms: number;
  bytesPerStep: number;
}

/**
 * One JSON line of a measured step of `mode` on `n` devices: `setup` (microbatches, schedule,
 * all-reduce) after n, the speed-up over the one-device `singleMs` where there is one, `extra` last.
 */
function row(
  model: string,
  mode: string,
  n: number,
  op: string,
  t: Timing,
  o: { setup?: Record<string, unknown>; singleMs?: number; extra?: Record<string, unknown> } = {},
): void {
  line({
    bench: 'parallel',
    model,
    mode,
    n,
    ...o.setup,
    op,
    tokens: TOKENS,
    ms: t.ms,
    tokens_per_s: (TOKENS * 1000) / t.ms,
    bytes_per_step: t.bytesPerStep,
    ...(o.singleMs === undefined ? {} : { vs_single: o.singleMs / t.ms }),
    ...o.extra,
  });
}

/** One JSON line of a one-device baseline (no bytes moved). */
function singleRow(model: string, op: string, ms: number): void {
  row(model, 'single', 1, op, { ms, bytesPerStep: 0 }, { extra: { device: deviceLabel(device) } });
}

/** The one-device forward baseline (with the loss) of `m`, timed and printed. */
async function singleForward(m: NemotronHForCausalLM, model: string, batch: ParallelBatch): Promise<number> {
  const { ms } = await time(
    async () => {
      const out = noGrad(() => m.forward({ inputIds: batch.inputIds, labels: batch.labels }));
      await out.loss!.item();
      out.logits.dispose();
      out.loss!.dispose();
    },
    () => 0,
  );
  singleRow(model, 'forward', ms);
  return ms;
}

async function load(name: string): Promise<NemotronHForCausalLM> {
  const path = join(import.meta.dir, '..', 'bench', `${name}.config.json`);
  const config = NemotronHConfig.fromJSON(await readConfigJson(path), { source: path });
  return NemotronHForCausalLM.fromConfig(config, { seed: 0, device });
}

function batchFor(vocab: number): ParallelBatch {
  const rows = Array.from({ length: BATCH }, (_, b) => Array.from({ length: SEQ }, (_, t) => (b * 7919 + t * 104729) % vocab));
  return { inputIds: rows, labels: rows };
}

/** Median ms of `STEPS` runs after a warm-up, and the tensor bytes one step moves. */
async function time(run: () => Promise<unknown>, bytes: () => number): Promise<Timing> {
  await run();
  const times: number[] = [];
  const before = bytes();
  for (let i = 0; i < STEPS; i++) {
    const t0 = performance.now();
    await run();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return { ms: times[Math.floor(times.length / 2)]!, bytesPerStep: (bytes() - before) / STEPS };
}

const moved = (p: { transferStats: { bytesSent: number; bytesReceived: number } }) => () => p.transferStats.bytesSent + p.transferStats.bytesReceived;

// Transfer cost host ⇄ worker (a CPU worker echoing a tensor back).
const echo = await WorkerGroup.start({ size: 1, service: 'debug', devices: ['cpu'] });
const transfer: { bytes: number; ms: number }[] = [];
for (const bytes of [4096, 1 << 20, 16 << 20]) {
  const { ms } = await time(
    () => echo.call(0, 'echo', HostTensor.fromF32(new Float32Array(bytes / 4), [bytes / 4])),
    () => 0,
  );
  transfer.push({ bytes, ms });
  line({ bench: 'parallel-transfer', bytes, round_trip_ms: ms, mb_per_s: (2 * bytes) / 2 ** 20 / (ms / 1000) });
}
await echo.shutdown();
// Linear fit: latency + bytes / bandwidth per one-way message.
const [small, , big] = transfer;
const perByteMs = (big!.ms - small!.ms) / (2 * (big!.bytes - small!.bytes));
const latencyMs = Math.max(small!.ms / 2 - small!.bytes * perByteMs, 0);
const commMs = (bytes: number, messages: number) => bytes * perByteMs + messages * latencyMs;

function model(mode: string, n: number, op: string, singleMs: number, computeMs: number, bytes: number, messages: number): void {
  const comm = commMs(bytes, messages);
  const ms = computeMs + comm;
  line({ bench: 'parallel-model', mode, n, op, modeled_ms: ms, modeled_tokens_per_s: (TOKENS * 1000) / ms, modeled_speedup: singleMs / ms, comm_ms: comm });
}

// bench-small: one device, PP, DP.
{
  const m = await load('small');
  const batch = batchFor(m.config.vocabSize);
  m.requiresGrad_(false);
  const fwd = { ms: await singleForward(m, 'bench-small', batch) };
  m.requiresGrad_(true).train();
  const optimizer = new AdamW(m.parameters(), { lr: 1e-5 });
  const train = await time(
    async () => {
      m.zeroGrad();
      const { loss, logits } = m.forward({ inputIds: batch.inputIds, labels: batch.labels });
      backward(loss!);
      optimizer.step();
      await loss!.item();
      logits.dispose();
      loss!.dispose();
    },
    () => 0,
  );
  singleRow('bench-small', 'train', train.ms);

  const S = 2;
  const M = 4;
  const pp = await PipelineParallel.fromModel(m, { stages: S, devices: workerDevices });
  await pp.setOptimizer({ lr: 1e-5 });
  const ppFwd = await time(() => pp.forward(batch, { microbatches: M }), moved(pp));
  row('bench-small', 'pp', S, 'forward', ppFwd, { setup: { microbatches: M }, singleMs: fwd.ms, extra: { devices: workerDevices } });
  const ppTrain = await time(() => pp.trainStep(batch, { microbatches: M, schedule: '1f1b' }), moved(pp));
  row('bench-small', 'pp', S, 'train', ppTrain, { setup: { microbatches: M, schedule: '1f1b' }, singleMs: train.ms });
  await pp.shutdown();
  // N GPUs: each stage does 1/S of the work per microbatch; the pipeline takes M + S − 1 slots.
  // Messages: forward per microbatch and stage (request + reply); training adds the backward.
  for (const n of [2, 4]) {
    model('pp', n, 'forward', fwd.ms, (fwd.ms / (n * M)) * (M + n - 1), (ppFwd.bytesPerStep * (n - 1)) / (S - 1 || 1), 2 * M * n);
    model('pp', n, 'train', train.ms, (train.ms / (n * M)) * (M + n - 1), (ppTrain.bytesPerStep * (n - 1)) / (S - 1 || 1), 4 * M * n);
  }

  const R = 2;
  const dp = await DataParallel.fromModel(m, { replicas: R, devices: workerDevices });
  await dp.setOptimizer({ lr: 1e-5 });
  // The all-reduce overlapped with the backward (trainStep), and after it (the same sums), timed in turn.
  const afterBackward = async () => {
    await dp.zeroGrad();
    await dp.forwardBackward(batch);
    await dp.allReduceGradients();
    await dp.step();
  };
  for (const [allreduce, run] of [
    ['overlapped', () => dp.trainStep(batch)],
    ['after-backward', afterBackward],
  ] as const) {
    row('bench-small', 'dp', R, 'train', await time(run, moved(dp)), { setup: { allreduce }, singleMs: train.ms });
  }
  await dp.shutdown();
  // N GPUs: 1/N of the rows each; the all-reduce moves every gradient up and back per replica.
  const gradBytes = 4 * m.numParameters();
  for (const n of [2, 4, 8]) model('dp', n, 'train', train.ms, train.ms / n, 2 * gradBytes * n, 8 * n);
  m.dispose();
}

// bench-moe: one device and EP.
{
  const m = await load('moe');
  m.requiresGrad_(false);
  const batch = batchFor(m.config.vocabSize);
  const fwd = { ms: await singleForward(m, 'bench-moe', batch) };
  const N = 2;
  const ep = await ExpertParallel.fromModel(m, { expertParallel: N, devices: workerDevices });
  const epFwd = await time(() => ep.forward(batch), moved(ep));
  row('bench-moe', 'ep', N, 'forward', epFwd, { singleMs: fwd.ms });
  await ep.shutdown();
  // Composed: 2 pipeline stages, each sharding its experts over 2 workers (4 workers; the stages' MoE layers dispatch through the host).
  const ppep = await PipelineParallel.fromModel(m, { stages: 2, expertParallel: 2, devices: workerDevices });
  row('bench-moe', 'pp×ep', 4, 'forward', await time(() => ppep.forward(batch, { microbatches: 4 }), moved(ppep)), { singleMs: fwd.ms });
  await ppep.shutdown();
  // N GPUs: the routed experts' share of the active weights is split N ways, the rest replicated.
  const c = m.config;
  const moeLayers = [...m.model.layers].filter((b) => b.mixer instanceof MoE).length;
  const routedActive = moeLayers * c.numExpertsPerTok * 2 * c.moeIntermediateSize * c.expertHiddenSize;
  const routedAll = moeLayers * c.nRoutedExperts * 2 * c.moeIntermediateSize * c.expertHiddenSize;
  const active = m.numParameters() - c.vocabSize * c.hiddenSize - (routedAll - routedActive);
  const expertShare = routedActive / active;
  const moeCount = moeLayers;
  for (const n of [2, 4, 8])
    model('ep', n, 'forward', fwd.ms, fwd.ms * (1 - expertShare) + (fwd.ms * expertShare) / n, (epFwd.bytesPerStep * n) / N, 2 * n * moeCount);
  line({
    bench: 'parallel-model-assumptions',
    transfer_latency_ms: latencyMs,
    transfer_mb_per_s: (1 / perByteMs / 1000 / 2 ** 20) * 1e6,
    ep_expert_share_of_active_weights: expertShare,
    note: "per-device compute = this host's one-device time; communication = measured host⇄worker cost × bytes and messages of the schedule",
  });
  m.dispose();
}
process.exit(0);
