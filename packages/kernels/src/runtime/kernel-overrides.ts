/**
 * Forced kernel choices, one registry for every kernel family. Tests use it to check each path
 * against the CPU reference on any device (and the other device class's launch shapes); benchmarks
 * use it to compare paths. Kernels read their entry with `kernelOverrides()`; nothing is forced by
 * default.
 */
import type { AttentionTuning } from '../ops/attention/attention.wgsl';

export interface KernelOverrides {
  /** matmul on WebGPU. */
  matmul?: {
    /** Kernel to use. GEMV takes at most 8 rows per dispatch (more rows run as several). */
    path?: 'tiled' | 'gemv' | 'texture';
    /** Choose paths and shapes as the software (true) or hardware (false) kernel tuning does. */
    software?: boolean;
    /** Let the texture kernel read storage textures where the device supports them (default true). */
    storageReads?: boolean;
  };
  /** The SSD scan's heavy kernels: operands from texture copies or from their storage buffers. */
  ssdOperandReads?: 'textures' | 'buffers';
  /** The MoE grouped GEMM: the texture tile or the storage-buffer kernel (where both apply). */
  groupedGemm?: 'textures' | 'buffers';
  /** Attention launch choices (workgroup size, rows per lane, split keys, texture reads). */
  attention?: Partial<AttentionTuning>;
}

let current: KernelOverrides = {};

/** The overrides in force. */
export function kernelOverrides(): Readonly<KernelOverrides> {
  return current;
}

/** Replaces every override (`{}` restores the automatic choices). */
export function setKernelOverrides(overrides: KernelOverrides): void {
  current = { ...overrides };
}

/**
 * Runs `fn` with `overrides` merged over the ones in force, restoring them when `fn` returns (or,
 * when it returns a promise, when that settles).
 */
export function withKernelOverrides<T>(overrides: KernelOverrides, fn: () => T): T {
  const prev = current;
  current = { ...prev, ...overrides };
  let result: T;
  try {
    result = fn();
  } catch (e) {
    current = prev;
    throw e;
  }
  if (result instanceof Promise) return result.finally(() => (current = prev)) as T;
  current = prev;
  return result;
}
