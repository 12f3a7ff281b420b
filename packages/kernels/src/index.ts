/**
 * @packageDocumentation
 * Tensors on the Dawn WebGPU device (or the CPU reference backend), WGSL kernels with a plain-TS
 * reference for each, autograd and optimizers.
 */
export { Tensor } from './tensor';
export * from './dtype';
export * from './shape';
export * from './creation';
export { Generator, manualSeed, defaultGenerator } from './random';
export { tidy, keep, dispose } from './runtime/scope';
export type { MemoryStats } from './runtime/pool';
export { Params } from './runtime/params';

export * from './device/device';
export * from './device/errors';
export { CpuDevice } from './device/cpu-device';
export { WebGpuDevice, type GpuLimits, type KernelLaunch, type BoundRange, BindingTooLargeError } from './device/webgpu-device';
export { isSoftwareAdapter, type BackendName, type AdapterRequest } from './device/dawn';

export { noGrad, enableGrad, isGradEnabled, record, needsGrad, type GradNode, type BackwardRule, type InputGrad } from './autograd/graph';
export { backward, type BackwardOptions } from './autograd/backward';

export * from './ops/elementwise/elementwise';
export * from './ops/layout/layout';
export * from './ops/reduce/reduce';
