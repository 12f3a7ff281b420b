/**
 * Builds the native CPU kernel library (packages/kernels/native/*.c) with the system C compiler for
 * the host it runs on (`-O3 -march=native -fopenmp`), named by a hash of the sources, flags and
 * compiler so a changed source or a new compiler rebuilds. The file appears atomically (compiled to a
 * temporary name, then renamed), so processes building at once each get a whole library.
 *
 * Where: `NEMOTRON_NATIVE_CACHE` when set; else the checkout's `.cache/native/`, or, where that
 * cannot be written (a read-only install), the user's cache (`$XDG_CACHE_HOME` or `~/.cache`,
 * under `nemotron-ts/native`).
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export const NATIVE_SOURCE_DIR = join(import.meta.dir, '..', '..', 'native');
const CHECKOUT_CACHE_DIR = join(import.meta.dir, '..', '..', '..', '..', '.cache', 'native');
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

/** The folders a library may live in, most preferred first. */
function cacheDirs(): string[] {
  const chosen = process.env.NEMOTRON_NATIVE_CACHE;
  if (chosen) return [chosen];
  return [CHECKOUT_CACHE_DIR, join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'nemotron-ts', 'native')];
}

/** The library's file name for the current sources, flags and compiler. */
function libraryName(): string {
  const hash = createHash('sha256');
  const version = spawnSync(compiler(), ['--version'], { encoding: 'utf8' });
  hash.update(`${compiler()}\n${version.stdout ?? ''}\n${FLAGS.join(' ')}\n`);
  for (const f of sources()) hash.update(`${f}\n`).update(readFileSync(join(NATIVE_SOURCE_DIR, f)));
  return `libnemotron-kernels-${hash.digest('hex').slice(0, 16)}.so`;
}

/** The library path for the current sources and compiler: where it is built, else where it would be. */
export function nativeLibraryPath(): string {
  const name = libraryName();
  const dirs = cacheDirs();
  return builtIn(dirs, name) ?? join(dirs[0]!, name);
}

/** The library `name` in the first of `dirs` that holds it, or undefined. */
function builtIn(dirs: readonly string[], name: string): string | undefined {
  return dirs.map((dir) => join(dir, name)).find((path) => existsSync(path));
}

/**
 * Returns the built library, compiling it first when missing, in the first of `dirs` that can be
 * written (default: the folders above). Never throws: a failure says why.
 */
export function buildNativeLibrary(dirs: readonly string[] = cacheDirs()): NativeBuild {
  if (process.platform !== 'linux') return { ok: false, error: `native kernels are built on Linux only (this is ${process.platform})` };
  let name: string;
  try {
    name = libraryName();
  } catch (e) {
    // An install without the C sources (packaged without packages/kernels/native).
    return { ok: false, error: `the native kernel sources in ${NATIVE_SOURCE_DIR} cannot be read: ${(e as Error).message}` };
  }
  const built = builtIn(dirs, name);
  if (built) return { ok: true, path: built, built: false };
  const unwritable: string[] = [];
  for (const dir of dirs) {
    try {
      mkdirSync(dir, { recursive: true });
      accessSync(dir, constants.W_OK);
    } catch (e) {
      unwritable.push(`${dir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      continue;
    }
    const path = join(dir, name);
    // Unique per build: Workers (threads of one process) may build at once, and a shared name would
    // let two compilers write one file.
    const tmp = `${path}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;
    const cfiles = sources()
      .filter((f) => f.endsWith('.c'))
      .map((f) => join(NATIVE_SOURCE_DIR, f));
    const r = spawnSync(compiler(), [...FLAGS, '-o', tmp, ...cfiles, '-lm', '-ldl'], { encoding: 'utf8' });
    if (r.status !== 0) {
      rmSync(tmp, { force: true });
      const why = r.error ? r.error.message : (r.stderr ?? '').trim().split('\n').slice(-5).join('\n');
      return { ok: false, error: `${compiler()} ${FLAGS.join(' ')} failed (install gcc, e.g. \`apt-get install -y gcc\`): ${why}` };
    }
    try {
      renameSync(tmp, path);
    } catch (e) {
      rmSync(tmp, { force: true });
      unwritable.push(`${dir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      continue;
    }
    return { ok: true, path, built: true };
  }
  return {
    ok: false,
    error: `no folder to build the native kernels in could be written: ${unwritable.join(', ')}; set NEMOTRON_NATIVE_CACHE to a writable folder`,
  };
}
