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
export { tidy, keep, dispose, type Disposable } from './runtime/scope';
export { BufferPool, bucketSize, type MemoryStats, type PoolBackend } from './runtime/pool';
export { CommandBatch, type BufferRange, type Dispatch } from './runtime/batch';
export { PipelineCache, type CachedPipeline } from './runtime/pipelines';
export { Storage, type StorageOwner } from './runtime/storage';
export { Params } from './runtime/params';
export { StepProgram } from './step-program';
export { RecordingRefusedError } from './runtime/recording';

export * from './device/device';
export * from './device/errors';
export { CpuDevice } from './device/cpu-device';
export { NativeKernels, nativeKernels, nativeUnavailableReason } from './native/library';
export { buildNativeLibrary, nativeLibraryPath, type NativeBuild } from './native/build';
export { WebGpuDevice, type GpuLimits, type KernelLaunch, type BoundRange, type DeviceRecording, BindingTooLargeError } from './device/webgpu-device';
export { isSoftwareAdapter, openDawn, type BackendName, type AdapterRequest, type DawnHandles } from './device/dawn';

export { noGrad, enableGrad, isGradEnabled, record, needsGrad, type GradNode, type BackwardRule, type InputGrad } from './autograd/graph';
export { backward, type BackwardOptions } from './autograd/backward';

export * from './ops/elementwise/elementwise';
export type { ElementwiseDef } from './ops/elementwise/definitions';
export type { ElementwiseOperand } from './ops/elementwise/elementwise.cpu';
export * from './ops/layout/layout';
export * from './ops/reduce/reduce';
export type { ReduceOp } from './ops/reduce/reduce.cpu';
export * from './ops/softmax/softmax';
export * from './ops/norm/norm';
export * from './ops/cumsum/cumsum';
export * from './ops/topk/topk';
export * from './ops/cross-entropy/cross-entropy';
export * from './ops/conv/conv';
export * from './ops/scan/scan';
export { mambaDecodeStep, type MambaDecodeOptions } from './ops/scan/mamba-decode';
export * from './ops/attention/attention';
export * from './ops/moe/moe-route';
export { moeExperts, type MoeExpertsOptions } from './ops/moe/moe-experts';
export * from './ops/matmul/matmul';
export { fusedLinear, type FusedLinearOptions, type FusedActivation } from './ops/matmul/fused-linear';
export { textureMemoryStats as matmulTextureMemoryStats, type TextureMemoryStats as MatmulTextureMemoryStats } from './ops/matmul/packed-texture';
export { embedding, indexSelect, gather } from './ops/index/gather';
export { indexAdd, scatterAdd } from './ops/index/scatter';
export { copyIntoAt } from './ops/index/write-at';
export { incrementInPlace } from './ops/index/increment';
export { sampleTokens, recordTokens, NON_FINITE_TOKEN, type SamplingOptions, type RecordTokensOptions } from './ops/sampling/sampling';
export { uniformHash } from './ops/sampling/counter-random';
export { detach, zeroGrad } from './autograd/detach';
export { defineFunction, type FunctionContext, type FunctionDefinition } from './autograd/function';
export { checkpoint } from './autograd/checkpoint';

export { Optimizer, decayGroups, disposeStateDict, type ParamState, type ParamGroup, type ParamGroupInput, type OptimizerStateDict, type StepOptions } from './optim/optimizer';
export { AdamW, ADAMW_DEFAULTS, type AdamWOptions } from './optim/adamw';
export { SGD, SGD_DEFAULTS, type SgdOptions } from './optim/sgd';
export { clipGradNorm, type ClipOptions } from './optim/clip';
export { constantSchedule, warmupCosineSchedule, warmupLinearSchedule, type LrSchedule, type WarmupDecayOptions } from './optim/schedule';
