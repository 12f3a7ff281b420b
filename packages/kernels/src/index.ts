/**
 * @packageDocumentation
 * Tensors on the Dawn WebGPU device (or the CPU reference backend), WGSL kernels with a plain-TS
 * reference for each, autograd and optimizers. What kernels are built from (buffer pool, command
 * batches, pipeline cache, autograd recording, shape helpers) is in `@nemotron-ts/kernels/internals`.
 */
export { Tensor } from './tensor';
export * from './dtype';
export { sizeOf, shapesEqual, formatShape, normalizeAxis, broadcastShapes, type Shape } from './shape';
export * from './creation';
export type { JsonValue, JsonObject } from './json';
export { Generator, manualSeed, defaultGenerator } from './random';
export { tidy, keep, dispose, type Disposable } from './runtime/scope';
export type { MemoryStats } from './runtime/pool';
export { KernelProfiler, type KernelTime } from './runtime/profiler';
export { opProfiling, profilePhase, formatOpProfile, resetOpProfile, opProfileRows, type OpProfileRow } from './runtime/op-profile';
export { StepProgram } from './step-program';
export { RecordingRefusedError } from './runtime/recording';

export * from './device/device';
export * from './device/errors';
export { CpuDevice } from './device/cpu-device';
export { NativeKernels, nativeKernels, nativeUnavailableReason } from './native/library';
export { buildNativeLibrary, nativeLibraryPath, type NativeBuild } from './native/build';
export { WebGpuDevice, type GpuLimits } from './device/webgpu-device';
export type { KernelTuning, KernelTuningName } from './device/kernel-tuning';
export { BindingTooLargeError } from './runtime/bindings';
export { isSoftwareAdapter, type BackendName } from './device/dawn';

export { noGrad, enableGrad, isGradEnabled, releaseGraph } from './autograd/graph';
export { backward, backwardAsync, type BackwardOptions, type BackwardAsyncOptions } from './autograd/backward';

export * from './ops/elementwise/elementwise';
export * from './ops/layout/layout';
export { expand } from './ops/layout/broadcast';
export { sum, sumAll, mean, max, min, type ReduceOptions } from './ops/reduce/reduce';
export * from './ops/softmax/softmax';
export * from './ops/norm/norm';
export * from './ops/cumsum/cumsum';
export * from './ops/topk/topk';
export * from './ops/cross-entropy/cross-entropy';
export * from './ops/conv/conv';
export * from './ops/scan/scan';
export { mambaDecodeStep, type MambaDecodeOptions } from './ops/scan/mamba-decode';
export {
  NativeDecodeStep,
  type DecodeStepPlan,
  type DecodeLayerPlan,
  type DecodeNorm,
  type DecodeProjection,
  type MambaDecodeState,
  type AttentionDecodeState,
} from './ops/decode/native-decode';
export { attention, attentionWithStats, type AttentionOptions, type AttentionResult, type KvLayout } from './ops/attention/attention';
export * from './ops/moe/moe-route';
export { moeExperts, type MoeExpertsOptions } from './ops/moe/moe-experts';
export * from './ops/matmul/matmul';
export { fusedLinear, type FusedLinearOptions, type FusedActivation } from './ops/matmul/fused-linear';
export { textureMemoryStats as matmulTextureMemoryStats, type TextureMemoryStats as MatmulTextureMemoryStats } from './runtime/texture-pool';
export { embedding, indexSelect, gather } from './ops/index/gather';
export { indexAdd, scatterAdd } from './ops/index/scatter';
export { copyIntoAt } from './ops/index/write-at';
export { incrementInPlace } from './ops/index/increment';
export { sampleTokens, recordTokens, NON_FINITE_TOKEN, type SamplingOptions, type RecordTokensOptions } from './ops/sampling/sampling';
export { uniformHash } from './ops/sampling/counter-random';
export { detach, zeroGrad } from './autograd/detach';
export { defineFunction, type FunctionContext, type FunctionDefinition } from './autograd/function';
export { checkpoint } from './autograd/checkpoint';

export {
  Optimizer,
  decayGroups,
  disposeStateDict,
  type ParamState,
  type ParamGroup,
  type ParamGroupInput,
  type OptimizerStateDict,
  type StepOptions,
} from './optim/optimizer';
export { AdamW, ADAMW_DEFAULTS, type AdamWOptions } from './optim/adamw';
export { SGD, SGD_DEFAULTS, type SgdOptions } from './optim/sgd';
export { clipCoefficient, clipGradNorm, type ClipOptions } from './optim/clip';
export { constantSchedule, warmupCosineSchedule, warmupLinearSchedule, type LrSchedule, type WarmupDecayOptions } from './optim/schedule';
