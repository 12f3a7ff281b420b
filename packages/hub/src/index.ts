/**
 * @packageDocumentation
 * Hugging Face checkpoints for nemotron-ts, independent of any model: safetensors files (lazy,
 * validated reads straight to device tensors; atomic, sharded writes), config.json, the HF cache and
 * downloads, tokenizers and chat templates.
 */
export { CheckpointFormatError, HubError } from './errors';
export { parseByteSize } from './byte-size';
export { writeFileAtomically } from './atomic-file';
export { writeFolderAtomically, recoverFolder, recoverFoldersIn, type AtomicFolderOptions } from './atomic-folder';
export { fsErrorMeaning, namingUserPath } from './fs-errors';
export { isProcessAlive } from './process-alive';
export { parseHfJson, stringifyHfJson, type JsonValue, type JsonObject } from './hf-json';

export { SAFETENSORS_DTYPES, isSafetensorsDType, safetensorsBytesPerElement, type SafetensorsDType, type StoredFloatDType } from './safetensors/dtype';
export { f16ToF32, type HostArray } from './safetensors/convert';
export { firstNonFinite } from './safetensors/non-finite';
export { MAX_HEADER_BYTES, parseHeader, readHeaderLength, encodeHeader, type SafetensorsHeader, type TensorEntry } from './safetensors/header';
export { fileSource, memorySource, type ByteSource } from './safetensors/byte-source';
export { SafetensorsReader, type LoadOptions, type HostTensor } from './safetensors/read';
export { saveSafetensors, DEFAULT_METADATA, type SaveSafetensorsOptions } from './safetensors/write';
export { saveWeights, type TensorSource, type SaveWeightsOptions, type SavedWeights } from './safetensors/sharded-write';
export { SINGLE_FILE, INDEX_FILE, parseShardIndex, encodeShardIndex, type ShardIndex } from './safetensors/shard-index';
export { Checkpoint, type CheckpointEntry } from './checkpoint';
export { parseConfigJson, readConfigJson, readGenerationConfigJson, writeConfigJson } from './config-json';
export { ChatTemplates, type ChatMessage, type ChatTemplateOptions, type TemplateSpecialTokens } from './chat';
export {
  HfTokenizer,
  loadTokenizer,
  TOKENIZER_FILE,
  TOKENIZER_CONFIG_FILE,
  SPECIAL_TOKENS_MAP_FILE,
  CHAT_TEMPLATE_FILE,
  type SpecialToken,
  type EncodeOptions,
  type DecodeOptions,
  unknownTokenText,
} from './tokenizer';
export { RepoCache, defaultHubCacheDir, normalizeEtag } from './repo-cache';
export { hubSettings, type HubSettings, type HubSettingsOptions } from './hub-settings';
export { ProgressBar, formatBytes, formatDuration, type DownloadProgress, type ProgressStream } from './progress';
export { globToRegExp, matchesAny } from './glob';
export { isRepoId } from './repo-id';
export { resolveCheckpoint, cachedSnapshot, DEFAULT_ALLOW_PATTERNS, type ResolveOptions } from './resolve';
export { savePretrainedFiles, TOKENIZER_FILES, type SavePretrainedOptions, type SavedPretrained } from './save-pretrained';
