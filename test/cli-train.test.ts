/**
 * `nemotron train` end to end on the tiny model: JSON step lines on stdout, checkpoints that
 * `fromPretrained` loads, `--resume` continuing with the next step, and bad flags or data failing
 * with a message naming the flag or file and a non-zero exit code.
 */
import { describe, expect, test } from 'bun:test';
import { writeFileSync } from 'node:fs';
import { cp, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Checkpoint, saveSafetensors } from '@nemotron-ts/hub';
import { getCpuDevice, tensor, type Tensor } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../src/pretrained';
import { nemotron, writeCatDocuments } from './support/cli';
import { scratchWithTinyModel } from './support/scratch';

const { scratch, modelDir } = await scratchWithTinyModel('cli-train');
const dataPath = await writeCatDocuments(join(scratch, 'data.jsonl'));

const common = ['--model', modelDir, '--data', dataPath, '--seq-len', '16', '--batch-size', '2', '--lr', '1e-3', '--warmup', '1', '--device', 'cpu'];

describe('nemotron train', () => {
  test('trains, logs JSON per step, writes loadable checkpoints, resumes', async () => {
    const out = join(scratch, 'run');
    const first = nemotron('train', ...common, '--out', out, '--steps', '3', '--save-every', '2', '--eval-every', '2', '--dtype', 'bf16');
    expect(first.stderr).toContain('step 3/3');
    expect(first.code).toBe(0);
    const lines = first.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, number>);
    const steps = lines.filter((l) => 'loss' in l);
    expect(steps.map((l) => l.step)).toEqual([1, 2, 3]);
    for (const l of steps) {
      expect(Object.keys(l)).toEqual(['step', 'loss', 'lr', 'grad_norm', 'tokens_per_s', 'peak_bytes']);
      expect(Number.isFinite(l.loss) && l.grad_norm! > 0 && l.tokens_per_s! > 0).toBe(true);
    }
    expect(lines.filter((l) => 'eval_loss' in l).map((l) => l.step)).toEqual([2, 3]);
    expect((await readdir(out)).sort()).toEqual(['checkpoint-2', 'checkpoint-3', 'log.jsonl', 'loss.svg', 'report.html']);
    const files = await readdir(join(out, 'checkpoint-3'));
    for (const f of ['config.json', 'model.safetensors', 'tokenizer.json', 'optimizer.safetensors', 'master_weights.safetensors', 'trainer_state.json'])
      expect(files).toContain(f);

    const saved = await NemotronHForCausalLM.fromPretrained(join(out, 'checkpoint-3'), { device: getCpuDevice() });
    const original = await NemotronHForCausalLM.fromPretrained(modelDir, { device: getCpuDevice() });
    try {
      expect(saved.lmHead.weight.dtype).toBe('bf16');
      const a = await saved.lmHead.weight.toFloat32();
      const b = await original.lmHead.weight.toFloat32();
      expect(a.some((v, i) => Math.abs(v - b[i]!) > 1e-4)).toBe(true);
    } finally {
      saved.dispose();
      original.dispose();
    }

    const again = nemotron('train', ...common, '--out', out, '--steps', '4', '--save-every', '2', '--eval-every', '2', '--dtype', 'bf16');
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('pass --resume');
    const resumed = nemotron('train', ...common, '--out', out, '--steps', '4', '--save-every', '2', '--eval-every', '2', '--dtype', 'bf16', '--resume');
    expect(resumed.stderr).toContain('resumed from');
    expect(resumed.code).toBe(0);
    expect(
      resumed.stdout
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { step: number }).step),
    ).toEqual([4, 4]);
  }, 120_000);

  test('--gradient-checkpointing: the same losses with a lower peak_bytes', () => {
    // Rows long enough for the activations, not the weights and AdamW's moments, to set the peak.
    const longData = join(scratch, 'long.jsonl');
    writeFileSync(
      longData,
      Array.from({ length: 16 }, (_, i) => JSON.stringify({ text: `document ${i}: the cat sat on the mat, and the dog lay by the door.` })).join('\n'),
    );
    const run = (name: string, ...extra: string[]) => {
      const r = nemotron('train', ...common, '--data', longData, '--seq-len', '160', '--out', join(scratch, name), '--steps', '1', ...extra);
      expect(r.code, r.stderr).toBe(0);
      return r.stdout
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, number>);
    };
    const plain = run('plain');
    const checkpointed = run('checkpointed', '--gradient-checkpointing');
    checkpointed.forEach((l, i) => {
      expect(l.loss!).toBeCloseTo(plain[i]!.loss!, 5);
      expect(l.peak_bytes!, `${l.peak_bytes} vs ${plain[i]!.peak_bytes}`).toBeLessThan(0.9 * plain[i]!.peak_bytes!);
    });
  });

  test('chat data with --pack: the loss on assistant tokens of packed conversations', async () => {
    const chatPath = join(scratch, 'chat.jsonl');
    const line = (q: string, a: string) =>
      JSON.stringify({
        messages: [
          { role: 'user', content: q },
          { role: 'assistant', content: a },
        ],
      });
    await writeFile(chatPath, [line('Hi?', 'Hello.'), line('Cat?', 'Meow.'), line('Dog?', 'Woof.')].join('\n'));
    const r = nemotron('train', ...common, '--data', chatPath, '--seq-len', '64', '--pack', '--out', join(scratch, 'chat-run'), '--steps', '1');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain('chat (loss on assistant tokens), packed documents');
    const [step] = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, number>);
    expect(Number.isFinite(step!.loss)).toBe(true);
  });

  test('bad flags and data exit non-zero naming the flag or file', async () => {
    const out = join(scratch, 'bad');
    const flag = nemotron('train', ...common, '--out', out, '--steps', '0');
    expect(flag.code).toBe(2);
    expect(flag.stderr).toContain('--steps must be an integer ≥ 1, got 0');
    expect(nemotron('train', ...common, '--out', out, '--lr', 'fast').stderr).toContain("--lr must be a number, got 'fast'");
    const seed = nemotron('train', ...common, '--out', out, '--seed', '1e20');
    expect(seed.code).toBe(2);
    expect(seed.stderr).toContain('--seed must be an integer in [0, 4294967295], got 100000000000000000000');
    expect(nemotron('train', '--model', modelDir, '--out', out).stderr).toContain('missing --data');
    expect(nemotron('train', ...common, '--out', out, '--resume').stderr).toContain(`--resume: ${out} holds no checkpoint`);
    const badData = join(scratch, 'bad.jsonl');
    await writeFile(badData, '{"text": "ok"}\n{"txt": "oops"}\n');
    const data = nemotron('train', '--model', modelDir, '--data', badData, '--out', out, '--device', 'cpu');
    expect(data.code).toBe(1);
    expect(data.stderr).toContain(`${badData}:2: "text" must be a string, got nothing`);
    // The run failed after locking --out: the lock went with it.
    expect(await Bun.file(join(out, '.trainer.lock')).exists()).toBe(false);
    const missing = nemotron('train', '--model', modelDir, '--data', join(scratch, 'nope.txt'), '--out', out);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('nope.txt: no such file');
  }, 60_000);

  test('--no-strict trains a --model with a missing and an unexpected tensor (warnings); without it, an error naming them', async () => {
    const loose = join(scratch, 'loose-model');
    await cp(modelDir, loose, { recursive: true });
    const checkpoint = await Checkpoint.open(loose);
    const tensors = new Map<string, Tensor>();
    for (const key of checkpoint.names()) tensors.set(key, await checkpoint.load(key, { device: getCpuDevice() }));
    const dropped = [...tensors.keys()].find((k) => k.endsWith('layers.0.norm.weight'))!;
    tensors.get(dropped)!.dispose();
    tensors.delete(dropped);
    tensors.set('backbone.extra.weight', tensor(new Float32Array(3), [3], { device: getCpuDevice() }));
    await saveSafetensors(join(loose, 'model.safetensors'), tensors);
    for (const t of tensors.values()) t.dispose();
    const args = ['train', ...common.map((a) => (a === modelDir ? loose : a)), '--steps', '1'];
    const strict = nemotron(...args, '--out', join(scratch, 'strict'));
    expect(strict.code).toBe(1);
    expect(strict.stderr).toContain(`missing 1 (${dropped}); unexpected 1 (backbone.extra.weight)`);
    const run = nemotron(...args, '--out', join(scratch, 'not-strict'), '--no-strict');
    expect(run.code).toBe(0);
    expect(run.stderr).toContain('freshly initialised');
    expect(run.stderr).toContain('does not use (backbone.extra.weight)');
    expect(Number.isFinite((JSON.parse(run.stdout.trim()) as { loss: number }).loss)).toBe(true);
  }, 60_000);
});
