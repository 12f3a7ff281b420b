/**
 * `nemotron train` with the parallel flags, end to end on the tiny model (CPU workers): data-,
 * pipeline- and expert-parallel runs, and the three composed (8 workers), log the one-device run's losses, learning rates and gradient norms
 * (clipping, weight-decay groups, accumulation and the schedule included) and evaluation losses, save weights equal to
 * one device's; a run resumed from its step-2 checkpoint repeats the uninterrupted one exactly, and
 * checkpoints cross between one device and workers; flags that do not compose with the workers are
 * refused naming the flag.
 */
import { describe, expect, test } from 'bun:test';
import { cp, mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SafetensorsReader } from '@nemotron-ts/hub';
import { getCpuDevice, getNativeDevice } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../src/pretrained';
import { nemotron, writeCatDocuments } from './support/cli';
import { scratchWithTinyModel } from './support/scratch';
import { relDiff } from './support/fixtures';

const { scratch, modelDir } = await scratchWithTinyModel('cli-train-parallel');
const dataPath = await writeCatDocuments(join(scratch, 'data.jsonl'));

// A small --grad-clip so clipping acts, a large --weight-decay so the no-decay group shows (each
// changes the losses or norms beyond the tolerances below), --grad-accum 2 for accumulation's mean;
// a checkpoint at step 2 to resume from, where the AdamW moments and step counts decide step 4.
const common = [
  '--model',
  modelDir,
  '--data',
  dataPath,
  '--seq-len',
  '16',
  '--batch-size',
  '2',
  '--grad-accum',
  '2',
  '--lr',
  '1e-3',
  '--warmup',
  '1',
  '--steps',
  '4',
  '--save-every',
  '2',
  '--grad-clip',
  '0.5',
  '--weight-decay',
  '0.5',
  '--device',
  'cpu',
];

interface StepLine {
  step: number;
  loss: number;
  lr: number;
  grad_norm: number;
  eval_loss?: number;
}

/** The run's step lines (evaluation lines: `evals`). */
function run(out: string, ...flags: string[]): StepLine[] & { evals?: StepLine[] } {
  const r = nemotron('train', ...common, '--out', out, ...flags);
  expect({ flags, code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ flags, code: 0, stderr: '' });
  const lines = r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as StepLine);
  return Object.assign(
    lines.filter((l) => l.eval_loss === undefined),
    { evals: lines.filter((l) => l.eval_loss !== undefined) },
  );
}

/** Each uninterrupted run's step lines, by its --out folder's name (the first test's runs). */
const straight = new Map<string, StepLine[]>();

/** A run resumed from `from`'s step-2 checkpoint (copied into a fresh --out): its losses. */
async function resumeFrom(from: string, out: string, ...flags: string[]): Promise<number[]> {
  await mkdir(out, { recursive: true });
  await cp(join(from, 'checkpoint-2'), join(out, 'checkpoint-2'), { recursive: true });
  // --eval-every as the first test's runs: it decides the held-out rows.
  return run(out, '--resume', '--eval-every', '2', ...flags).map((l) => l.loss);
}

/** A checkpoint's AdamW moments (`<name>.expAvg`, `<name>.expAvgSq`), by tensor name. */
async function moments(dir: string): Promise<Map<string, Float32Array>> {
  const reader = await SafetensorsReader.open(join(dir, 'optimizer.safetensors'));
  const out = new Map<string, Float32Array>();
  for (const name of reader.names()) {
    const t = await reader.load(name, { device: getCpuDevice(), dtype: 'f32' });
    out.set(name, await t.toFloat32());
    t.dispose();
  }
  return out;
}

async function lmHead(dir: string): Promise<Float32Array> {
  const model = await NemotronHForCausalLM.fromPretrained(dir, { device: getCpuDevice() });
  try {
    return await model.lmHead.weight.toFloat32();
  } finally {
    model.dispose();
  }
}

describe('nemotron train with parallel flags', () => {
  test("data, pipeline and expert parallel, alone and composed, log one device's losses and save its weights", async () => {
    const one = run(join(scratch, 'one'), '--eval-every', '2');
    expect(one.evals!.map((l) => l.step)).toEqual([2, 4]);
    expect(one.map((l) => l.step)).toEqual([1, 2, 3, 4]);
    straight.set('one', one);
    expect(one.some((l) => l.grad_norm > 0.5)).toBe(true); // clipping acted
    const want = await lmHead(join(scratch, 'one', 'checkpoint-4'));
    const wantMoments = join(scratch, 'one', 'checkpoint-4');
    for (const flags of [
      ['--data-parallel', '2'],
      ['--pipeline-stages', '2', '--microbatches', '2'],
      ['--expert-parallel', '2'],
      ['--pipeline-stages', '2', '--expert-parallel', '2', '--data-parallel', '2'],
    ]) {
      // Named by its parallel flags ('pipeline-stages', 'pipeline-stages--expert-parallel--data-parallel').
      const name = flags
        .filter((f) => f.startsWith('--') && f !== '--microbatches')
        .join('')
        .slice(2);
      const out = join(scratch, name);
      const got = run(out, '--devices', 'cpu', '--eval-every', '2', ...flags);
      expect(got.map((l) => l.step)).toEqual([1, 2, 3, 4]);
      straight.set(name, got);
      got.evals!.forEach((l, i) =>
        expect([l.step, Math.abs(l.eval_loss! - one.evals![i]!.eval_loss!) / one.evals![i]!.eval_loss! <= 1e-5]).toEqual([one.evals![i]!.step, true]),
      );
      got.forEach((l, i) => {
        expect(Math.abs(l.loss - one[i]!.loss) / one[i]!.loss).toBeLessThanOrEqual(1e-5);
        expect(Math.abs(l.grad_norm - one[i]!.grad_norm) / one[i]!.grad_norm).toBeLessThanOrEqual(1e-4);
        expect(l.lr).toBe(one[i]!.lr);
      });
      expect(await readdir(join(out, 'checkpoint-4'))).toEqual(
        expect.arrayContaining(['config.json', 'model.safetensors', 'tokenizer.json', 'optimizer.safetensors', 'trainer_state.json']),
      );
      expect(relDiff(await lmHead(join(out, 'checkpoint-4')), want)).toBeLessThanOrEqual(1e-4);
      // The workers' AdamW moments (expert shards stacked, replica 0's) are one device's, under its names.
      const [mine, theirs] = [await moments(join(out, 'checkpoint-4')), await moments(wantMoments)];
      expect([...mine.keys()]).toEqual([...theirs.keys()]);
      for (const [key, m] of mine) {
        const w = theirs.get(key)!;
        const close = w.every((v) => v === 0) ? m.every((v) => v === 0) : relDiff(m, w) <= 1e-3;
        expect({ name, key, close }).toEqual({ name, key, close: true });
      }
    }
  }, 300_000);

  const PARALLEL: Record<string, string[]> = {
    'data-parallel': ['--data-parallel', '2'],
    'pipeline-stages': ['--pipeline-stages', '2', '--microbatches', '2'],
    'expert-parallel': ['--expert-parallel', '2'],
    'pipeline-stages--expert-parallel--data-parallel': ['--pipeline-stages', '2', '--expert-parallel', '2', '--data-parallel', '2'],
  };

  test('a parallel run resumed at step 2 repeats the uninterrupted run; checkpoints cross between one device and workers', async () => {
    const losses = (name: string) => straight.get(name)!.map((l) => l.loss);
    const close = (got: number[], want: number[]) => got.length === want.length && got.every((v, i) => Math.abs(v - want[i]!) / want[i]! <= 1e-5);
    for (const [name, flags] of Object.entries(PARALLEL)) {
      const out = join(scratch, `${name}-resumed`);
      const resumed = await resumeFrom(join(scratch, name), out, '--devices', 'cpu', ...flags);
      expect({ name, resumed }).toEqual({ name, resumed: losses(name).slice(2) });
      expect({ name, diff: relDiff(await lmHead(join(out, 'checkpoint-4')), await lmHead(join(scratch, name, 'checkpoint-4'))) }).toEqual({ name, diff: 0 });
      // The optimizer state is one device's: its parameter names, order, step counts and groups.
      const state = async (run: string) => JSON.parse(await readFile(join(scratch, run, 'checkpoint-2', 'trainer_state.json'), 'utf8'));
      const [mine, theirs] = [await state(name), await state('one')];
      expect({ name, optimizer: mine.optimizer, data: mine.dataPosition }).toEqual({ name, optimizer: theirs.optimizer, data: theirs.dataPosition });
    }
    // One device continues a data-parallel checkpoint, pipeline stages a one-device one.
    expect(close(await resumeFrom(join(scratch, 'data-parallel'), join(scratch, 'one-from-data')), losses('one').slice(2))).toBe(true);
    expect(
      close(
        await resumeFrom(join(scratch, 'one'), join(scratch, 'pipeline-from-one'), '--devices', 'cpu', ...PARALLEL['pipeline-stages']!),
        losses('one').slice(2),
      ),
    ).toBe(true);
    const want = await lmHead(join(scratch, 'one', 'checkpoint-4'));
    for (const dir of ['one-from-data', 'pipeline-from-one']) expect(relDiff(await lmHead(join(scratch, dir, 'checkpoint-4')), want)).toBeLessThanOrEqual(1e-4);
  }, 600_000);

  const native = getNativeDevice();
  test.skipIf(!native)(
    "data parallel on native CPU workers sharing the cores: one device's losses",
    async () => {
      const one = run(join(scratch, 'one-for-native'));
      const got = run(join(scratch, 'native'), '--data-parallel', '2', '--devices', 'native');
      got.forEach((l, i) => expect(Math.abs(l.loss - one[i]!.loss) / one[i]!.loss).toBeLessThanOrEqual(1e-4));
    },
    300_000,
  );

  test('flags that do not compose with the workers exit 2 naming the flag', () => {
    const refused = (...flags: string[]) => nemotron('train', ...common, '--out', join(scratch, 'refused'), '--data-parallel', '2', ...flags);
    expect(refused('--lora-r', '4', '--lora-dropout', '0.1')).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('--lora-dropout 0.1 is not supported with --data-parallel'),
    });
    expect(nemotron('train', ...common, '--out', join(scratch, 'refused'), '--expert-parallel', '2', '--lora-r', '4')).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('--lora-r is not supported with --expert-parallel'),
    });
    expect(refused('--gradient-checkpointing')).toMatchObject({ code: 2, stderr: expect.stringContaining('--gradient-checkpointing is not supported') });
    expect(nemotron('train', ...common, '--out', join(scratch, 'refused'), '--expert-parallel', '2', '--dtype', 'bf16')).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('--dtype bf16 is not supported with --expert-parallel'),
    });
    // Composed parallelism trains, checkpoints and resumes, but takes neither LoRA nor bf16 masters.
    expect(refused('--pipeline-stages', '2', '--lora-r', '4')).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('--lora-r is not supported with --pipeline-stages with --data-parallel'),
    });
    expect(refused('--expert-parallel', '2', '--dtype', 'bf16')).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('--dtype bf16 is not supported with --expert-parallel with --data-parallel'),
    });
  });
});
