/**
 * Kernel choice for matmul on a WebGPU device, by device class and shape:
 *
 * - software rasterizers (llvmpipe): the texture kernel (operands read with `textureLoad`, which
 *   llvmpipe vectorizes, unlike its storage-buffer loads) — against a cached, K-major texture of a
 *   frozen weight at any M (each weight texel read once for M ≤ 8), and otherwise whenever
 *   packing B on every call pays off (see `runTextures`);
 * - otherwise, and on real GPUs: the storage-buffer kernels, GEMV for M ≤ 8, tiled above.
 *
 * `withKernelOverrides({ matmul })` forces a path (tests check every path against the CPU reference; benchmarks).
 */
import type { WebGpuDevice } from '../../device/webgpu-device';
import { empty } from '../../creation';
import { noGrad } from '../../autograd/graph';
import type { Tensor } from '../../tensor';
import { cast, contiguous } from '../layout/layout';
import { launchFusedGemv } from './fused-linear.wgsl';
import { GEMV_MAX_ROWS, bufferMatmul, gemvShape } from './gemm.wgsl';
import { cachedTexture, directlyCopyable, layoutTexels, packedLayout, uploadMatrix, type PackedLayout } from './packed-texture';
import { acquireTexture, flatCapacity, releaseTexture, storageReads, type FlatTexture } from '../../runtime/texture-pool';
import { kernelOverrides } from '../../runtime/kernel-overrides';
import type { MatmulProblem, MatrixView } from './problem';
import { bTextureLayout, textureMatmul, textureTile, type PackedOperand } from './texture-gemm.wgsl';

export interface MatmulHints {
  /** B is a weight that does not change between calls: it may be kept re-laid out. */
  frozenB: boolean;
}

/**
 * Products below this many multiply-adds run the storage-buffer GEMV on a software device rather
 * than copying B into a texture (the copy's fixed cost dominates there).
 */
const COPY_MIN_MACS = 1 << 16;

export function matmulGpu(device: WebGpuDevice, p: MatmulProblem, out: Tensor, hints: MatmulHints): void {
  const forced = kernelOverrides().matmul ?? {};
  // `software` forces both choices the device's tuning makes (device/kernel-tuning.ts).
  const textures = forced.software ?? device.tuning.textureOperands;
  const cpuSimd = forced.software ?? device.tuning.launchShape === 'cpu-simd';
  const path = forced.path;
  if (path === 'texture' || (path === undefined && textures)) {
    const alwaysPack = path === 'texture';
    if (runTextures(device, p, out, hints.frozenB, alwaysPack)) return;
  }
  const gemv = path === 'gemv' || (path === undefined && p.m <= GEMV_MAX_ROWS);
  bufferMatmul(device, p, out, gemv ? { kind: 'gemv', shape: gemvShape(cpuSimd) } : { kind: 'tiled' });
}

/** Runs the texture kernel when the operands fit textures and it pays off; false to fall back to buffers. */
function runTextures(device: WebGpuDevice, p: MatmulProblem, out: Tensor, frozenB: boolean, alwaysPack: boolean): boolean {
  const bLayout = bTextureLayout(device, p);
  const bFormat = bLayout.format;
  const tile = textureTile(p.m, bFormat, (kernelOverrides().matmul?.storageReads ?? true) && storageReads(device));
  // A rows padded to whole K steps of the tile (B's layout pads to those of every tile).
  const aLayout = packedLayout(device, p.a, 'rgba32float', p.a.batchStride === 0 ? 1 : p.batch, p.m, p.k, 1, tile.kStep / 4);
  const capacity = flatCapacity(device);
  if (layoutTexels(aLayout) > capacity || layoutTexels(bLayout) > capacity || p.k === 0) return false;
  const cached = frozenB ? cachedTexture(device, p.b, bLayout) : null;
  // Decode rows against a cached weight read x straight from its buffer (no per-call packing).
  if (cached && gemvRows(p)) {
    launchFusedGemv(device, {
      x: { tensor: p.a.tensor, offset: p.a.offset },
      m: p.m,
      n: p.n,
      k: p.k,
      b: cached,
      options: { bias: p.bias?.tensor ?? null },
      out,
    });
    return true;
  }
  // Without a cached B: above 8 rows the texture kernel wins even after packing B (llvmpipe runs the
  // workgroup-memory GEMM an order of magnitude slower); for decode rows, only when B copies in
  // directly — packing a transposed B costs more than the storage-buffer GEMV reading it once.
  if (!cached && !alwaysPack && p.m <= GEMV_MAX_ROWS && !(directlyCopyable(p.b, bLayout) && p.m * p.n * p.k >= COPY_MIN_MACS)) return false;
  const transient: FlatTexture[] = [];
  const upload = (view: MatrixView, layout: PackedLayout): PackedOperand => {
    const texture = acquireTexture(device, layout.format, layoutTexels(layout));
    transient.push(texture);
    uploadMatrix(device, view, layout, texture);
    return { texture, layout };
  };
  const b = cached ?? upload(p.b, bLayout);
  const a = upload(p.a, aLayout);
  const bias = denseBias(device, p);
  textureMatmul(device, p, out, a, b, bias, tile);
  for (const t of transient) releaseTexture(device, t);
  bias.tensor.dispose();
  return true;
}

/** A single dense f32 [M ≤ 8, K] A and a unit-stride (or no) bias: the fused GEMV's operands. */
function gemvRows(p: MatmulProblem): boolean {
  const a = p.a;
  const denseA = a.tensor.dtype === 'f32' && a.colStride === 1 && (p.m === 1 || a.rowStride === p.k);
  const bias = p.bias === null || (p.bias.stride === 1 && p.bias.offset === p.bias.tensor.offset && p.bias.tensor.size === p.n);
  return p.batch === 1 && p.m <= GEMV_MAX_ROWS && denseA && bias;
}

/** The bias as a dense f32 [N] (a copy when it is bf16 or strided), or a one-element placeholder. */
function denseBias(device: WebGpuDevice, p: MatmulProblem): { tensor: Tensor; present: boolean } {
  if (!p.bias) return { tensor: empty([1], { device }), present: false };
  const bias = p.bias.tensor;
  return { tensor: noGrad(() => (bias.dtype === 'f32' ? contiguous(bias) : cast(bias, 'f32'))), present: true };
}
