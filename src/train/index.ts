/** Fine-tuning (full or LoRA): data, trainer, checkpoints. */
export { DataError, readDocuments } from './documents';
export { tokenizeDocuments, cutBlocks, checkVocab } from './token-blocks';
export { BlockSampler } from './block-sampler';
export { dataFingerprint, loadTrainingData, type DataFingerprint, type TrainingData, type TrainingDataOptions } from './training-data';
export { skipsWeightDecay, weightDecayGroups, type NamedGroup } from './param-groups';
export { Trainer, NonFiniteLossError, type TrainerOptions, type StepLog, type EvalLog, type ChangedHyperparameter } from './trainer';
export { checkpointDir, latestCheckpoint, pruneCheckpoints, readTrainerState, removeUnfinishedCheckpoints, TRAINER_STATE_FILE, OPTIMIZER_FILE, type TrainerState, type RunSettings, type LoraRunSettings, type Hyperparameters } from './trainer-state';
export { lockOutDir, OutDirBusyError, OUT_DIR_LOCK_FILE, type OutDirLock, type LockOwner } from './out-dir-lock';
