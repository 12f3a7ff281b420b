/** Download file patterns, byte sizes like "5GB", repo ids, and atomic files. */
import { expect, test } from 'bun:test';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { isRepoId, matchesAny, parseByteSize } from '../src';
import { AtomicFile } from '../src/atomic-file';
import { tempDir } from './support/temp-dir';

test('file patterns: * stays in a segment, ** and a trailing / cross them', () => {
  expect(matchesAny('config.json', ['*.json'])).toBe(true);
  expect(matchesAny('original/params.json', ['*.json'])).toBe(false);
  expect(matchesAny('original/params.json', ['**.json'])).toBe(true);
  expect(matchesAny('original/sub/x.bin', ['original/'])).toBe(true);
  expect(matchesAny('model-00001-of-00002.safetensors', ['model-?????-of-*.safetensors'])).toBe(true);
  expect(matchesAny('a+b.json', ['a+b.json'])).toBe(true);
  expect(matchesAny('aab.json', ['a+b.json'])).toBe(false);
});

test('byte sizes: decimal and binary units', () => {
  expect(parseByteSize('5GB')).toBe(5e9);
  expect(parseByteSize('5GiB')).toBe(5 * 2 ** 30);
  expect(parseByteSize('1.5 MB')).toBe(1_500_000);
  expect(parseByteSize('100kb')).toBe(100_000);
  expect(parseByteSize(4096)).toBe(4096);
  expect(parseByteSize('123')).toBe(123);
  expect(() => parseByteSize('5 parsecs', 'maxShardSize')).toThrow('maxShardSize "5 parsecs" is not a size');
  expect(() => parseByteSize(0, 'maxShardSize')).toThrow('maxShardSize must be a positive whole number of bytes');
  expect(() => parseByteSize('0GB')).toThrow('must be positive');
});

test('repo ids', () => {
  expect(isRepoId('nvidia/NVIDIA-Nemotron-Nano-9B-v2')).toBe(true);
  expect(isRepoId('gpt2')).toBe(true);
  for (const bad of ['../x', 'a/b/c', '/abs', 'a/..', 'a//b', '', 'a/b.']) expect(isRepoId(bad)).toBe(false);
});

test('an aborted atomic file leaves nothing; a committed one appears whole', async () => {
  const dir = tempDir('atomic');
  const target = join(dir, 'out.bin');
  const aborted = await AtomicFile.create(target);
  await aborted.write(new Uint8Array(10));
  await aborted.abort();
  expect(readdirSync(dir)).toEqual([]);
  const file = await AtomicFile.create(target);
  await file.write(Uint8Array.of(1, 2));
  await file.write(Uint8Array.of(3));
  expect(existsSync(target)).toBe(false);
  await file.commitTo(target);
  expect(readdirSync(dir)).toEqual(['out.bin']);
  expect([...new Uint8Array(await Bun.file(target).arrayBuffer())]).toEqual([1, 2, 3]);
});
