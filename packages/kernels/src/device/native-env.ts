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
