/**
 * Where the native library is built: the first folder that can be written, never a throw. A fake
 * compiler (it writes an empty file where `-o` says) stands in for gcc, so no test compiles for real.
 */
import { afterAll, afterEach, beforeAll, expect, test } from 'bun:test';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { buildNativeLibrary, type NativeBuild } from './build';

const scratch = mkdtempSync(join(tmpdir(), 'nemotron-native-build-'));
const fakeCompiler = join(scratch, 'fake-cc');
let savedCC: string | undefined;

beforeAll(() => {
  writeFileSync(
    fakeCompiler,
    '#!/bin/sh\n[ "$1" = --version ] && { echo "fake-cc 1"; exit 0; }\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && : > "$2"; shift; done\n',
  );
  chmodSync(fakeCompiler, 0o755);
  savedCC = process.env.CC;
  process.env.CC = fakeCompiler;
});
afterEach(() => {
  for (const entry of readdirSync(scratch)) if (entry !== 'fake-cc') rmSync(join(scratch, entry), { recursive: true, force: true });
});
afterAll(() => {
  if (savedCC === undefined) delete process.env.CC;
  else process.env.CC = savedCC;
  rmSync(scratch, { recursive: true, force: true });
});

test('a folder that cannot be created is skipped for the next one, and the next call finds the library there', () => {
  const blocker = join(scratch, 'a-file');
  writeFileSync(blocker, '');
  const fallback = join(scratch, 'user-cache');
  const first = buildNativeLibrary([join(blocker, 'native'), fallback]);
  expect(first).toMatchObject({ ok: true, built: true });
  if (!first.ok) return;
  expect(first.path.startsWith(`${fallback}/libnemotron-kernels-`)).toBe(true);
  expect(readdirSync(fallback)).toEqual([first.path.slice(fallback.length + 1)]); // no temporary left
  expect(buildNativeLibrary([join(blocker, 'native'), fallback])).toEqual({ ok: true, path: first.path, built: false });
});

test('with no folder to write, the failure names each folder and the variable to set (no throw)', () => {
  const blocker = join(scratch, 'a-file');
  writeFileSync(blocker, '');
  const result = buildNativeLibrary([join(blocker, 'one'), join(blocker, 'two')]);
  expect(result.ok).toBe(false);
  if (result.ok) return;
  expect(result.error).toContain(`${join(blocker, 'one')} (ENOTDIR)`);
  expect(result.error).toContain(`${join(blocker, 'two')} (ENOTDIR)`);
  expect(result.error).toContain('NEMOTRON_NATIVE_CACHE');
});

test('NEMOTRON_NATIVE_CACHE chooses the folder', () => {
  const chosen = join(scratch, 'chosen');
  process.env.NEMOTRON_NATIVE_CACHE = chosen;
  try {
    const result = buildNativeLibrary();
    expect(result).toMatchObject({ ok: true, built: true });
    expect(result.ok && result.path.startsWith(`${chosen}/`)).toBe(true);
    expect(existsSync(chosen)).toBe(true);
  } finally {
    delete process.env.NEMOTRON_NATIVE_CACHE;
  }
});

test('a compiler that fails is reported with its message, and leaves no temporary file', () => {
  const failing = join(scratch, 'failing-cc');
  writeFileSync(failing, '#!/bin/sh\n[ "$1" = --version ] && { echo "failing-cc 1"; exit 0; }\necho "fatal: no such header" >&2\nexit 1\n');
  chmodSync(failing, 0o755);
  process.env.CC = failing;
  try {
    const dir = join(scratch, 'out');
    const result = buildNativeLibrary([dir]);
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.error).toContain('fatal: no such header');
    expect(readdirSync(dir)).toEqual([]);
  } finally {
    process.env.CC = fakeCompiler;
  }
});

test('Workers building at once each get a whole library (a temporary name per build, not per process)', async () => {
  // Each compile writes its output in two halves with a pause between: two compilers sharing one
  // temporary file would interleave them.
  const slow = join(scratch, 'slow-cc');
  writeFileSync(
    slow,
    '#!/bin/sh\n[ "$1" = --version ] && { echo "slow-cc 1"; exit 0; }\nwhile [ $# -gt 0 ]; do [ "$1" = -o ] && out="$2"; shift; done\nprintf start >> "$out"; sleep 0.3; printf end >> "$out"\n',
  );
  chmodSync(slow, 0o755);
  const dir = join(scratch, 'shared');
  const build = () =>
    new Promise<NativeBuild>((resolve, reject) => {
      const worker = new Worker(join(import.meta.dir, 'build.test-worker.ts'), { workerData: { compiler: slow, dir } });
      worker.once('message', (result: NativeBuild) => {
        resolve(result);
        void worker.terminate();
      });
      worker.once('error', reject);
    });
  const results = await Promise.all([build(), build()]);
  for (const result of results) {
    expect(result.ok).toBe(true);
    if (result.ok) expect(readFileSync(result.path, 'utf8')).toBe('startend');
  }
  expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
});

test('an install without the C sources reports it instead of throwing', () => {
  // build.ts copied where its ../../native folder does not exist.
  const copy = join(scratch, 'pkg', 'src', 'native');
  mkdirSync(copy, { recursive: true });
  copyFileSync(join(import.meta.dir, 'build.ts'), join(copy, 'build.ts'));
  const probe = `const { buildNativeLibrary } = await import(${JSON.stringify(join(copy, 'build.ts'))}); console.log(JSON.stringify(buildNativeLibrary([${JSON.stringify(join(scratch, 'out'))}])));`;
  const r = Bun.spawnSync([process.execPath, '-e', probe], { stderr: 'pipe' });
  expect(r.stderr.toString()).toBe('');
  const result = JSON.parse(r.stdout.toString()) as NativeBuild;
  expect(result.ok).toBe(false);
  if (!result.ok) expect(result.error).toContain(`the native kernel sources in ${join(scratch, 'pkg', 'native')} cannot be read`);
});
