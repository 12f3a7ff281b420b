/**
 * `nemotron forward --grads` on every fixture case, fed the case's own inputs.json: the output has
 * `grad/<name>` (f32, the checkpoint's shape) for every tensor of the case's model.safetensors, and
 * matches the fixture's full gradient arrays (max |diff| ≤ 1e-3 · max |expected|: `grad/*` of the
 * main loss, `mtp/grad/*` of the MTP total loss on the `mtp` block), every gradient norm of the
 * manifest (relative ≤ 1e-3) and the losses (≤ 1e-4).
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Checkpoint, SafetensorsReader, saveSafetensors } from '@nemotron-ts/hub';
import { getCpuDevice, type Tensor } from '@nemotron-ts/kernels';
import { expectedArray, expectLoss, FIXTURES_DIR, fixtureNames, mtpScalars, openFixture, relDiff } from './support/fixtures';
import { nemotron } from './support/cli';

const scratch = await mkdtemp(join(tmpdir(), 'nemotron-cli-grads-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));
const names = await fixtureNames();

interface Manifest {
  gradients: { params: Record<string, { l2: number }> };
  blocks?: { mtp?: { gradients: { params: Record<string, { l2: number }> } } };
}

function l2(values: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i]! * values[i]!;
  return Math.sqrt(s);
}

describe('nemotron forward --grads', () => {
  for (const name of names) {
    test(name, async () => {
      const fixture = await openFixture(name);
      const out = join(scratch, `${name}.safetensors`);
      const r = nemotron('forward', '--model', fixture.dir, '--input', join(fixture.dir, 'inputs.json'), '--out', out, '--grads', '--device', 'cpu');
      expect({ code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ code: 0, stderr: '' });
      const got = await SafetensorsReader.open(out);
      const read = async (key: string) => {
        expect({ key, present: got.has(key) }).toEqual({ key, present: true });
        const t = await got.readHost(key);
        expect({ key, dtype: t.dtype }).toEqual({ key, dtype: 'F32' });
        return t;
      };
      const checkpoint = await Checkpoint.open(fixture.dir);
      for (const key of checkpoint.names()) expect({ key, shape: (await read(`grad/${key}`)).shape }).toEqual({ key, shape: checkpoint.entry(key).shape });
      const row: Record<string, unknown> = { case: name };
      expectLoss('loss', ((await read('loss')).data as Float32Array)[0]!, fixture.scalars.loss!);

      const manifest = (await Bun.file(join(fixture.dir, 'manifest.json')).json()) as Manifest;
      const check = async (prefix: string, params: Record<string, { l2: number }>) => {
        let full = 0;
        let norm = 0;
        for (const [key, want] of Object.entries(params)) {
          const values = (await read(`${prefix}${key}`)).data as Float32Array;
          const rel = Math.abs(l2(values) - want.l2) / Math.max(want.l2, 1e-30);
          norm = Math.max(norm, rel);
          expect({ key, rel, ok: rel <= 1e-3 || want.l2 < 1e-12 }).toEqual({ key, rel, ok: true });
          if (!fixture.expected.has(`${prefix}${key}`)) continue;
          const relFull = relDiff(values, await expectedArray(fixture, `${prefix}${key}`));
          full = Math.max(full, relFull);
          expect({ key, relFull, ok: relFull <= 1e-3 }).toEqual({ key, relFull, ok: true });
        }
        return { full, norm };
      };
      const main = await check('grad/', manifest.gradients.params);
      Object.assign(row, { grad_full_rel: main.full, grad_l2_rel: main.norm });
      // Every stored full array was compared (none is named differently).
      const stored = fixture.expected.names().filter((n) => n.startsWith('grad/'));
      expect(stored.every((n) => n.slice('grad/'.length) in manifest.gradients.params)).toBe(true);
      // The main loss reaches neither the MTP head nor the router's correction bias (a buffer).
      for (const key of checkpoint.names().filter((k) => k.startsWith('mtp.') || k.endsWith('e_score_correction_bias'))) {
        expect({ key, l2: l2((await read(`grad/${key}`)).data as Float32Array) }).toEqual({ key, l2: 0 });
      }

      const mtpWant = manifest.blocks?.mtp?.gradients.params;
      if (mtpWant) {
        expectLoss('mtp/loss', ((await read('mtp/loss')).data as Float32Array)[0]!, (await mtpScalars(fixture))!.main.total_loss);
        const mtp = await check('mtp/grad/', mtpWant);
        Object.assign(row, { mtp_grad_full_rel: mtp.full, mtp_grad_l2_rel: mtp.norm });
      } else {
        expect(got.has('mtp/loss')).toBe(false);
      }
      console.log(JSON.stringify(row, (_k, v: unknown) => (typeof v === 'number' ? Number(v.toPrecision(3)) : v)));
    }, 120_000);
  }

  test('gradients carry the names the checkpoint uses (model.* prefix, legacy embedding name)', async () => {
    const source = join(FIXTURES_DIR, 'dense_f32');
    const folder = join(scratch, 'renamed');
    await mkdir(folder, { recursive: true });
    await copyFile(join(source, 'config.json'), join(folder, 'config.json'));
    const checkpoint = await Checkpoint.open(source);
    const rename = (key: string) => key.replace(/^backbone\./, 'model.').replace('model.embeddings.', 'model.embedding.');
    const tensors = new Map<string, Tensor>();
    for (const key of checkpoint.names()) tensors.set(rename(key), await checkpoint.load(key, { device: getCpuDevice() }));
    await saveSafetensors(join(folder, 'model.safetensors'), tensors);
    for (const t of tensors.values()) t.dispose();
    const out = join(scratch, 'renamed.safetensors');
    const r = nemotron('forward', '--model', folder, '--input', join(source, 'inputs.json'), '--out', out, '--grads', '--device', 'cpu');
    expect({ code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ code: 0, stderr: '' });
    const got = await SafetensorsReader.open(out);
    const want = await SafetensorsReader.open(join(scratch, 'dense_f32.safetensors'));
    const gradNames = got.names().filter((n) => n.startsWith('grad/'));
    expect(gradNames.sort()).toEqual(
      checkpoint
        .names()
        .map((k) => `grad/${rename(k)}`)
        .sort(),
    );
    expect(gradNames).toContain('grad/model.embedding.weight');
    for (const key of checkpoint.names()) {
      expect((await got.readHost(`grad/${rename(key)}`)).data).toEqual((await want.readHost(`grad/${key}`)).data);
    }
  });

  test('without labels, or with an mtp block for a model without MTP, it fails naming the file', async () => {
    const model = join(FIXTURES_DIR, 'dense_f32');
    const noLabels = join(scratch, 'no-labels.json');
    await Bun.write(noLabels, JSON.stringify({ input_ids: [[1, 2, 3]] }));
    const a = nemotron('forward', '--model', model, '--input', noLabels, '--out', join(scratch, 'x.safetensors'), '--grads', '--device', 'cpu');
    expect(a.code).toBe(1);
    expect(a.stderr).toContain('no-labels.json: --grads needs "labels"');
    const mtp = join(scratch, 'mtp-block.json');
    await Bun.write(mtp, JSON.stringify({ input_ids: [[1, 2, 3]], labels: [[1, 2, 3]], mtp: { input_ids: [[1, 2, 3]], labels: [[2, 3, -100]] } }));
    const b = nemotron('forward', '--model', model, '--input', mtp, '--out', join(scratch, 'y.safetensors'), '--grads', '--device', 'cpu');
    expect(b.code).toBe(1);
    expect(b.stderr).toContain('mtp-block.json: mtp: the model has no MTP head');
  });
});
