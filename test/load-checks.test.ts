/**
 * Checks fromPretrained makes before trusting a checkpoint: weights holding NaN or ±Inf are refused
 * (on every device: the bytes are checked as they are read, before a GPU could turn NaN into 0).
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Checkpoint, saveSafetensors } from '@nemotron-ts/hub';
import { getCpuDevice, tensor, type Tensor } from '@nemotron-ts/kernels';
import { testDevices } from '@nemotron-ts/kernels/testing';
import { NemotronHForCausalLM } from '../src';
import { FIXTURES_DIR } from './support/fixtures';

const cpu = getCpuDevice();
const devices = await testDevices();
const scratch = await mkdtemp(join(tmpdir(), 'nemotron-load-checks-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

/** A copy of a fixture checkpoint with `value` written into element `at` of tensor `name`. */
async function poisonedCopy(fixture: string, name: string, at: number, value: number): Promise<string> {
  const folder = join(scratch, `${fixture}-${name}-${at}-${value}`);
  await mkdir(folder, { recursive: true });
  await copyFile(join(FIXTURES_DIR, fixture, 'config.json'), join(folder, 'config.json'));
  const tensors = await (await Checkpoint.open(join(FIXTURES_DIR, fixture))).loadAll({ device: cpu });
  const original = tensors.get(name)!;
  const values = await original.toFloat32();
  values[at] = value;
  tensors.set(name, tensor(values, original.shape, { dtype: original.dtype, device: cpu }));
  original.dispose();
  await saveSafetensors(join(folder, 'model.safetensors'), tensors);
  for (const t of tensors.values()) (t as Tensor).dispose();
  return folder;
}

describe.each(devices.map((d) => [d.kind, d] as const))('non-finite weights on %s', (_kind, device) => {
  test('one NaN in an MLP up_proj (bf16 file) fails the load naming the file, tensor and element', async () => {
    const name = 'backbone.layers.1.mixer.up_proj.weight';
    const folder = await poisonedCopy('hybrid_bf16', name, 1000, Number.NaN);
    const error = await NemotronHForCausalLM.fromPretrained(folder, { device }).then(
      () => null,
      (e: unknown) => e as Error,
    );
    expect(error?.message).toBe(`${join(folder, 'model.safetensors')}: tensor '${name}': element 1000 of 24576 is NaN: the weights are corrupted (NaN or infinite values)`);
    // Opting out loads it (for inspecting a broken checkpoint).
    const model = await NemotronHForCausalLM.fromPretrained(folder, { device, checkFinite: false });
    expect(Number.isNaN((await model.getTensor('model.layers.1.mixer.up_proj.weight').toFloat32())[1000])).toBe(true);
    model.dispose();
  });

  test('an infinite value in an f32 file is refused as well', async () => {
    const name = 'backbone.layers.3.mixer.up_proj.weight';
    const folder = await poisonedCopy('dense_f32', name, 7, Number.NEGATIVE_INFINITY);
    await expect(NemotronHForCausalLM.fromPretrained(folder, { device })).rejects.toThrow(`tensor '${name}': element 7 of 8192 is -Infinity`);
  });
});
