/**
 * Kernel choice for matmul on a WebGPU device, by device class and shape:
 *
 * - software rasterizers (llvmpipe): texture kernels (operands read with `textureLoad`, which
 *   llvmpipe vectorizes, unlike its storage-buffer loads) with large register tiles — for decode
 *   shapes against a cached, K-major copy of a frozen weight, and for products big enough to pay
 *   for re-laying out B;
 * - otherwise, and on real GPUs: the storage-buffer kernels, GEMV for M ≤ 8, tiled above.
 *
 * `setMatmulPath` forces one path (tests run every path against the CPU reference; benchmarks).
 */
import type { WebGpuDevice } from '../../device/webgpu-device';
import type { Tensor } from '../../tensor';
import { GEMV_MAX_ROWS, bufferMatmul, gemvShape } from './gemm.wgsl';
import type { MatmulProblem } from './problem';

export type MatmulPath = 'tiled' | 'gemv' | 'texture';

export interface MatmulPathOverride {
  /** Kernel to use (GEMV only applies up to 8 rows; others fall back to tiled). */
  path?: MatmulPath;
  /** Parametrize the buffer kernels as for a software (true) or hardware (false) device. */
  software?: boolean;
}

let forced: MatmulPathOverride = {};

/** Forces a kernel path for every following matmul on WebGPU (pass `{}` to restore automatic choice). */
export function setMatmulPath(override: MatmulPathOverride): void {
  forced = { ...override };
}

export interface MatmulHints {
  /** B is a weight that does not change between calls: it may be kept re-laid out. */
  frozenB: boolean;
}

export function matmulGpu(device: WebGpuDevice, p: MatmulProblem, out: Tensor, _hints: MatmulHints): void {
  const software = forced.software ?? device.isSoftware;
  const path = forced.path ?? (p.m <= GEMV_MAX_ROWS ? 'gemv' : 'tiled');
  if (path === 'gemv' && p.m <= GEMV_MAX_ROWS) bufferMatmul(device, p, out, { kind: 'gemv', shape: gemvShape(software) });
  else bufferMatmul(device, p, out, { kind: 'tiled' });
}
