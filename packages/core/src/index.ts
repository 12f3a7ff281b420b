/**
 * @packageDocumentation
 * @nemotron-ts/core: the Nemotron-H / NemotronV3 model — config, module system, module tree,
 * checkpoint (state-dict) adapter and weight initialisation. Exports are listed by name: helpers
 * the modules share (input preparation, config kind checks, …) stay internal.
 */
export {
  ConfigError,
  NemotronHConfig,
  type LayerKind,
  type NemotronHScalarFields,
  type NemotronHStructuredFields,
  type NemotronHConfigInit,
  type ConfigSourceOptions,
  type JsonValue,
  type JsonObject,
} from './config';

export {
  formatLoadReport,
  previewNames,
  Module,
  ModuleList,
  type Parameter,
  type TensorKind,
  type TensorSlotOptions,
  type NamedTensor,
  type Placement,
  type ShapeMismatch,
  type LoadReport,
  type ShapeLabels,
  type LoadOptions,
} from './nn/module';
export { Linear, type LinearOptions, type FusedProjection } from './nn/linear';
export { Embedding } from './nn/embedding';
export { DepthwiseConv1d, type DepthwiseConv1dOptions } from './nn/conv1d';

export {
  NemotronHybridCache,
  type AttentionLayerCache,
  type MambaLayerCache,
  type LayerCache,
  type HybridCacheOptions,
  type CacheMemoryStats,
  type CachedPrefill,
  type CachedDecode,
} from './nemotron/cache';
export {
  prepareInputs,
  checkTokenIds,
  checkLabels,
  checkAttentionMask,
  checkPaddingLayout,
  checkCuSeqlens,
  rowsShape,
  IGNORE_INDEX,
  type Rows,
  type PaddingLayout,
  type ModelInputs,
  type PreparedInputs,
} from './nemotron/inputs';
export type { SequenceInfo } from './nemotron/sequence';
export { RMSNorm, GatedRMSNorm } from './nemotron/rms-norm';
export { Mamba2Mixer } from './nemotron/mamba2';
export { Attention } from './nemotron/attention';
export { MLP } from './nemotron/mlp';
export { TopkRouter, RoutedExperts, MoE } from './nemotron/moe';
export { NemotronHBlock, type Mixer } from './nemotron/block';
export { prefillPositions, decodePosition, decodeBlocks, decodeHeadLogits, RecordedDecode } from './nemotron/decode';
export { NemotronHModel, NemotronV3Model, type BackboneOutput } from './nemotron/model';
export { MtpSublayer, MultiTokenPrediction } from './nemotron/mtp';
export {
  NemotronHForCausalLM,
  type FromConfigOptions,
  type InitializeWeightsOptions,
  type ResizeTokenEmbeddingsOptions,
  type CausalLMInputs,
  type CausalLMOutput,
  type MtpInputs,
  type MtpOutput,
} from './nemotron/causal-lm';
export { NemotronHCausalLMOutputWithPast, type CausalLMOutputFields } from './nemotron/output';
export {
  installPretrainedIO,
  type FromPretrainedOptions,
  type SavePretrainedOptions,
  type SavedPretrained,
  type PretrainedIO,
} from './nemotron/pretrained-io';
export { initializeWeights, type InitOptions, type InitTarget } from './nemotron/init';
export {
  planCheckpointLoad,
  loadCheckpoint,
  planCheckpointExport,
  checkpointTensors,
  checkpointGradients,
  exportCheckpoint,
  CHECKPOINT_SHAPE_LABELS,
  type CheckpointFormat,
  type TensorInfo,
  type LoadEntry,
  type LoadPlan,
  type PlanOptions,
  type LoadTarget,
  type TensorLoader,
  type LoadCheckpointOptions,
  type ExportEntry,
  type CheckpointTensorsOptions,
} from './nemotron/state-dict';
export { modelTensorInfos, planPretrainedLoad, checkCheckpointFits, type FitOptions } from './nemotron/load-plan';

export {
  resolveGeneration,
  GenerationConfig,
  type GenerationConfigFields,
  type DecodingOptions,
  type ResolvedGeneration,
} from './generation/generation-config';
export { TextStream, type TokenDecoder } from './generation/text-stream';
export {
  generateStream,
  generate,
  type GenerateOptions,
  type GenerationEvent,
  type FinishReason,
  type GenerationStats,
  type GenerateResult,
} from './generation/generate';

export type { LinearAdapter } from './nn/linear-adapter';
export {
  resolveLoraOptions,
  peftRefusedLayers,
  matchesTarget,
  DEFAULT_LORA_TARGETS,
  PEFT_REFUSED_MAMBA_MODULES,
  type LoraOptions,
  type LoraConfig,
} from './lora/lora-config';
export { LoraAdapter, type LoraAdapterOptions } from './lora/lora-adapter';
export { applyLora, loraHandle, reseedLoraDropout, mergeLora, unmergeLora, removeLora, type LoraHandle } from './lora/apply';
export {
  peftTensorKeys,
  nativePeftKey,
  unsupportedPeftKey,
  peftAdapterConfig,
  parsePeftAdapterConfig,
  ADAPTER_WEIGHTS_FILE,
  ADAPTER_CONFIG_FILE,
  type PeftTensorKey,
} from './lora/peft-format';
