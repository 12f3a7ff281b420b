import { isMainThread } from 'node:worker_threads';

/**
 * Sets an environment variable for native code in this process. Under Node `process.env` writes
 * through to the C environment; under Bun it does not, so EGL (inside Dawn) would never see it —
 * there we call libc's setenv through bun:ffi.
 */
export async function setNativeEnv(name: string, value: string): Promise<void> {
  process.env[name] = value;
  if (!process.versions.bun || process.platform !== 'linux') return;
  const { dlopen, FFIType } = await import('bun:ffi');
  const libc = dlopen('libc.so.6', {
    setenv: { args: [FFIType.cstring, FFIType.cstring, FFIType.i32], returns: FFIType.i32 },
  });
  try {
    libc.symbols.setenv(Buffer.from(`${name}\0`), Buffer.from(`${value}\0`), 1);
  } finally {
    libc.close();
  }
}

/**
 * Null when the dynamic loader finds the shared library `name` and it exports `symbol`; otherwise the
 * loader's reason (Linux under Bun; elsewhere assumed present). Lets adapter probing skip a backend
 * whose loader is missing instead of letting Dawn print a warning about it. Bun's `dlopen` refuses
 * an empty symbol table ("Expected at least one symbol"), so the probe names a symbol the library
 * is known to export.
 */
export async function sharedLibraryProbe(name: string, symbol: string): Promise<string | null> {
  if (!process.versions.bun || process.platform !== 'linux') return null;
  const { dlopen, FFIType } = await import('bun:ffi');
  try {
    dlopen(name, { [symbol]: { args: [], returns: FFIType.ptr } }).close();
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

/**
 * Runs `fn` with this process's stderr (fd 2) collected, then writes back every line `drop` does not
 * match. Dawn prints its own notes straight to fd 2 while it opens an adapter, with no switch to
 * turn them off (Linux under Bun; elsewhere `fn` just runs). The lines kept are written after `fn`,
 * so nothing else is lost, only delayed.
 */
export async function withStderrFiltered<T>(fn: () => Promise<T>, drop: RegExp): Promise<T> {
  // fd 2 belongs to the whole process: two windows that overlap (a second call while one waits, or a
  // Worker's, which cannot see this flag) would restore each other's copies and could leave stderr
  // pointing at a closed capture. So only the main thread filters, one window at a time.
  if (!process.versions.bun || process.platform !== 'linux' || !isMainThread || filtering) return fn();
  filtering = true;
  try {
    return await filtered(fn, drop);
  } finally {
    filtering = false;
  }
}

let filtering = false;

async function filtered<T>(fn: () => Promise<T>, drop: RegExp): Promise<T> {
  const { dlopen, FFIType } = await import('bun:ffi');
  const libc = dlopen('libc.so.6', {
    dup: { args: [FFIType.i32], returns: FFIType.i32 },
    dup2: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    memfd_create: { args: [FFIType.cstring, FFIType.u32], returns: FFIType.i32 },
    close: { args: [FFIType.i32], returns: FFIType.i32 },
  });
  const { dup, dup2, memfd_create, close } = libc.symbols;
  const saved = dup(2);
  const collected = saved < 0 ? -1 : memfd_create(Buffer.from('nemotron-stderr\0'), 0);
  if (collected < 0 || dup2(collected, 2) < 0) {
    if (collected >= 0) close(collected);
    if (saved >= 0) close(saved);
    libc.close();
    return fn();
  }
  try {
    return await fn();
  } finally {
    dup2(saved, 2);
    close(saved);
    const { readFileSync, writeSync } = await import('node:fs');
    const text = readFileSync(`/proc/self/fd/${collected}`, 'utf8');
    close(collected);
    libc.close();
    const kept = text.split('\n').filter((line, i, all) => !drop.test(line) && (line !== '' || i < all.length - 1));
    if (kept.length > 0) writeSync(2, `${kept.join('\n')}\n`);
  }
}
