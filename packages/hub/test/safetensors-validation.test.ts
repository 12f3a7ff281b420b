/** Bad safetensors files and indexes: each a CheckpointFormatError naming the file and the field. */
import { describe, expect, test } from 'bun:test';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromBf16, getCpuDevice, toBf16 } from '@nemotron-ts/kernels';
import { Checkpoint, CheckpointFormatError, MAX_HEADER_BYTES, memorySource, SafetensorsReader, type ByteSource } from '../src';
import { buildSafetensors, bytesOf, rawSafetensors } from './support/build-safetensors';
import { tempDir } from './support/temp-dir';

const cpu = getCpuDevice();
const FILE = 'bad.safetensors';

async function openError(bytes: Uint8Array | ByteSource): Promise<CheckpointFormatError> {
  const source = bytes instanceof Uint8Array ? memorySource(bytes, FILE) : bytes;
  try {
    await SafetensorsReader.open(source);
  } catch (e) {
    expect(e).toBeInstanceOf(CheckpointFormatError);
    expect((e as Error).message.startsWith(`${source.name}: `)).toBe(true);
    return e as CheckpointFormatError;
  }
  throw new Error('expected the file to be rejected');
}

const entry = (dtype: string, shape: number[], begin: number, end: number) => ({ dtype, shape, data_offsets: [begin, end] });
const header = (o: object) => JSON.stringify(o);

describe('header validation', () => {
  test('a file shorter than the length prefix', async () => {
    const e = await openError(new Uint8Array(5));
    expect(e.field).toBe('header length');
    expect(e.message).toContain('truncated');
  });

  test('a header length beyond the end of the file', async () => {
    const e = await openError(rawSafetensors('{}', new Uint8Array(0), 1000n));
    expect(e.field).toBe('header length');
    expect(e.message).toContain('beyond the end of the file');
  });

  test('a header length above the 100 MB bound, even in a larger file', async () => {
    const prefix = new Uint8Array(8);
    new DataView(prefix.buffer).setBigUint64(0, BigInt(MAX_HEADER_BYTES + 1), true);
    const huge: ByteSource = { name: 'huge.safetensors', size: MAX_HEADER_BYTES * 2, read: async (b, e) => prefix.slice(b, Math.min(e, 8)) };
    const e = await openError(huge);
    expect(e.message).toContain('limit');
  });

  test('a header that is not JSON, not UTF-8, or not an object', async () => {
    expect((await openError(rawSafetensors('{"a": '))).message).toContain('not valid JSON');
    expect((await openError(rawSafetensors('\u00ff', new Uint8Array(0)).map((b, i) => (i === 8 ? 0xff : b)))).message).toContain('UTF-8');
    expect((await openError(rawSafetensors('[1, 2]'))).message).toContain('must be a JSON object');
  });

  test('an unknown dtype', async () => {
    const e = await openError(rawSafetensors(header({ w: entry('F7', [2], 0, 2) }), new Uint8Array(2)));
    expect(e.field).toBe("tensor 'w' dtype");
    expect(e.message).toContain('unknown dtype "F7"');
  });

  test('offsets outside the data area (a truncated file)', async () => {
    const e = await openError(rawSafetensors(header({ w: entry('F32', [4], 0, 16) }), new Uint8Array(12)));
    expect(e.field).toBe("tensor 'w' data_offsets");
    expect(e.message).toContain('runs past the data area of 12 bytes');
  });

  test('overlapping tensors', async () => {
    const e = await openError(rawSafetensors(header({ a: entry('F32', [4], 0, 16), b: entry('F32', [2], 8, 16) }), new Uint8Array(16)));
    expect(e.message).toContain('overlaps');
    expect(e.message).toMatch(/'a'|'b'/);
  });

  test('a shape that does not match the byte span', async () => {
    const e = await openError(rawSafetensors(header({ w: entry('BF16', [3, 2], 0, 8) }), new Uint8Array(8)));
    expect(e.field).toBe("tensor 'w'");
    expect(e.message).toContain('shape [3, 2] of BF16 needs 12 bytes, but data_offsets [0, 8] span 8');
  });

  test('malformed entries and metadata', async () => {
    expect((await openError(rawSafetensors(header({ w: entry('F32', [-1], 0, 0) })))).field).toBe("tensor 'w' shape");
    expect((await openError(rawSafetensors(header({ w: entry('F32', [1.5], 0, 0) })))).field).toBe("tensor 'w' shape");
    expect((await openError(rawSafetensors(header({ w: { dtype: 'F32', shape: [0], data_offsets: [0] } })))).field).toBe("tensor 'w' data_offsets");
    expect((await openError(rawSafetensors(header({ w: { ...entry('F32', [0], 0, 0), extra: 1 } })))).message).toContain("unknown field 'extra'");
    expect((await openError(rawSafetensors(header({ w: 3 })))).field).toBe("tensor 'w'");
    expect((await openError(rawSafetensors(header({ __metadata__: { format: 1 } })))).field).toBe('__metadata__.format');
  });

  test('holes, unsorted entries and empty tensors are fine', async () => {
    const data = bytesOf(Float32Array.of(1, 2, 3, 4, 5, 6));
    const reader = await SafetensorsReader.open(
      memorySource(rawSafetensors(header({ b: entry('F32', [2], 16, 24), a: entry('F32', [1], 4, 8), z: entry('F32', [0, 3], 8, 8) }), data), FILE),
    );
    expect(await (await reader.load('b', { device: cpu })).toFloat32()).toEqual(Float32Array.of(5, 6));
    expect(await (await reader.load('a', { device: cpu })).toFloat32()).toEqual(Float32Array.of(2));
    expect((await reader.load('z', { device: cpu })).shape).toEqual([0, 3]);
  });
});

describe('dtypes', () => {
  const f16 = Uint16Array.of(0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000, 0x7c00, 0xfc00, 0x3555); // 1, -2, 65504, 2^-24, -0, inf, -inf, 0.33325
  const f16Values = [1, -2, 65504, 2 ** -24, -0, Infinity, -Infinity, 0.333251953125];
  const f32 = Float32Array.of(1.5, -3.25, 1e-8, 65536.7, 0.1);
  const file = buildSafetensors([
    { name: 'half', dtype: 'F16', shape: [2, 4], data: bytesOf(f16) },
    { name: 'single', dtype: 'F32', shape: [5], data: bytesOf(f32) },
    { name: 'bf', dtype: 'BF16', shape: [5], data: bytesOf(toBf16(f32)) },
    { name: 'i32', dtype: 'I32', shape: [3], data: bytesOf(Int32Array.of(-1, 0, 7)) },
    { name: 'u32', dtype: 'U32', shape: [1], data: bytesOf(Uint32Array.of(4000000000)) },
    { name: 'i64', dtype: 'I64', shape: [2], data: bytesOf(BigInt64Array.of(-5n, 1n << 40n)) },
    { name: 'mask', dtype: 'BOOL', shape: [3], data: Uint8Array.of(1, 0, 1) },
    { name: 'f64', dtype: 'F64', shape: [1], data: bytesOf(Float64Array.of(Math.PI)) },
  ]);

  test('F16 loads as f32 by default and as bf16 on request', async () => {
    const reader = await SafetensorsReader.open(memorySource(file, FILE));
    const t = await reader.load('half', { device: cpu });
    expect(t.dtype).toBe('f32');
    expect([...(await t.toFloat32())]).toEqual(f16Values);
    const b = await reader.load('half', { device: cpu, dtype: 'bf16' });
    expect(b.dtype).toBe('bf16');
    expect([...fromBf16((await b.data()) as Uint16Array)]).toEqual([...fromBf16(toBf16(f16Values))]);
  });

  test('f32 ↔ bf16 conversion with a per-name override', async () => {
    const reader = await SafetensorsReader.open(memorySource(file, FILE));
    const keep = (name: string) => (name === 'single' ? 'f32' : undefined);
    const single = await reader.load('single', { device: cpu, dtype: 'bf16', dtypeFor: keep });
    expect(single.dtype).toBe('f32');
    expect(await single.toFloat32()).toEqual(f32);
    const bf = await reader.load('bf', { device: cpu, dtype: 'f32', dtypeFor: keep });
    expect(bf.dtype).toBe('f32');
    expect(await bf.toFloat32()).toEqual(fromBf16(toBf16(f32)));
    const down = await reader.load('single', { device: cpu, dtype: 'bf16' });
    expect(await down.data()).toEqual(toBf16(f32));
    // Integer tensors ignore the float dtype option.
    expect((await reader.load('i32', { device: cpu, dtype: 'bf16' })).dtype).toBe('i32');
    expect(await (await reader.load('u32', { device: cpu })).data()).toEqual(Uint32Array.of(4000000000));
  });

  test('other dtypes read to the host, and name the tensor when loaded to a device', async () => {
    const reader = await SafetensorsReader.open(memorySource(file, FILE));
    expect((await reader.readHost('i64')).data).toEqual(BigInt64Array.of(-5n, 1n << 40n));
    expect((await reader.readHost('mask')).data).toEqual(Uint8Array.of(1, 0, 1));
    expect((await reader.readHost('f64')).data).toEqual(Float64Array.of(Math.PI));
    expect((await reader.readHost('bf')).data).toEqual(fromBf16(toBf16(f32)));
    await expect(reader.load('i64', { device: cpu })).rejects.toThrow(`${FILE}: tensor 'i64': dtype I64 cannot be loaded as a device tensor`);
    await expect(reader.load('nope', { device: cpu })).rejects.toThrow(`${FILE}: tensor 'nope': is not in this file`);
  });
});

describe('sharded checkpoints', () => {
  const shard = buildSafetensors([{ name: 'w', dtype: 'F32', shape: [2], data: bytesOf(Float32Array.of(1, 2)) }]);
  const index = (map: Record<string, string>) => JSON.stringify({ metadata: { total_size: 8 }, weight_map: map });

  function folderWith(files: Record<string, Uint8Array | string>): string {
    const dir = tempDir('shards');
    for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
    return dir;
  }

  async function openError(dir: string): Promise<CheckpointFormatError> {
    const e = await Checkpoint.open(dir).then(
      () => null,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(CheckpointFormatError);
    return e as CheckpointFormatError;
  }

  test('a valid index loads', async () => {
    const dir = folderWith({ 'model.safetensors.index.json': index({ w: 'a.safetensors' }), 'a.safetensors': shard });
    const checkpoint = await Checkpoint.open(dir);
    expect(await (await checkpoint.load('w', { device: cpu })).toFloat32()).toEqual(Float32Array.of(1, 2));
  });

  test("a shard path with '../' or an absolute path", async () => {
    const outside = tempDir('outside');
    writeFileSync(join(outside, 'x.safetensors'), shard);
    const up = await openError(folderWith({ 'model.safetensors.index.json': index({ w: `../${outside.split('/').at(-1)}/x.safetensors` }) }));
    expect(up.file).toEndWith('model.safetensors.index.json');
    expect(up.field).toBe("weight_map['w']");
    expect(up.message).toContain("'..' segment");
    const abs = await openError(folderWith({ 'model.safetensors.index.json': index({ w: join(outside, 'x.safetensors') }) }));
    expect(abs.message).toContain('absolute path');
  });

  test('a symlinked shard that escapes the folder', async () => {
    const outside = tempDir('outside');
    writeFileSync(join(outside, 'x.safetensors'), shard);
    const dir = folderWith({ 'model.safetensors.index.json': index({ w: 'sub/a.safetensors' }) });
    mkdirSync(join(dir, 'sub'));
    symlinkSync(join(outside, 'x.safetensors'), join(dir, 'sub', 'a.safetensors'));
    const e = await openError(dir);
    expect(e.field).toBe("shard 'sub/a.safetensors'");
    expect(e.message).toContain('symlink escape');
  });

  test('a missing shard, a tensor missing from its shard, a malformed weight_map', async () => {
    expect((await openError(folderWith({ 'model.safetensors.index.json': index({ w: 'gone.safetensors' }) }))).message).toContain('does not exist');
    const e = await openError(folderWith({ 'model.safetensors.index.json': index({ v: 'a.safetensors' }), 'a.safetensors': shard }));
    expect(e.field).toBe("weight_map['v']");
    expect((await openError(folderWith({ 'model.safetensors.index.json': '{"weight_map": [1]}' }))).field).toBe('weight_map');
    expect((await openError(folderWith({ 'model.safetensors.index.json': '{"weight_map": {"w": 3}}' }))).field).toBe("weight_map['w']");
    expect((await openError(folderWith({}))).message).toContain('has no model.safetensors');
  });

  test('a corrupt shard names the shard file', async () => {
    const dir = folderWith({ 'model.safetensors.index.json': index({ w: 'a.safetensors' }), 'a.safetensors': shard.slice(0, 30) });
    const e = await openError(dir);
    expect(e.file).toEndWith('a.safetensors');
  });
});
