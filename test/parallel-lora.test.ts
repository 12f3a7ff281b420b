/**
 * LoRA through the workers (ParallelTrainer) against the one-device Trainer on the tiny model:
 * pipeline stages (dropout on: the stages draw the one-device masks) and data-parallel replicas
 * (dropout 0) log the same losses, train only the adapters, and save the PEFT adapter one device saves, which loads back; a pipeline LoRA run
 * resumed from its step-2 checkpoint repeats the uninterrupted losses.
 */
import { describe, expect, test } from 'bun:test';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { getCpuDevice } from '@nemotron-ts/kernels';
import { applyLora, loraHandle, ParallelModel, type LoraOptions, type ParallelOptions } from '../src';
import { loadLoraAdapter } from '../src/peft-files';
import { NemotronHForCausalLM } from '../src/pretrained';
import { ParallelTrainer } from '../src/train';
import { relDiff } from './support/fixtures';
import { WORKER_DEVICES } from './support/workers';
import { checkpoint2Copy, tinyTraining, trainedLosses } from './support/worker-training';

const device = getCpuDevice();
const { scratch, modelDir, data } = await tinyTraining('parallel-lora');
const LORA: LoraOptions = { r: 4, alpha: 8, dropout: 0.1, targetModules: ['in_proj', 'q_proj', 'v_proj', 'up_proj', 'down_proj', 'lm_head'], seed: 1 };
const OPTIONS = { steps: 4, batchSize: 2, gradAccum: 2, lr: 2e-2, warmup: 1, gradClip: 0.05, weightDecay: 0.5, saveEvery: 2 } as const;

/** LoRA training of the tiny model into `outDir` on one device (`parallel` null) or through workers; the losses. */
async function run(outDir: string, lora: LoraOptions, parallel: ParallelOptions | null, resumeFrom?: string): Promise<number[]> {
  const model = await NemotronHForCausalLM.fromPretrained(modelDir, { device });
  applyLora(model, lora);
  return trainedLosses(model, data, { ...OPTIONS, outDir, tokenizerFrom: modelDir, baseModelNameOrPath: modelDir }, parallel, resumeFrom);
}

/** The adapter a checkpoint holds, loaded onto the base: its tensors by name. */
async function adapter(dir: string): Promise<Map<string, Float32Array>> {
  const model = await NemotronHForCausalLM.fromPretrained(modelDir, { device });
  try {
    const handle = await loadLoraAdapter(model, dir);
    return new Map(await Promise.all(handle.namedParameters().map(async ([n, p]) => [n, await p.toFloat32()] as const)));
  } finally {
    model.dispose();
  }
}

const close = (got: number[], want: number[]) => got.length === want.length && got.every((v, i) => Math.abs(v - want[i]!) / want[i]! <= 1e-5);

describe('LoRA through the workers', () => {
  test("pipeline stages (dropout on) and data-parallel replicas: one device's losses and PEFT adapter; a resumed run repeats them", async () => {
    for (const [name, parallel, lora] of [
      ['pipeline', { pipelineStages: 2, microbatches: 2 }, LORA],
      ['data', { dataParallel: 2 }, { ...LORA, dropout: 0 }],
    ] as const) {
      const want = await run(join(scratch, `${name}-one`), lora, null);
      const got = await run(join(scratch, name), lora, parallel);
      expect({ name, close: close(got, want) }).toEqual({ name, close: true });
      const [mine, theirs] = [await adapter(join(scratch, name, 'checkpoint-4')), await adapter(join(scratch, `${name}-one`, 'checkpoint-4'))];
      expect([...mine.keys()]).toEqual([...theirs.keys()]);
      for (const [key, w] of mine) expect({ key, diff: relDiff(w, theirs.get(key)!) <= 1e-4 }).toEqual({ key, diff: true });
      const config = (run: string) => readFile(join(scratch, run, 'checkpoint-4', 'adapter_config.json'), 'utf8');
      expect(await config(name)).toEqual(await config(`${name}-one`));
      if (name === 'pipeline') {
        const out = join(scratch, 'pipeline-resumed');
        expect(await run(out, lora, parallel, await checkpoint2Copy(join(scratch, name), out))).toEqual(got.slice(2));
      }
    }
  }, 300_000);

  test('a worker adapts only the targeted layers it owns; the loaded model keeps its adapters', async () => {
    const model = await NemotronHForCausalLM.fromPretrained(modelDir, { device });
    applyLora(model, { ...LORA, targetModules: ['lm_head'] });
    const workers = await ParallelModel.fromModel(model, { devices: WORKER_DEVICES, pipelineStages: 2 });
    try {
      const trainer = await ParallelTrainer.create(workers, await data(), { ...OPTIONS, steps: 1, outDir: null });
      await trainer.train();
      // Only the adapters train: the workers' AdamW holds nothing else.
      expect(Object.keys((await workers.optimizerState()).params).sort()).toEqual(['lm_head.lora_A.weight', 'lm_head.lora_B.weight']);
      expect(loraHandle(model)!.adapters.size).toBe(1);
    } finally {
      await workers.close();
      model.dispose();
    }
  }, 120_000);

  test('composed parallelism refuses LoRA, naming the flag', async () => {
    const model = await NemotronHForCausalLM.fromPretrained(modelDir, { device });
    const workers = await ParallelModel.fromModel(model, { devices: WORKER_DEVICES, pipelineStages: 2, dataParallel: 2 });
    try {
      expect(workers.mode).toBe('composed');
      // LoRA applied on the loaded model: the workers would have to build it too.
      applyLora(model, LORA);
      await expect(ParallelTrainer.create(workers, await data(), { ...OPTIONS, outDir: null })).rejects.toThrow(/LoRA \(--lora-r\) with composed parallelism/);
    } finally {
      await workers.close();
      model.dispose();
    }
  }, 120_000);
});
