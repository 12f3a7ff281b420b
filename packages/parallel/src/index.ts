/**
 * @packageDocumentation
 * @nemotron-ts/parallel: pipeline, data and expert parallelism over Bun Workers, one device each.
 */
export { HostTensor, toHost, fromHost } from './host-tensor';
export { encodeMessage, decodeMessage, tensorBytes, type WireMessage } from './wire';
export { parseDeviceSpec, parseWorkerDevice, resolveDevices, type WorkerDeviceSpec } from './device-spec';
export { WorkerGroup, WorkerFailure, type WorkerGroupOptions, type CallOptions } from './worker-group';
export type { OpenedDevice } from './protocol';
export { planStages, stageOwns, type StagePlan, type SplitOptions } from './stage-plan';
export {
  PipelineStage,
  splitIntoStages,
  isPipelineParallelStage,
  type StageBackbone,
  type StageLayers,
  type TensorMeta,
  type StageMetas,
} from './pipeline-stage';
export { scheduleOps, splitRows, type ScheduleName, type ScheduleOp } from './schedules';
export type { ParallelBatch } from './batch';
export { clipCoefficient, type TrainOptimizerOptions } from './gradient-ops';
export type { AdamParamState, NamedOptimizerState } from './optimizer-state';
export {
  PipelineParallel,
  type PipelineOptions,
  type PipelineLayout,
  type PipelineRunOptions,
  type PipelineForwardResult,
  type PipelineGenerateOptions,
  type PipelineGenerateResult,
  type TransferStats,
} from './pipeline';
export { DataParallel, type DataParallelOptions } from './data-parallel';
export { ExpertParallel, type ExpertParallelOptions } from './expert-parallel';
