/**
 * Builds the native CPU kernel library (packages/kernels/native/*.c) with the system C compiler for
 * the host it runs on (`-O3 -march=native -fopenmp`) into `.cache/native/`, named by a hash of the
 * sources, flags and compiler so a changed source or a new compiler rebuilds. The file appears
 * atomically (compiled to a temporary name, then renamed).
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';

export const NATIVE_SOURCE_DIR = join(import.meta.dir, '..', '..', 'native');
const CACHE_DIR = join(import.meta.dir, '..', '..', '..', '..', '.cache', 'native');
const FLAGS = ['-O3', '-march=native', '-fopenmp', '-fPIC', '-shared', '-fvisibility=hidden', '-std=gnu11'];

export type NativeBuild = { ok: true; path: string; built: boolean } | { ok: false; error: string };

function compiler(): string {
  return process.env.CC ?? 'gcc';
}

function sources(): string[] {
  return readdirSync(NATIVE_SOURCE_DIR)
    .filter((f) => f.endsWith('.c') || f.endsWith('.h'))
    .sort();
}

/** The library path for the current sources and compiler (whether or not it is built yet). */
export function nativeLibraryPath(): string {
  const hash = createHash('sha256');
  const version = spawnSync(compiler(), ['--version'], { encoding: 'utf8' });
  hash.update(`${compiler()}\n${version.stdout ?? ''}\n${FLAGS.join(' ')}\n`);
  for (const f of sources()) hash.update(`${f}\n`).update(readFileSync(join(NATIVE_SOURCE_DIR, f)));
  return join(CACHE_DIR, `libnemotron-kernels-${hash.digest('hex').slice(0, 16)}.so`);
}

/** Returns the built library, compiling it first when missing. Never throws: a failure says why. */
export function buildNativeLibrary(): NativeBuild {
  if (process.platform !== 'linux') return { ok: false, error: `native kernels are built on Linux only (this is ${process.platform})` };
  const path = nativeLibraryPath();
  if (existsSync(path)) return { ok: true, path, built: false };
  mkdirSync(CACHE_DIR, { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  const cfiles = sources()
    .filter((f) => f.endsWith('.c'))
    .map((f) => join(NATIVE_SOURCE_DIR, f));
  const r = spawnSync(compiler(), [...FLAGS, '-o', tmp, ...cfiles, '-lm', '-ldl'], { encoding: 'utf8' });
  if (r.status !== 0) {
    rmSync(tmp, { force: true });
    const why = r.error ? r.error.message : (r.stderr ?? '').trim().split('\n').slice(-5).join('\n');
    return { ok: false, error: `${compiler()} ${FLAGS.join(' ')} failed (install gcc, e.g. \`apt-get install -y gcc\`): ${why}` };
  }
  renameSync(tmp, path);
  return { ok: true, path, built: true };
}
