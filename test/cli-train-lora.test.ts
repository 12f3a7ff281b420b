/**
 * `nemotron train --lora-r …` end to end on the tiny model (CPU): the checkpoint is a PEFT adapter
 * that `loadLoraAdapter` puts on a fresh base to give exactly the logits of the same training run
 * in-process; `--merge` writes a model whose logits equal base + adapter; `--resume` repeats the
 * uninterrupted losses; bad flag combinations exit 2 naming the flag.
 */
import { describe, expect, test } from 'bun:test';
import { cp, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { loadTokenizer } from '@nemotron-ts/hub';
import { getCpuDevice, noGrad } from '@nemotron-ts/kernels';
import { expectClose } from '@nemotron-ts/kernels/testing';
import { applyLora, loadLoraAdapter } from '../src';
import { checkLoraResume } from '../src/cli/lora-flags';
import { NemotronHForCausalLM } from '../src/pretrained';
import { loadTrainingData, Trainer } from '../src/train';
import { nemotron, writeCatDocuments } from './support/cli';
import { scratchWithTinyModel } from './support/scratch';

const cpu = getCpuDevice();
const { scratch, modelDir } = await scratchWithTinyModel('cli-train-lora');
const dataPath = await writeCatDocuments(join(scratch, 'data.jsonl'));
const TARGETS = ['in_proj', 'out_proj', 'q_proj', 'v_proj', 'up_proj', 'down_proj'];

const common = ['--model', modelDir, '--data', dataPath, '--seq-len', '16', '--batch-size', '2', '--lr', '1e-2', '--warmup', '1', '--device', 'cpu'];
const lora = ['--lora-r', '4', '--lora-alpha', '8', '--lora-targets', TARGETS.join(',')];
const losses = (stdout: string) =>
  stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { loss: number })
    .map((l) => l.loss);

async function logitsOf(model: NemotronHForCausalLM): Promise<Float32Array> {
  const { logits } = noGrad(() => model.eval().forward({ inputIds: [[257, 116, 104, 101, 32, 99, 97, 116, 10, 3]] }));
  const values = await logits.toFloat32();
  logits.dispose();
  return values;
}

describe('nemotron train --lora-r', () => {
  test('writes a PEFT adapter giving the trained logits; --merge writes base + adapter', async () => {
    const out = join(scratch, 'run');
    const run = nemotron('train', ...common, ...lora, '--out', out, '--steps', '3', '--merge');
    expect(run.stderr).toContain('LoRA r 4, alpha 8');
    expect(run.code).toBe(0);
    expect(losses(run.stdout).length).toBe(3);
    expect((await readdir(out)).sort()).toEqual(['checkpoint-3', 'log.jsonl', 'loss.svg', 'merged', 'report.html']);
    const files = await readdir(join(out, 'checkpoint-3'));
    for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'optimizer.safetensors', 'trainer_state.json', 'tokenizer.json'])
      expect(files).toContain(f);
    expect(files).not.toContain('model.safetensors');
    expect((await Bun.file(join(out, 'checkpoint-3', 'adapter_config.json')).json()).base_model_name_or_path).toBe(modelDir);

    // The same run in-process.
    const trained = await NemotronHForCausalLM.fromPretrained(modelDir, { device: cpu });
    applyLora(trained, { r: 4, alpha: 8, targetModules: TARGETS, seed: 0 });
    const data = await loadTrainingData(await loadTokenizer(modelDir), { dataPath, holdOut: false, seqLen: 16, seed: 0, vocabSize: trained.config.vocabSize });
    const trainer = new Trainer(trained, data, { steps: 3, batchSize: 2, lr: 1e-2, warmup: 1, outDir: null });
    const inProcess = (await trainer.train()).map((l) => l.loss);
    // The CLI prints 7 significant digits.
    losses(run.stdout).forEach((l, i) => expect(l).toBeCloseTo(inProcess[i]!, 5));
    trainer.dispose();
    const expected = await logitsOf(trained);
    trained.dispose();

    const base = await NemotronHForCausalLM.fromPretrained(modelDir, { device: cpu });
    const baseLogits = await logitsOf(base);
    await loadLoraAdapter(base, join(out, 'checkpoint-3'));
    const adapted = await logitsOf(base);
    base.dispose();
    expect(adapted).toEqual(expected);
    expect(adapted.some((v, i) => Math.abs(v - baseLogits[i]!) > 1e-3)).toBe(true);

    const merged = await NemotronHForCausalLM.fromPretrained(join(out, 'merged'), { device: cpu });
    expect(merged.namedParameters().some(([n]) => n.includes('lora_'))).toBe(false);
    expectClose(await logitsOf(merged), adapted, { rtol: 1e-4, atol: 1e-4, what: 'merged logits' });
    merged.dispose();
  }, 120_000);

  test('--resume reloads the adapter and repeats the uninterrupted losses', async () => {
    const out = join(scratch, 'whole');
    const whole = nemotron('train', ...common, ...lora, '--lora-dropout', '0.1', '--out', out, '--steps', '4', '--save-every', '2');
    expect(whole.code).toBe(0);
    const again = join(scratch, 'again');
    await mkdir(again);
    await cp(join(out, 'checkpoint-2'), join(again, 'checkpoint-2'), { recursive: true });
    const resumed = nemotron('train', ...common, ...lora, '--lora-dropout', '0.1', '--out', again, '--steps', '4', '--resume');
    expect(resumed.stderr).toContain('resumed from');
    expect(resumed.code).toBe(0);
    expect(losses(resumed.stdout)).toEqual(losses(whole.stdout).slice(2));
    const otherRank = nemotron('train', ...common, ...lora, '--lora-r', '2', '--out', again, '--steps', '4', '--resume');
    expect(otherRank.code).toBe(2);
    expect(otherRank.stderr).toContain('checkpoint-4 was trained with --lora-r 4, this run has 2');
    const full = nemotron('train', ...common, '--out', again, '--steps', '4', '--resume');
    expect(full.code).toBe(2);
    expect(full.stderr).toContain("holds a LoRA adapter; pass the run's --lora-r");
  }, 120_000);

  test('bad flag combinations exit 2 naming the flag', async () => {
    const out = join(scratch, 'bad');
    const cases: [string[], string][] = [
      [['--merge'], '--merge needs --lora-r R'],
      [['--lora-alpha', '8'], '--lora-alpha needs --lora-r R'],
      [['--lora-targets', 'q_proj'], '--lora-targets needs --lora-r R'],
      [['--lora-r', '0'], '--lora-r must be an integer ≥ 1, got 0'],
      [['--lora-r', '2', '--lora-dropout', '1'], '--lora-dropout must be in [0, 1), got 1'],
      [['--lora-r', '2', '--lora-alpha', '-1'], '--lora-alpha must be > 0, got -1'],
      [['--lora-r', '2', '--lora-targets', 'q_proj,,v_proj'], '--lora-targets must be comma-separated module names'],
      [['--lora-r', '2', '--lora-targets', 'nope'], '--lora-targets nope: applyLora: no Linear layer matches'],
    ];
    for (const [flags, message] of cases) {
      const r = nemotron('train', ...common, '--out', out, '--steps', '1', ...flags);
      expect(r.stderr).toContain(message);
      expect(r.code).toBe(2);
    }
  }, 120_000);

  test('--resume of a checkpoint whose run targeted a regular expression names it as written', () => {
    const saved = { r: 4, alpha: 8, dropout: 0, targetModules: String.raw`.*\.(q_proj|v_proj)`, seed: 0 };
    const flags = { r: 4, alpha: 8, dropout: 0, targetModules: ['q_proj', 'v_proj'], seed: 0 };
    expect(() => checkLoraResume(flags, saved, 'ckpt')).toThrow(
      String.raw`--resume: ckpt was trained with --lora-targets .*\.(q_proj|v_proj), this run has q_proj,v_proj`,
    );
  });
});
