/**
 * The kernel's advisory file lock (`flock(2)`), which Node does not expose, through Bun's FFI. It is
 * what Python's `filelock` (and so huggingface_hub) holds on the cache's lock files, so holding it
 * makes our downloads and theirs wait for each other; the kernel drops it when its process dies.
 * Null where the C library cannot be opened (Windows, unusual libcs): callers fall back to lock files
 * alone.
 */
import { dlopen, FFIType, read, type Pointer } from 'bun:ffi';

const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;
const EINTR = 4;

export interface KernelFlock {
  /** Takes the exclusive lock on `fd` without blocking: 'taken', 'busy' (another holder), or 'unsupported' (the filesystem has no flock). */
  tryLock(fd: number): 'taken' | 'busy' | 'unsupported';
  unlock(fd: number): void;
}

let loaded: KernelFlock | null | undefined;

/** The flock binding, or null where it is unavailable. */
export function kernelFlock(): KernelFlock | null {
  if (loaded !== undefined) return loaded;
  loaded = null;
  const platforms: Partial<Record<NodeJS.Platform, { lib: string; errno: string; wouldBlock: number }>> = {
    linux: { lib: 'libc.so.6', errno: '__errno_location', wouldBlock: 11 },
    darwin: { lib: 'libc.dylib', errno: '__error', wouldBlock: 35 },
  };
  const p = platforms[process.platform];
  if (!p) return null;
  try {
    const { symbols } = dlopen(p.lib, {
      flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 },
      [p.errno]: { args: [], returns: FFIType.ptr },
    });
    const flock = symbols.flock as (fd: number, op: number) => number;
    const errnoPointer = symbols[p.errno] as () => Pointer | null;
    const errno = () => {
      const at = errnoPointer();
      return at === null ? -1 : read.i32(at, 0);
    };
    loaded = {
      tryLock(fd) {
        for (;;) {
          if (flock(fd, LOCK_EX | LOCK_NB) === 0) return 'taken';
          const e = errno();
          if (e === EINTR) continue;
          return e === p.wouldBlock ? 'busy' : 'unsupported';
        }
      },
      unlock(fd) {
        flock(fd, LOCK_UN);
      },
    };
  } catch {
    loaded = null;
  }
  return loaded;
}
