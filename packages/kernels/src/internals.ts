/**
 * `@nemotron-ts/kernels/internals`: the runtime the kernels are built from — buffer pool, command
 * batches, pipeline cache, storages, uniform params, autograd recording, Dawn plumbing and the
 * shape/stride and reduction helpers op implementations share. For writing new kernels and for
 * benchmarks; code that only uses tensors needs the main entry point alone. No stability promise.
 */
export { BufferPool, bucketSize, type PoolBackend } from './runtime/pool';
export { CommandBatch, type BufferRange, type Dispatch } from './runtime/batch';
export { PipelineCache, type CachedPipeline } from './runtime/pipelines';
export { Storage, type StorageOwner } from './runtime/storage';
export { Params } from './runtime/params';
export { record, needsGrad, type GradNode, type BackwardRule, type GradTarget, type GradTargets, type InputGrad, type SliceGrad } from './autograd/graph';
export { openDawn, type AdapterRequest, type DawnHandles } from './device/dawn';
export type { KernelLaunch, DeviceRecording } from './device/webgpu-device';
export type { BoundRange } from './runtime/bindings';
export { contiguousStrides, assertValidShape, broadcastStrides, collapseDims, resolveReshape } from './shape';
export type { ElementwiseDef } from './ops/elementwise/definitions';
export type { ElementwiseOperand } from './ops/elementwise/elementwise.cpu';
export { elementwise, type ElementwiseOptions } from './ops/elementwise/elementwise-kernel';
export { sumTo } from './ops/layout/broadcast';
export { reduceRows } from './ops/reduce/reduce-axes';
export type { ReduceOp } from './ops/reduce/reduce.cpu';
export type { AttentionProblem, AttentionBackwardProblem, AttentionGradients, HeadView, HeadStrides, KeyRowView } from './ops/attention/attention';
