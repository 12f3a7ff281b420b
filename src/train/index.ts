/** Fine-tuning (full or LoRA): data, trainer, checkpoints. */
export { DataError, readDocuments } from './documents';
export { encodeConversation, parseConversations, isChatJsonl, type EncodedConversation } from './conversations';
export { packRows, padRows, type LabelledExample } from './packing';
export { rowBatch, type RowBatch, type RowTargets } from './row-batch';
export { tokenizeDocuments, cutBlocks, checkVocab } from './token-blocks';
export { BlockSampler } from './block-sampler';
export { loadTrainingData, type TrainingData, type TrainingDataKind, type TrainingDataOptions } from './training-data';
export { skipsWeightDecay, weightDecayGroups, type NamedGroup } from './param-groups';
export { Trainer, NonFiniteLossError, type TrainerOptions, type StepLog, type EvalLog } from './trainer';
export { checkpointDir, latestCheckpoint, readTrainerState, TRAINER_STATE_FILE, OPTIMIZER_FILE, type TrainerState, type RunSettings, type LoraRunSettings } from './trainer-state';
