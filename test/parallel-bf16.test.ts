/**
 * bf16 weights trained through the workers' f32 masters (ParallelTrainer) against the one-device
 * Trainer's mixed precision on the tiny model: pipeline stages and data-parallel replicas log the
 * same losses and checkpoint the same f32 masters (master_weights.safetensors), and a pipeline run
 * resumed from its step-2 checkpoint restores the masters exactly (same losses, same masters).
 */
import { describe, expect, test } from 'bun:test';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { SafetensorsReader } from '@nemotron-ts/hub';
import { getCpuDevice } from '@nemotron-ts/kernels';
import type { ParallelOptions } from '../src';
import { NemotronHForCausalLM } from '../src/pretrained';
import { relDiff } from './support/fixtures';
import { checkpoint2Copy, tinyTraining, trainedLosses } from './support/worker-training';

const device = getCpuDevice();
const { scratch, modelDir, data } = await tinyTraining('parallel-bf16');
const OPTIONS = { steps: 4, batchSize: 2, gradAccum: 2, lr: 1e-2, warmup: 1, gradClip: 0.5, weightDecay: 0.5, saveEvery: 2 } as const;

/** bf16 full fine-tuning into `outDir`, on one device (`parallel` null) or through workers; the losses. */
async function run(outDir: string, parallel: ParallelOptions | null, resumeFrom?: string): Promise<number[]> {
  const model = await NemotronHForCausalLM.fromPretrained(resumeFrom ?? modelDir, { device, dtype: 'bf16' });
  return trainedLosses(model, data, { ...OPTIONS, outDir }, parallel, resumeFrom);
}

/** The f32 masters a checkpoint holds, by name. */
async function masters(dir: string): Promise<Map<string, Float32Array>> {
  const reader = await SafetensorsReader.open(join(dir, 'master_weights.safetensors'));
  const out = new Map<string, Float32Array>();
  for (const name of reader.names()) {
    const t = await reader.load(name, { device });
    out.set(name, await t.toFloat32());
    t.dispose();
  }
  return out;
}

describe('bf16 weights through the workers', () => {
  test("pipeline stages and data-parallel replicas: one device's losses and f32 masters; a resumed run restores the masters exactly", async () => {
    const want = await run(join(scratch, 'one'), null);
    const wantMasters = await masters(join(scratch, 'one', 'checkpoint-4'));
    expect(wantMasters.size).toBeGreaterThan(0);
    for (const [name, parallel] of [
      ['pipeline', { pipelineStages: 2, microbatches: 2 }],
      ['data', { dataParallel: 2 }],
    ] as const) {
      const got = await run(join(scratch, name), parallel);
      expect({ name, close: got.every((v, i) => Math.abs(v - want[i]!) / want[i]! <= 1e-5) }).toEqual({ name, close: true });
      const mine = await masters(join(scratch, name, 'checkpoint-4'));
      expect([...mine.keys()].sort()).toEqual([...wantMasters.keys()].sort());
      // AdamW's normalised update turns reduction-order differences of near-zero gradients into
      // differences of up to ~lr per element: 4 steps at lr 1e-2 leave masters within ~1e-3.
      for (const [key, w] of mine) expect({ key, close: relDiff(w, wantMasters.get(key)!) <= 2e-3 }).toEqual({ key, close: true });
      if (name === 'pipeline') {
        const out = join(scratch, 'pipeline-resumed');
        expect(await run(out, parallel, await checkpoint2Copy(join(scratch, name), out))).toEqual(got.slice(2));
        const resumed = await masters(join(out, 'checkpoint-4'));
        for (const [key, w] of mine) expect({ key, diff: relDiff(resumed.get(key)!, w) }).toEqual({ key, diff: 0 });
        expect(await readdir(join(out, 'checkpoint-4'))).toContain('model.safetensors');
      }
    }
  }, 300_000);
});
