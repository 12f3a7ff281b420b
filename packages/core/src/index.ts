/**
 * @packageDocumentation
 * @nemotron-ts/core: the Nemotron-H / NemotronV3 model — config, module system, module tree,
 * checkpoint (state-dict) adapter and weight initialisation.
 */
export * from './config';

export * from './nn/module';
export * from './nn/linear';
export * from './nn/embedding';
export * from './nn/conv1d';

export * from './nemotron/sequence';
export * from './nemotron/checkpointed';
export * from './nemotron/cache';
export * from './nemotron/inputs';
export * from './nemotron/rms-norm';
export * from './nemotron/mamba2';
export * from './nemotron/attention';
export * from './nemotron/mlp';
export * from './nemotron/moe';
export * from './nemotron/block';
export * from './nemotron/model';
export * from './nemotron/mtp';
export * from './nemotron/output';
export * from './nemotron/causal-lm';
export * from './nemotron/init';
export * from './nemotron/state-dict';

export * from './generation/generation-config';
export * from './generation/text-stream';
export * from './generation/generate';

export * from './nn/linear-adapter';
export * from './lora/lora-config';
export * from './lora/lora-adapter';
export * from './lora/apply';
export * from './lora/peft-format';
