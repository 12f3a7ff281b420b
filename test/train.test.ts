/**
 * The trainer on the project's tiny model (every layer kind, byte tokenizer): loss falls on a
 * repetitive text, runs are deterministic, a resumed run repeats the uninterrupted one's losses,
 * accumulation equals a full batch, and bad data fails naming the file and line.
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTokenizer } from '@nemotron-ts/hub';
import { NemotronHConfig } from '@nemotron-ts/core';
import { dispose, full, noGrad, type Device } from '@nemotron-ts/kernels';
import { testDevices } from '@nemotron-ts/kernels/testing';
import { NemotronHForCausalLM } from '../src/pretrained';
import { ensureTinyModel } from './support/tiny-model';
import { loadTrainingData, NonFiniteLossError, readDocuments, Trainer, type TrainerOptions, type TrainingData } from '../src/train';

const scratch = await mkdtemp(join(tmpdir(), 'nemotron-train-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));
const modelDir = await ensureTinyModel(join(scratch, 'tiny'));
const tokenizer = await loadTokenizer(modelDir);
const devices = await testDevices();

const TEXT = 'the cat sat on the mat. '.repeat(40);
const dataPath = join(scratch, 'data.txt');
await writeFile(dataPath, TEXT);
const SEQ = 24;

async function data(seed = 3, evalHoldOut = false): Promise<TrainingData> {
  return loadTrainingData(tokenizer, { dataPath, holdOut: evalHoldOut, seqLen: SEQ, seed, vocabSize: 264 });
}

async function run(
  device: Device,
  options: Partial<TrainerOptions>,
  resumeFrom?: string,
  modelFrom = modelDir,
  dtype: 'f32' | 'bf16' = 'f32',
): Promise<number[]> {
  const model = await NemotronHForCausalLM.fromPretrained(modelFrom, { device, dtype });
  const trainer = new Trainer(model, await data(), { steps: 4, batchSize: 2, lr: 3e-3, warmup: 1, outDir: null, ...options });
  try {
    if (resumeFrom) await trainer.resumeFrom(resumeFrom);
    return (await trainer.train()).map((l) => l.loss);
  } finally {
    trainer.dispose();
    model.dispose();
  }
}

describe('Trainer', () => {
  for (const device of devices) {
    test(`${device.kind}: loss falls on a repetitive text; one seed, identical losses`, async () => {
      const losses = await run(device, { steps: 6, lr: 1e-2 });
      expect(losses.every(Number.isFinite)).toBe(true);
      expect(losses[5]!).toBeLessThan(0.6 * losses[0]!);
      expect(await run(device, { steps: 6, lr: 1e-2 })).toEqual(losses);
    }, 120_000);

    test(`${device.kind}: a run resumed from its step-2 checkpoint repeats the uninterrupted losses`, async () => {
      const out = join(scratch, `resume-${device.kind}`);
      // No clipping here (grad_norm is still measured): the other tests clip.
      const whole = await run(device, { outDir: out, saveEvery: 2, gradClip: 0 });
      const resumed = await run(device, { outDir: join(out, 'again'), gradClip: 0 }, join(out, 'checkpoint-2'), join(out, 'checkpoint-2'));
      expect(whole.every(Number.isFinite)).toBe(true);
      expect(resumed).toEqual(whole.slice(2));
      await expect(run(device, { outDir: null, gradClip: 0, batchSize: 1 }, join(out, 'checkpoint-2'), join(out, 'checkpoint-2'))).rejects.toThrow(
        'checkpoint-2: the checkpoint was trained with batchSize 2, this run has 1',
      );
    }, 120_000);

    test(`${device.kind}: bf16 weights train through f32 masters; resuming restores the masters exactly`, async () => {
      const out = join(scratch, `bf16-${device.kind}`);
      const whole = await run(device, { outDir: out, saveEvery: 2, lr: 1e-2 }, undefined, modelDir, 'bf16');
      expect(whole[3]!).toBeLessThan(0.7 * whole[0]!);
      expect(await Bun.file(join(out, 'checkpoint-2', 'master_weights.safetensors')).exists()).toBe(true);
      const resumed = await run(device, { outDir: join(out, 'again'), lr: 1e-2 }, join(out, 'checkpoint-2'), join(out, 'checkpoint-2'), 'bf16');
      expect(resumed).toEqual(whole.slice(2));
    }, 120_000);

    test(`${device.kind}: 2 accumulated half batches equal one full batch`, async () => {
      const full = await run(device, { steps: 3, batchSize: 2, gradAccum: 1 });
      const accumulated = await run(device, { steps: 3, batchSize: 1, gradAccum: 2 });
      expect(accumulated[0]!).toBeCloseTo(full[0]!, 5);
      for (let i = 0; i < full.length; i++) expect(Math.abs(accumulated[i]! - full[i]!) / full[i]!).toBeLessThan(1e-4);
    }, 120_000);
  }

  test('with an MTP head: the MTP total loss falls and the head is trained', async () => {
    const config = NemotronHConfig.create({
      pattern: 'M*-',
      vocabSize: 264,
      hiddenSize: 64,
      numAttentionHeads: 2,
      numKeyValueHeads: 1,
      headDim: 32,
      mambaNumHeads: 4,
      mambaHeadDim: 16,
      nGroups: 1,
      ssmStateSize: 8,
      chunkSize: 8,
      intermediateSize: 96,
      numNextnPredictLayers: 1,
      mtpPattern: '*-',
      bosTokenId: 257,
      eosTokenId: 258,
      padTokenId: 256,
    });
    const model = NemotronHForCausalLM.fromConfig(config, { seed: 5, device: devices[0]! });
    const trainer = new Trainer(model, await data(), { steps: 6, batchSize: 2, lr: 1e-2, warmup: 1, outDir: null });
    try {
      const before = await model.mtp!.parameters()[0]!.toFloat32();
      const losses = (await trainer.train()).map((l) => l.loss);
      expect(losses[5]!).toBeLessThan(0.8 * losses[0]!);
      const rows = trainer.data.train.rows(0, 1);
      const check = noGrad(() => model.forwardMtp({ inputIds: rows, labels: rows.map((r) => [...r.slice(1), -100]) }));
      expect(await check.mtpLoss.item()).toBeGreaterThan(0);
      dispose([check.logits, check.loss, check.mainLoss, check.mtpLoss, check.depthHiddenStates, check.depthLosses]);
      const after = await model.mtp!.parameters()[0]!.toFloat32();
      expect(after.some((v, i) => v !== before[i])).toBe(true);
      expect(trainer.optimizer.stateOf(model.mtp!.parameters()[0]!)?.step).toBe(6);
    } finally {
      trainer.dispose();
      model.dispose();
    }
  }, 60_000);

  test('a resumed run applies its own lr and weight decay from the resumed step and logs the applied lr', async () => {
    const device = devices[0]!;
    const out = join(scratch, 'changed-hyperparameters');
    await run(device, { outDir: out, saveEvery: 2, weightDecay: 0.01 });
    const checkpoint = join(out, 'checkpoint-2');
    const model = await NemotronHForCausalLM.fromPretrained(checkpoint, { device, dtype: 'f32' });
    const trainer = new Trainer(model, await data(), { steps: 4, batchSize: 2, lr: 1e-3, warmup: 1, weightDecay: 0.1, outDir: null });
    try {
      expect(await trainer.resumeFrom(checkpoint)).toEqual([
        { name: 'lr', checkpoint: 3e-3, applied: 1e-3 },
        { name: 'weightDecay', checkpoint: 0.01, applied: 0.1 },
      ]);
      expect(trainer.optimizer.groups.map((g) => g.lr)).toEqual([1e-3, 1e-3]);
      expect(trainer.optimizer.groups.map((g) => g.weightDecay)).toEqual([0.1, 0]);
      const logs = await trainer.train();
      expect(logs.map((l) => l.lr)).toEqual([2, 3].map((step) => 1e-3 * trainer.schedule(step)));
    } finally {
      trainer.dispose();
      model.dispose();
    }
  }, 120_000);

  test('a non-finite loss stops with an error naming the step', async () => {
    const model = await NemotronHForCausalLM.fromPretrained(modelDir, { device: devices[0]!, dtype: 'f32' });
    const trainer = new Trainer(model, await data(), { steps: 3, batchSize: 1, lr: 1e-3, outDir: null });
    try {
      await trainer.trainStep();
      const w = model.lmHead.weight;
      // Poison the head: every logit becomes NaN.
      const nan = full(w.shape, Number.NaN, { device: w.device });
      model.setTensor('lm_head.weight', nan);
      nan.dispose();
      await expect(trainer.trainStep()).rejects.toThrow(NonFiniteLossError);
      await expect(trainer.trainStep()).rejects.toThrow(/at step 2/);
    } finally {
      trainer.dispose();
      model.dispose();
    }
  }, 60_000);

  test('bad data and settings give errors naming the file, line or setting', async () => {
    const bad = join(scratch, 'bad.jsonl');
    await writeFile(bad, '{"text": "fine"}\n\n{"text": 3}\n');
    await expect(readDocuments(bad)).rejects.toThrow(`${bad}:3: "text" must be a string, got number`);
    await writeFile(bad, '{"text": "fine"}\nnot json\n');
    await expect(readDocuments(bad)).rejects.toThrow(`${bad}:2: not valid JSON`);
    await expect(readDocuments(join(scratch, 'missing.txt'))).rejects.toThrow('missing.txt: no such file');
    const short = join(scratch, 'short.txt');
    await writeFile(short, 'hi');
    await expect(loadTrainingData(tokenizer, { dataPath: short, holdOut: false, seqLen: SEQ, seed: 0, vocabSize: 264 })).rejects.toThrow(
      `${short}: 4 tokens, fewer than one row of seq-len ${SEQ}`,
    );
    const good = join(scratch, 'docs.jsonl');
    await writeFile(good, '{"text": "one"}\n{"text": "two"}\n');
    const docs = await readDocuments(good);
    expect(docs).toEqual(['one', 'two']);
    const model = await NemotronHForCausalLM.fromPretrained(modelDir, { device: devices[0]!, dtype: 'f32' });
    try {
      expect(() => new Trainer(model, { train: null!, eval: null, seqLen: SEQ }, { steps: 2, batchSize: 1, lr: 1e-3, outDir: null, evalEvery: 1 })).toThrow(
        'evalEvery is set but the data has no evaluation rows',
      );
      expect(() => new Trainer(model, { train: null!, eval: null, seqLen: SEQ }, { steps: 2, batchSize: 1, lr: 1e-3, outDir: null, warmup: 5 })).toThrow(
        'warmup (5) must not exceed steps (2)',
      );
    } finally {
      model.dispose();
    }
  });
});
