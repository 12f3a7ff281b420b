/**
 * Checkpoint I/O for core's `NemotronHForCausalLM` (NeMo's `ModelClass`, HF's
 * `AutoModelForCausalLM` in one class): its `fromPretrained` and `savePretrained` read and write
 * Hugging Face checkpoint folders or Hub repositories through the hub package. Core knows nothing
 * of files; this is where the two meet. Importing this module installs the I/O into core's class
 * (and completes the option types core declares empty); the class is re-exported unchanged.
 */
import { stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  GenerationConfig,
  NemotronHConfig,
  NemotronHForCausalLM,
  checkCheckpointFits,
  checkpointTensors,
  initializeWeights,
  installPretrainedIO,
  type FromPretrainedOptions,
  type SavedPretrained,
  type SavePretrainedOptions,
  loadCheckpoint,
  previewNames,
} from '@nemotron-ts/core';
import {
  Checkpoint,
  readConfigJson,
  readGenerationConfigJson,
  resolveCheckpoint,
  savePretrainedFiles,
  type DownloadProgress,
  type JsonObject,
  type SavedPretrained as SavedPretrainedFiles,
} from '@nemotron-ts/hub';
import { getDefaultDevice, hasDefaultDevice, initDevice, isFloat, type Device, type FloatDType } from '@nemotron-ts/kernels';

export { NemotronHForCausalLM, type FromPretrainedOptions, type SavedPretrained, type SavePretrainedOptions };

// Completes the types core declares empty for its fromPretrained/savePretrained.
declare module '@nemotron-ts/core' {
  /** `fromPretrained`'s options: where the checkpoint comes from and how it is loaded. */
  interface FromPretrainedOptions {
    /** Branch, tag or commit of a Hub repository (default "main"). */
    revision?: string;
    /**
     * dtype of the weights in memory (activations are always f32). 'auto' (the default) takes the
     * config's `torch_dtype` (bfloat16 → bf16), else f32. A_log, dt_bias, D and the router's
     * correction bias stay f32 whatever is chosen.
     */
    dtype?: FloatDType | 'auto';
    /** Where the weights live (default: the default device, opened with `initDevice()` if there is none yet). */
    device?: Device;
    /** The HF hub cache folder (default HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub). */
    cacheDir?: string;
    /** Hub access token (default HF_TOKEN or the saved login). */
    token?: string;
    /** Never use the network, only a local folder or the cache (default: HF_HUB_OFFLINE=1). */
    localFilesOnly?: boolean;
    /** Download progress, as bytes arrive. */
    onProgress?: (event: DownloadProgress) => void;
    /**
     * The config: field overrides in config.json's names merged over the folder's config.json (HF's
     * `from_pretrained(..., **kwargs)`, e.g. `{ num_nextn_predict_layers: 0 }`), or a whole
     * NemotronHConfig used instead of it.
     */
    config?: NemotronHConfig | JsonObject;
    /**
     * Throw when the checkpoint lacks a tensor or has one the model does not use (default true).
     * When false, each kind is one warning line instead: unexpected tensors are ignored, and missing
     * ones are initialised as `fromConfig` initialises them (seed 0), as HF does for weights "newly
     * initialized". A tensor of the wrong shape is an error either way.
     */
    strict?: boolean;
    /**
     * Throw, naming the file and tensor, when a weight holds NaN or ±Inf (default true). The bytes are
     * checked as they are read, before any device sees them (a GPU may turn NaN into 0 silently).
     */
    checkFinite?: boolean;
  }

  /** `savePretrained`'s options. */
  interface SavePretrainedOptions {
    /** Largest weight file, bytes or a string like "5GB" (default "5GB", as HF). */
    maxShardSize?: number | string;
    /** dtype of the saved weights (default: as in memory); keep-f32 tensors are always saved as F32. */
    dtype?: FloatDType;
    /** A folder whose tokenizer files are copied along (tokenizer.json, tokenizer_config.json, ...). */
    copyTokenizerFrom?: string;
  }

  /** The files written (the hub package's `SavedPretrained`). */
  interface SavedPretrained extends SavedPretrainedFiles {}
}

const TORCH_DTYPE: Readonly<Record<FloatDType, string>> = { f32: 'float32', bf16: 'bfloat16' };

installPretrainedIO({ load: fromPretrained, save: savePretrained });

/**
 * Loads a checkpoint: a local folder, or a Hub repository id (`org/name`) resolved through the HF
 * cache (downloading what is missing). Reads config.json (and generation_config.json, when
 * present, into `generationConfig`), builds the model, and streams the weights in one tensor at a
 * time (per-expert matrices are stacked on the device). The model is returned in eval mode.
 */
async function fromPretrained(pathOrRepoId: string, options: FromPretrainedOptions): Promise<NemotronHForCausalLM> {
  const start = performance.now();
  const folder = await resolveCheckpoint(pathOrRepoId, {
    revision: options.revision,
    cacheDir: options.cacheDir,
    token: options.token,
    localFilesOnly: options.localFilesOnly,
    onProgress: options.onProgress,
  });
  const configPath = join(folder, 'config.json');
  // config.json first: a folder without one is named for that, before the weights are looked at.
  const configJson = options.config instanceof NemotronHConfig ? null : await readConfigJson(configPath);
  const checkpoint = await Checkpoint.open(folder);
  const config = configJson
    ? pretrainedConfig(configPath, configJson, checkpoint, options.config as JsonObject | undefined)
    : (options.config as NemotronHConfig);
  const generationPath = join(folder, 'generation_config.json');
  const generationConfig = (await stat(generationPath).then(
    (s) => s.isFile(),
    () => false,
  ))
    ? GenerationConfig.fromJSON(await readGenerationConfigJson(generationPath), generationPath)
    : null;
  const dtype = options.dtype === undefined || options.dtype === 'auto' ? configDtype(config) : options.dtype;
  const device = options.device ?? (hasDefaultDevice() ? getDefaultDevice() : await initDevice());
  const strict = options.strict ?? true;
  const checkFinite = options.checkFinite ?? true;
  const loadOptions = { strict, tieWordEmbeddings: config.tieWordEmbeddings };
  // Shapes come free from the safetensors headers: a config that does not fit fails before allocating.
  const shapes = new Map(checkpoint.names().map((name) => [name, checkpoint.entry(name).shape]));
  const planned = checkCheckpointFits(config, shapes, configPath, loadOptions);
  const model = new NemotronHForCausalLM(config, { dtype, device });
  model.generationConfig = generationConfig;
  try {
    // Missing tensors (strict off) keep fresh initial values, not uninitialised memory.
    if (planned.missing.length) initializeWeights(model, { seed: 0 });
    model.loadReport = await loadCheckpoint(
      model,
      shapes,
      (key, target) => checkpoint.load(key, { device: target.device, dtype: isFloat(target.dtype) ? target.dtype : undefined, checkFinite }),
      loadOptions,
    );
    const { missing, unexpected } = model.loadReport;
    if (missing.length)
      console.warn(
        `nemotron-ts: ${folder} lacks ${missing.length} tensor(s) the model needs (${previewNames(missing)}); loaded with strict off, they are freshly initialised`,
      );
    if (unexpected.length)
      console.warn(
        `nemotron-ts: ${folder} has ${unexpected.length} tensor(s) the model does not use (${previewNames(unexpected)}); loaded with strict off, they are ignored`,
      );
  } catch (e) {
    model.dispose();
    throw e;
  }
  // Each loaded tensor replaced the slot the model was built with; the CPU pool took those back
  // (bench-small: 24 MiB bf16, 47 MiB f32) and would hold them until a generation ends. The
  // load's JS garbage goes too.
  if (device.kind === 'cpu') device.releaseIdleMemory(performance.now() - start);
  return model.eval();
}

/**
 * Writes config.json, generation_config.json (when the model has a generation config) and the
 * weights (HF's on-disk names, sharded past `maxShardSize`) into `folder`, loadable by
 * transformers and by {@link fromPretrained}.
 */
async function savePretrained(model: NemotronHForCausalLM, folder: string, options: SavePretrainedOptions): Promise<SavedPretrained> {
  const dtype = options.dtype ?? (model.lmHead.weight.dtype as FloatDType);
  const config = { ...model.config.toJSON(), torch_dtype: TORCH_DTYPE[dtype] };
  return savePretrainedFiles(folder, {
    tensors: checkpointTensors(model, 'hf', { dtype }),
    config,
    generationConfig: model.generationConfig ? (model.generationConfig.toJSON() as JsonObject) : undefined,
    maxShardSize: options.maxShardSize,
    copyFrom: options.copyTokenizerFrom,
  });
}

/**
 * The model's config: config.json with `overrides` merged (or the given config). A config with MTP
 * layers over a checkpoint without a single `mtp.*` tensor (what an HF re-save leaves: transformers
 * has no MTP head) loads with MTP off, with one warning line — unless the caller set
 * num_nextn_predict_layers explicitly.
 */
function pretrainedConfig(configPath: string, configJson: JsonObject, checkpoint: Checkpoint, overrides: JsonObject | undefined): NemotronHConfig {
  const json = { ...configJson, ...(overrides ?? {}) };
  const source = overrides ? `${configPath} with overrides ${JSON.stringify(overrides)}` : configPath;
  const config = NemotronHConfig.fromJSON(json, { source });
  if (!config.mtpEnabled || overrides?.num_nextn_predict_layers !== undefined) return config;
  if (checkpoint.names().some((name) => name.startsWith('mtp.'))) return config;
  console.warn(
    `nemotron-ts: ${configPath} has num_nextn_predict_layers = ${config.numNextnPredictLayers} but ${dirname(configPath)} holds no mtp.* tensors (an HF re-save drops them); loading without MTP`,
  );
  return NemotronHConfig.fromJSON({ ...json, num_nextn_predict_layers: 0 }, { source });
}

/** The weight dtype a config.json asks for (`torch_dtype`, or newer HF's `dtype`); f32 when absent. */
function configDtype(config: NemotronHConfig): FloatDType {
  const named = config.extra.torch_dtype ?? config.extra.dtype;
  return named === 'bfloat16' ? 'bf16' : 'f32';
}
