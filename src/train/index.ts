/** Fine-tuning (full or LoRA): data, trainer, checkpoints. */
export { DataError, readDocuments } from './documents';
export { encodeConversation, parseConversations, isChatJsonl, type EncodedConversation } from './conversations';
export { packRows, padRows, type LabelledExample } from './packing';
export { rowBatch, type RowBatch, type RowTargets } from './row-batch';
export { tokenizeDocuments, cutBlocks, checkVocab } from './token-blocks';
export { BlockSampler } from './block-sampler';
export { dataFingerprint, loadTrainingData, type DataFingerprint, type TrainingData, type TrainingDataKind, type TrainingDataOptions } from './training-data';
export { skipsWeightDecay, weightDecayGroups, type NamedGroup } from './param-groups';
export { noWeightDecayNames, parallelBatch } from './parallel-batch';
export { ParallelTrainer } from './parallel-trainer';
export { Trainer, NonFiniteLossError, type TrainerOptions, type StepLog, type EvalLog } from './trainer';
export { changedHyperparameters, checkResumable, runSettings, type ChangedHyperparameter, type RunShape } from './run-settings';
export {
  checkpointDir,
  latestCheckpoint,
  pruneCheckpoints,
  readTrainerState,
  removeUnfinishedCheckpoints,
  TRAINER_STATE_FILE,
  OPTIMIZER_FILE,
  type TrainerState,
  type RunSettings,
  type LoraRunSettings,
  type Hyperparameters,
} from './trainer-state';
export { lockOutDir, OutDirBusyError, OUT_DIR_LOCK_FILE, type OutDirLock, type LockOwner } from './out-dir-lock';
