/**
 * `nemotron info` and device selection when the native CPU kernels cannot be built (here: a compiler
 * that does not exist, and an empty library folder): `info` says why, and choosing the device
 * automatically warns that the slower path is in use instead of landing on it silently. Also: opening
 * a software GPU adapter leaves stderr free of Dawn's notes about its limits.
 */
import { afterAll, expect, test } from 'bun:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nemotron, nemotronWith } from './support/cli';

const scratch = await mkdtemp(join(tmpdir(), 'nemotron-cli-info-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

/** `nemotron info --json …` in an environment without a usable C compiler. */
function infoWithoutCompiler(...args: string[]): { code: number; report: Record<string, unknown>; stderr: string } {
  const env: Record<string, string | undefined> = {
    ...process.env,
    CC: join(scratch, 'no-such-cc'),
    NEMOTRON_NATIVE_CACHE: join(scratch, 'native'),
    EGL_PLATFORM: 'surfaceless',
  };
  delete env.NEMOTRON_DEVICE;
  const r = nemotronWith(env, 'info', '--json', ...args);
  return { code: r.code, report: JSON.parse(r.stdout) as Record<string, unknown>, stderr: r.stderr };
}

test('without native kernels, info on the TypeScript reference says why', () => {
  const cpu = infoWithoutCompiler('--device', 'cpu');
  expect(cpu.code).toBe(0);
  expect(cpu.report.backend).toBe('typescript reference');
  expect(cpu.report.native).toStartWith('unavailable: ');
  expect(cpu.report.native).toContain('no-such-cc');
  expect(cpu.report.native).toContain('install gcc');
});

test('without native kernels, the automatic choice warns when it lands on a software adapter or the reference', () => {
  const auto = infoWithoutCompiler();
  expect(auto.code).toBe(0);
  expect(auto.report.native).toContain('no-such-cc');
  // llvmpipe where Dawn opens, else the reference: slower either way, and the warning says so.
  expect(auto.stderr).toContain('nemotron-ts: native CPU kernels unavailable (');
  expect(auto.stderr).toMatch(/running on (a software GPU adapter|the TypeScript reference), which is slower/);
});

test('with native kernels, info names the library and says nothing about unavailability', () => {
  const r = nemotron('info', '--json', '--device', 'native');
  expect(r.code).toBe(0);
  const report = JSON.parse(r.stdout) as Record<string, unknown>;
  expect(report.device).toBe('cpu:native');
  expect(report.native).toBeUndefined();
  expect(r.stderr).not.toContain('unavailable');
});

test("opening a software GPU adapter prints nothing of Dawn's limit notes", () => {
  const r = nemotronWith({ ...process.env, EGL_PLATFORM: 'surfaceless' }, 'info', '--json', '--device', 'webgpu');
  expect(r.code).toBe(0);
  expect(r.stderr).not.toContain('artificially reduced');
  expect((JSON.parse(r.stdout) as Record<string, unknown>).device).toBe('webgpu');
});
