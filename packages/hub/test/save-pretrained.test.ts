/** savePretrainedFiles: weights, configs and tokenizer files in one folder that loads back unchanged. */
import { expect, test } from 'bun:test';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { getCpuDevice } from '@nemotron-ts/kernels';
import { Checkpoint, loadTokenizer, readConfigJson, readGenerationConfigJson, savePretrainedFiles } from '../src';
import { fixturePath } from './support/fixtures';
import { readRaw } from './support/reference-safetensors';
import { tempDir } from './support/temp-dir';
import { writeTinyTokenizer } from './support/tiny-tokenizer';

const cpu = getCpuDevice();

test('a fixture checkpoint saved with configs and tokenizer loads back identically', async () => {
  const config = await readConfigJson(fixturePath('hybrid_bf16', 'config.json'));
  const tensors = await (await Checkpoint.open(fixturePath('hybrid_bf16', '.'))).loadAll({ device: cpu });
  const tokenizerDir = tempDir('tok');
  writeTinyTokenizer(tokenizerDir);
  const out = join(tempDir('pretrained'), 'nested', 'model');
  const generationConfig = { bos_token_id: 1, eos_token_id: [2, 3], do_sample: false };
  const saved = await savePretrainedFiles(out, {
    tensors,
    config: { ...config, time_step_limit: [0, Infinity] },
    generationConfig,
    maxShardSize: '400KB',
    copyFrom: tokenizerDir,
  });
  for (const t of tensors.values()) t.dispose();
  expect(saved.weights.files.length).toBeGreaterThan(1);
  expect(readdirSync(out).sort()).toEqual([...saved.files].sort());
  expect(saved.files).toContain('tokenizer.json');
  expect(saved.files).toContain('generation_config.json');

  expect(await readConfigJson(join(out, 'config.json'))).toEqual({ ...config, time_step_limit: [0, Infinity] });
  expect(readFileSync(join(out, 'config.json'), 'utf8')).toContain('"time_step_limit": [\n    0,\n    Infinity\n  ]');
  expect(await readGenerationConfigJson(join(out, 'generation_config.json'))).toEqual(generationConfig);
  expect((await loadTokenizer(out)).applyChatTemplate([{ role: 'user', content: 'hi' }])).toBe('<s><|im_start|>user\nhi<|im_end|>\n');

  const raw = readRaw(readFileSync(fixturePath('hybrid_bf16', 'model.safetensors')));
  const checkpoint = await Checkpoint.open(out);
  for (const [name, expected] of raw.tensors) {
    const t = await checkpoint.load(name, { device: cpu });
    expect(checkpoint.entry(name).dtype as string).toBe(expected.dtype);
    const data = await t.data();
    expect(Buffer.from(data.buffer, data.byteOffset, data.byteLength).equals(Buffer.from(expected.bytes))).toBe(true);
  }
});
