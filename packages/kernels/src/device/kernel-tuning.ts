/**
 * Which kernel paths and launch shapes a WebGPU device runs, as a table keyed by the kind of adapter,
 * with the measured reason for each choice here and nowhere else. Kernels read these facts
 * (`device.tuning.textureOperands`, ...), never the adapter's name; features and limits (storage
 * texture reads, binding sizes) are checked where they apply, on top of these.
 *
 * Software rasterisers (llvmpipe, lavapipe, SwiftShader) compile WGSL to CPU SIMD code. Measured on
 * llvmpipe (Mesa 22, AVX2): every storage-buffer load becomes a per-lane loop, uniform address or
 * not, while texture loads and uniform-buffer reads are vector gathers; workgroups run on a few CPU
 * threads, so few, fat invocations of one or two 8-lane vectors beat wide workgroups. A real GPU
 * is the other way round on each point.
 */
import { isSoftwareAdapter } from './dawn';

export type KernelTuningName = 'software' | 'hardware';

export interface KernelTuning {
  /** The table row (`nemotron info` shows it). */
  readonly name: KernelTuningName;
  /**
   * Read large operands from texture copies instead of storage buffers: matmul's texture kernel and
   * the fused decode GEMV against cached weight textures, the SSD scan's heavy kernels, the grouped
   * GEMM's prefill tiles, attention's keys and values.
   */
  readonly textureOperands: boolean;
  /**
   * Bind small operands (a decode step's activations) as uniform buffers where they fit
   * `maxUniformBufferBindingSize`; every pooled buffer then also gets UNIFORM usage.
   */
  readonly uniformOperands: boolean;
  /**
   * Launch shapes: `cpu-simd` — workgroups of one or two 8-lane vectors, several rows per
   * invocation so each load serves them all, parallelism sized to the CPU's cores; `gpu` — wide
   * workgroups, one row per invocation, as many invocations as the problem gives.
   */
  readonly launchShape: 'cpu-simd' | 'gpu';
}

const TUNINGS: Record<KernelTuningName, KernelTuning> = {
  software: { name: 'software', textureOperands: true, uniformOperands: true, launchShape: 'cpu-simd' },
  hardware: { name: 'hardware', textureOperands: false, uniformOperands: false, launchShape: 'gpu' },
};

/**
 * The tuning for an adapter. `override` (the `NEMOTRON_KERNEL_TUNING` variable: `software` or
 * `hardware`) picks a row regardless, so lavapipe (Vulkan, core) can run the very kernels a real
 * GPU runs.
 */
export function kernelTuningFor(info: GPUAdapterInfo, override: string | undefined = process.env.NEMOTRON_KERNEL_TUNING): KernelTuning {
  if (override !== undefined) {
    if (override !== 'software' && override !== 'hardware') throw new Error(`NEMOTRON_KERNEL_TUNING must be software or hardware, got '${override}'`);
    return TUNINGS[override];
  }
  return TUNINGS[isSoftwareAdapter(info) ? 'software' : 'hardware'];
}
