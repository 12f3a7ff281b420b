/**
 * Every fixture checkpoint → load onto each test device → save (single file, and sharded with a small
 * maxShardSize) → load again: identical bits, files laid out as the reference loader requires.
 */
import { describe, expect, test } from 'bun:test';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { testDevices } from '@nemotron-ts/kernels/testing';
import { narrow, tensor, transpose, type Tensor } from '@nemotron-ts/kernels';
import { Checkpoint, INDEX_FILE, SafetensorsReader, saveSafetensors, saveWeights } from '../src';
import { fixtureCases, fixturePath } from './support/fixtures';
import { expectReferenceLayout, readRaw, type RawFile } from './support/reference-safetensors';
import { tempDir } from './support/temp-dir';

const devices = await testDevices();

async function expectBitsEqual(t: Tensor, raw: RawFile, name: string): Promise<void> {
  const expected = raw.tensors.get(name)!;
  expect(t.shape).toEqual(expected.shape);
  const data = await t.data();
  expect(Buffer.from(data.buffer, data.byteOffset, data.byteLength).equals(Buffer.from(expected.bytes))).toBe(true);
}

async function expectCheckpointMatches(folder: string, raw: RawFile): Promise<void> {
  const checkpoint = await Checkpoint.open(folder);
  expect(checkpoint.names().sort()).toEqual([...raw.tensors.keys()].sort());
  for (const device of devices) {
    for await (const [name, t] of checkpoint.tensors({ device })) {
      await expectBitsEqual(t, raw, name);
      t.dispose();
    }
  }
}

for (const testCase of fixtureCases()) {
  describe(`fixture ${testCase}`, () => {
    const original = readFileSync(fixturePath(testCase, 'model.safetensors'));
    const raw = readRaw(original);
    const dtypes = new Set([...raw.tensors.values()].map((e) => e.dtype));

    for (const device of devices) {
      test(`${device.kind}: single file round trip${dtypes.size === 1 ? ' reproduces the file byte for byte' : ''}`, async () => {
        const checkpoint = await Checkpoint.open(join(fixturePath(testCase, '.')));
        // Small chunks exercise the chunked host↔device paths (odd sizes, bf16 tails).
        const tensors = await checkpoint.loadAll({ device, chunkBytes: 4098 });
        const out = tempDir('roundtrip');
        const saved = await saveWeights(out, tensors, { chunkBytes: 1030 });
        for (const t of tensors.values()) t.dispose();
        expect(saved.files).toEqual(['model.safetensors']);
        expect(saved.indexFile).toBeNull();
        const written = readFileSync(join(out, 'model.safetensors'));
        expectReferenceLayout(written);
        expect(readRaw(written).metadata).toEqual({ format: 'pt' });
        // A single-dtype file sorted by name is exactly what the fixture writer produced.
        if (dtypes.size === 1) expect(written.equals(original)).toBe(true);
        await expectCheckpointMatches(out, raw);
      });
    }

    test('sharded round trip with a small maxShardSize', async () => {
      const device = devices.at(-1)!;
      const tensors = await (await Checkpoint.open(fixturePath(testCase, '.'))).loadAll({ device });
      const out = tempDir('sharded');
      const saved = await saveWeights(out, tensors, { maxShardSize: '100KB' });
      for (const t of tensors.values()) t.dispose();
      expect(saved.files.length).toBeGreaterThan(2);
      expect(saved.indexFile).toBe(INDEX_FILE);
      expect(saved.files[0]).toBe(`model-00001-of-${String(saved.files.length).padStart(5, '0')}.safetensors`);
      const index = JSON.parse(readFileSync(join(out, INDEX_FILE), 'utf8')) as { metadata: { total_size: number }; weight_map: Record<string, string> };
      expect(index.metadata.total_size).toBe([...raw.tensors.values()].reduce((s, e) => s + e.bytes.byteLength, 0));
      expect(Object.keys(index.weight_map).sort()).toEqual([...raw.tensors.keys()].sort());
      for (const file of saved.files) {
        const bytes = readFileSync(join(out, file));
        expectReferenceLayout(bytes);
        // Greedy split: a shard only exceeds the limit when it holds one tensor.
        const shard = readRaw(bytes);
        const dataBytes = [...shard.tensors.values()].reduce((s, e) => s + e.bytes.byteLength, 0);
        if (shard.tensors.size > 1) expect(dataBytes).toBeLessThanOrEqual(100_000);
      }
      await expectCheckpointMatches(out, raw);
      // Saving again unsharded removes the shards and the index.
      const again = await (await Checkpoint.open(out)).loadAll({ device });
      await saveWeights(out, again);
      for (const t of again.values()) t.dispose();
      expect(readdirSync(out).sort()).toEqual(['model.safetensors']);
    });

    test('expected.safetensors (F32 and I32) round trips through saveSafetensors', async () => {
      const path = fixturePath(testCase, 'expected.safetensors');
      const bytes = readFileSync(path);
      const reader = await SafetensorsReader.open(path);
      const device = devices[0]!;
      const tensors = new Map<string, Tensor>();
      for (const name of reader.names()) tensors.set(name, await reader.load(name, { device }));
      const out = join(tempDir('expected'), 'expected.safetensors');
      await saveSafetensors(out, tensors, { metadata: reader.metadata! });
      for (const t of tensors.values()) t.dispose();
      expect(readFileSync(out).equals(bytes)).toBe(true);
    });
  });
}

test('a streamed (async iterable) source gives the same shards as a map', async () => {
  const device = devices[0]!;
  const checkpoint = await Checkpoint.open(fixturePath('mtp_d2', '.'));
  const fromMap = tempDir('map');
  const tensors = await checkpoint.loadAll({ device });
  await saveWeights(fromMap, tensors, { maxShardSize: 150_000 });
  for (const t of tensors.values()) t.dispose();
  const streamed = tempDir('stream');
  let live = 0;
  async function* produce(): AsyncGenerator<[string, Tensor]> {
    for await (const [name, t] of checkpoint.tensors({ device })) {
      live++;
      yield [name, t];
      t.dispose();
      live--;
    }
  }
  // Same order as loadAll (file order), so the greedy split must give the same shards.
  const saved = await saveWeights(streamed, produce(), { maxShardSize: 150_000, chunkBytes: 777 });
  expect(live).toBe(0);
  const mapFiles = readdirSync(fromMap).sort();
  expect(readdirSync(streamed).sort()).toEqual(mapFiles);
  for (const file of mapFiles) expect(readFileSync(join(streamed, file)).equals(readFileSync(join(fromMap, file)))).toBe(true);
  expect(saved.files.length).toBeGreaterThan(1);
});

describe('views are saved densely', () => {
  for (const device of devices) {
    for (const dtype of ['f32', 'bf16'] as const) {
      test(`${device.kind} ${dtype}: transposed, narrowed and offset views`, async () => {
        const values = Float32Array.from({ length: 15 }, (_, i) => i - 7.5);
        const t = tensor(values, [3, 5], { device, dtype });
        const views = new Map<string, Tensor>([
          ['transposed', transpose(t)],
          ['columns', narrow(t, 1, 1, 3)],
          ['row', narrow(t, 0, 1, 1)],
        ]);
        const out = join(tempDir('views'), 'views.safetensors');
        await saveSafetensors(out, views, { chunkBytes: 6 });
        const reader = await SafetensorsReader.open(out);
        const at = (r: number, c: number) => values[r * 5 + c]!;
        const expected: Record<string, number[]> = {
          transposed: Array.from({ length: 15 }, (_, i) => at(i % 3, Math.floor(i / 3))),
          columns: Array.from({ length: 9 }, (_, i) => at(Math.floor(i / 3), 1 + (i % 3))),
          row: Array.from({ length: 5 }, (_, c) => at(1, c)),
        };
        for (const [name, view] of views) {
          const loaded = await reader.load(name, { device });
          expect(loaded.shape).toEqual(view.shape);
          expect(loaded.dtype).toBe(dtype);
          expect([...(await loaded.toFloat32())]).toEqual(expected[name]!);
          loaded.dispose();
          view.dispose();
        }
        t.dispose();
      });
    }
  }
});
