/**
 * @packageDocumentation
 * nemotron-ts: Nemotron-H hybrid language models in TypeScript on WebGPU. The entry point is
 * {@link NemotronHForCausalLM} (`fromPretrained`, `fromConfig`, `forward`, `savePretrained`); the
 * workspace packages are re-exported as namespaces.
 */
export { NemotronHForCausalLM, type FromPretrainedOptions, type SavePretrainedOptions } from './pretrained';
/** NeMo's name for a model module's entry class. */
export { NemotronHForCausalLM as ModelClass } from './pretrained';
export {
  NemotronHConfig,
  NemotronHybridCache,
  GenerationConfig,
  type CausalLMInputs,
  type CausalLMOutput,
  type GenerateOptions,
  type GenerateResult,
  type GenerationEvent,
  type HybridCacheOptions,
  type MtpInputs,
  type MtpOutput,
} from '@nemotron-ts/core';
export * as kernels from '@nemotron-ts/kernels';
export * as core from '@nemotron-ts/core';
export * as hub from '@nemotron-ts/hub';
export { saveLoraAdapter, loadLoraAdapter, loadLoraAdapterWeights, type SaveLoraAdapterOptions, type LoadLoraAdapterOptions } from './peft-files';
export {
  applyLora,
  mergeLora,
  unmergeLora,
  removeLora,
  loraHandle,
  reseedLoraDropout,
  DEFAULT_LORA_TARGETS,
  type LoraOptions,
  type LoraHandle,
} from '@nemotron-ts/core';
export * as train from './train';
export { ParallelModel, type ParallelOptions, type ParallelFromPretrainedOptions, type ParallelMode, type ParallelSizes } from './parallel';
export * as parallel from '@nemotron-ts/parallel';
