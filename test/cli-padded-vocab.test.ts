/**
 * A model whose vocab_size is padded past its tokenizer (normal for real checkpoints) and that
 * generates those ids: `nemotron generate` prints them as `<unk:ID>` placeholders — as text and with
 * --json — instead of failing with "decode(): token id … is not in the vocabulary".
 */
import { afterAll, expect, test } from 'bun:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getCpuDevice, tensor } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../src';
import { ensureTinyModel } from './support/tiny-model';
import { nemotron } from './support/cli';

const scratch = await mkdtemp(join(tmpdir(), 'nemotron-padded-vocab-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

test('ids past the tokenizer decode to <unk:ID> in generate (text and --json)', async () => {
  // The tiny model's tokenizer has 261 tokens, its vocab_size is 264. lm_head rows 262 = u and
  // 263 = −u, every other row 0: one of the two always wins the greedy choice.
  const tiny = await ensureTinyModel(join(scratch, 'tiny'));
  const cpu = getCpuDevice();
  const model = await NemotronHForCausalLM.fromPretrained(tiny, { device: cpu, dtype: 'f32' });
  const [V, H] = model.lmHead.weight.shape as [number, number];
  expect(V).toBe(264);
  const head = new Float32Array(V * H);
  for (let i = 0; i < H; i++) {
    head[262 * H + i] = Math.sin(i + 1);
    head[263 * H + i] = -Math.sin(i + 1);
  }
  const t = tensor(head, [V, H], { device: cpu });
  model.setTensor('lm_head.weight', t);
  t.dispose();
  const folder = join(scratch, 'padded');
  await model.savePretrained(folder, { copyTokenizerFrom: tiny });
  model.dispose();

  const flags = ['--model', folder, '--prompt', 'hi', '--greedy', '--ignore-eos', '--max-new-tokens', '3', '--device', 'cpu'];
  const json = nemotron('generate', ...flags, '--json');
  expect({ code: json.code, stderr: json.code === 0 ? '' : json.stderr }).toEqual({ code: 0, stderr: '' });
  const ids = (JSON.parse(json.stdout) as { ids: number[][] }).ids[0]!;
  expect(ids.length).toBe(3);
  expect(ids.every((id) => id === 262 || id === 263)).toBe(true);
  const text = nemotron('generate', ...flags);
  expect(text.code).toBe(0);
  expect(text.stdout.trim()).toBe(ids.map((id) => `<unk:${id}>`).join(''));
}, 120_000);
