// Loading the native kernels sets the worker-thread variables in the C environment (where libgomp
// and OpenBLAS read them), unless the user set them: each case runs in a fresh process, because
// the libraries read them once, when they load. Also what loading says about a BLAS the user named.
import { expect, test } from 'bun:test';
import { availableParallelism } from 'node:os';
import { nativeKernels } from './library';

const script = `
  const { nativeKernels } = await import(${JSON.stringify(`${import.meta.dir}/library.ts`)});
  if (!nativeKernels()) throw new Error('native kernels unavailable');
  const { dlopen } = require('bun:ffi');
  const libc = dlopen('libc.so.6', { getenv: { args: ['cstring'], returns: 'cstring' } });
  const get = (name) => String(libc.symbols.getenv(Buffer.from(name + '\\0')));
  console.log(JSON.stringify({ omp: get('OMP_WAIT_POLICY'), openblas: get('OPENBLAS_THREAD_TIMEOUT') }));
`;

function cEnvironment(env: Record<string, string>): { omp: string; openblas: string } {
  const clean = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => k !== 'OMP_WAIT_POLICY' && k !== 'OPENBLAS_THREAD_TIMEOUT' && k !== 'GOMP_SPINCOUNT'),
  );
  const r = Bun.spawnSync([process.execPath, '-e', script], { env: { ...clean, ...env } });
  if (r.exitCode !== 0) throw new Error(r.stderr.toString());
  return JSON.parse(r.stdout.toString().trim().split('\n').at(-1) ?? '{}');
}

test.skipIf(!nativeKernels())('threads sleep between kernels by default: OpenMP passive, OpenBLAS spin 2^4 cycles', () => {
  expect(cEnvironment({})).toEqual({ omp: 'passive', openblas: '4' });
});

test.skipIf(!nativeKernels())("the user's own settings are kept", () => {
  expect(cEnvironment({ OMP_WAIT_POLICY: 'active', OPENBLAS_THREAD_TIMEOUT: '20' })).toEqual({ omp: 'active', openblas: '20' });
});

test.skipIf(!nativeKernels())('a BLAS named in NEMOTRON_BLAS that cannot be opened is reported, and the built-in GEMM runs', () => {
  const probe = `const { nativeKernels } = await import(${JSON.stringify(`${import.meta.dir}/library.ts`)}); console.log(nativeKernels().describe());`;
  const r = Bun.spawnSync([process.execPath, '-e', probe], { env: { ...process.env, NEMOTRON_BLAS: '/no/such/libblas.so' }, stderr: 'pipe' });
  expect(r.exitCode).toBe(0);
  expect(r.stderr.toString()).toContain("NEMOTRON_BLAS='/no/such/libblas.so' could not be opened");
  expect(r.stdout.toString()).not.toContain('f32 GEMM');
  // The default library missing is no news (it is optional), and 'none' is a choice.
  const none = Bun.spawnSync([process.execPath, '-e', probe], { env: { ...process.env, NEMOTRON_BLAS: 'none' }, stderr: 'pipe' });
  expect(none.stderr.toString()).toBe('');
});

test.skipIf(!nativeKernels())('NEMOTRON_THREADS above the CPUs is used but warned about; above the maximum it is refused', () => {
  const cpus = availableParallelism();
  const probe = `const { nativeKernels } = await import(${JSON.stringify(`${import.meta.dir}/library.ts`)}); console.log(nativeKernels().describe());`;
  const run = (threads: string) => Bun.spawnSync([process.execPath, '-e', probe], { env: { ...process.env, NEMOTRON_THREADS: threads }, stderr: 'pipe' });
  const over = run(String(cpus + 1));
  expect(over.exitCode).toBe(0);
  expect(over.stdout.toString()).toContain(`${cpus + 1} threads`);
  expect(over.stderr.toString()).toContain(`NEMOTRON_THREADS=${cpus + 1} is more than the ${cpus} CPUs`);
  const fits = run(String(cpus));
  expect(fits.stderr.toString()).toBe('');
  const absurd = run('20000');
  expect(absurd.exitCode).not.toBe(0);
  expect(absurd.stderr.toString()).toContain("NEMOTRON_THREADS must be at most 1024, got '20000'");
});
