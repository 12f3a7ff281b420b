/**
 * LoRA adapters as Hugging Face PEFT folders: `adapter_model.safetensors` + `adapter_config.json`,
 * loadable by `PeftModel.from_pretrained` on transformers' native `NemotronHForCausalLM` and by
 * {@link loadLoraAdapter} (which also reads what PEFT writes, on the native or the remote-code
 * class, from a folder or a Hub repository). Core knows the format (`peftTensorKeys`,
 * `nativePeftKey`, `peftAdapterConfig`); the files are read and written here.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ADAPTER_CONFIG_FILE,
  ADAPTER_WEIGHTS_FILE,
  applyLora,
  loraHandle,
  nativePeftKey,
  parsePeftAdapterConfig,
  peftAdapterConfig,
  peftTensorKeys,
  removeLora,
  type LoraHandle,
  type LoraOptions,
  type Module,
  unsupportedPeftKey,
} from '@nemotron-ts/core';
import {
  SafetensorsReader,
  parseHfJson,
  resolveCheckpoint,
  saveSafetensors,
  writeFileAtomically,
  writeFolderAtomically,
  type ResolveOptions,
} from '@nemotron-ts/hub';
import { copyInto, formatShape, noGrad, shapesEqual, type Tensor } from '@nemotron-ts/kernels';

export interface SaveLoraAdapterOptions {
  /** `base_model_name_or_path` in adapter_config.json: the Hub id or folder of the base model. */
  baseModelNameOrPath?: string | null;
}

/**
 * Writes the adapters of `model` (see `applyLora`) into `folder` as a PEFT LoRA adapter, f32. The
 * folder is written atomically (a temporary sibling renamed into place; other files in it are kept),
 * so it never holds a config without its weights. Merged adapters are saved as well (their A and B are kept).
 */
export async function saveLoraAdapter(model: Module, folder: string, options: SaveLoraAdapterOptions = {}): Promise<void> {
  const handle = loraHandle(model);
  if (!handle) throw new Error('saveLoraAdapter: the model has no LoRA adapters (applyLora first)');
  const tensors = new Map<string, Tensor>(peftTensorKeys(handle).map(({ key, parameter }) => [key, model.getTensor(parameter)]));
  const config = peftAdapterConfig(handle.config, options.baseModelNameOrPath ?? null);
  await writeFolderAtomically(
    folder,
    async (temp) => {
      await saveSafetensors(join(temp, ADAPTER_WEIGHTS_FILE), tensors);
      await writeFileAtomically(join(temp, ADAPTER_CONFIG_FILE), `${JSON.stringify(config, null, 2)}\n`);
    },
    { keepOtherFiles: true },
  );
}

/** Where {@link loadLoraAdapter} finds a Hub adapter (each defaults as for `fromPretrained`). */
export type LoadLoraAdapterOptions = Pick<ResolveOptions, 'revision' | 'cacheDir' | 'token' | 'localFilesOnly' | 'onProgress'>;

/**
 * Reads the PEFT LoRA adapter in `folderOrRepoId` (a folder, or a Hub repository id resolved
 * through the HF cache, fetching only adapter_config.json and adapter_model.safetensors), adds
 * adapters to `model` as its config says and loads their weights, unmerged. Keys may carry the
 * native-class prefix (`base_model.model.model.layers…`) or the remote-code one
 * (`base_model.model.backbone.layers…`). Every key and shape is checked before anything is loaded;
 * a missing, unexpected or mis-shaped tensor throws an error naming the file and key, and leaves
 * the model without adapters.
 */
export async function loadLoraAdapter(model: Module, folderOrRepoId: string, options: LoadLoraAdapterOptions = {}): Promise<LoraHandle> {
  const folder = await resolveCheckpoint(folderOrRepoId, { ...options, allowPatterns: [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE] });
  return loadLoraAdapterFolder(model, folder);
}

async function loadLoraAdapterFolder(model: Module, folder: string): Promise<LoraHandle> {
  const options = await readAdapterConfig(folder);
  const reader = await openAdapterWeights(folder);
  const handle = applyLora(model, options);
  try {
    await loadAdapterWeights(model, handle, reader, options);
  } catch (e) {
    removeLora(model);
    throw e;
  }
  return handle;
}

/**
 * Loads the weights of the PEFT LoRA adapter in `folder` into the adapters `model` already has (as
 * a resumed LoRA training run does, its adapters applied with the run's options): the folder's r,
 * lora_alpha and target_modules must be the adapters'. Checks as {@link loadLoraAdapter}. The
 * values are copied into the existing parameter tensors, so an optimizer holding them keeps working.
 */
export async function loadLoraAdapterWeights(model: Module, folder: string): Promise<void> {
  const handle = loraHandle(model);
  if (!handle) throw new Error('loadLoraAdapterWeights: the model has no LoRA adapters (applyLora first)');
  const options = await readAdapterConfig(folder);
  const { r, alpha, targetModules } = handle.config;
  const same = options.r === r && options.alpha === alpha && JSON.stringify(options.targetModules) === JSON.stringify(targetModules);
  if (!same) {
    const describe = (o: { r: number; alpha: number; targetModules: readonly string[] | string }) =>
      `r ${o.r}, alpha ${o.alpha}, target_modules ${JSON.stringify(o.targetModules)}`;
    throw new Error(
      `loadLoraAdapterWeights: ${join(folder, ADAPTER_CONFIG_FILE)} has ${describe(options)}; the model's adapters have ${describe(handle.config)}`,
    );
  }
  await loadAdapterWeights(model, handle, await openAdapterWeights(folder), options, 'in place');
}

async function readAdapterConfig(folder: string): Promise<LoraOptions> {
  const configPath = join(folder, ADAPTER_CONFIG_FILE);
  const configText = await readFile(configPath, 'utf8').catch((e: unknown) => {
    throw new Error(`loadLoraAdapter: cannot read ${configPath}: ${(e as Error).message}`);
  });
  return parsePeftAdapterConfig(parseHfJson(configText, configPath), configPath);
}

async function openAdapterWeights(folder: string): Promise<SafetensorsReader> {
  const weightsPath = join(folder, ADAPTER_WEIGHTS_FILE);
  if (
    !(await stat(weightsPath).then(
      (s) => s.isFile(),
      () => false,
    ))
  )
    throw new Error(`loadLoraAdapter: ${weightsPath} does not exist`);
  return SafetensorsReader.open(weightsPath);
}

/** Checks every key and shape of the file against `handle`'s adapters, then loads them (replacing the tensors, or copying into them). */
async function loadAdapterWeights(
  model: Module,
  handle: LoraHandle,
  reader: SafetensorsReader,
  options: LoraOptions,
  mode: 'replace' | 'in place' = 'replace',
): Promise<void> {
  const weightsPath = reader.file;
  // The file's keys in our naming (the remote-code backbone prefix mapped to the native one).
  const fileKeyOf = new Map<string, string>();
  for (const name of reader.names()) {
    const native = nativePeftKey(name);
    const other = fileKeyOf.get(native);
    if (other !== undefined) throw new Error(`loadLoraAdapter: ${weightsPath} has both '${other}' and '${name}', which name the same layer`);
    fileKeyOf.set(native, name);
  }
  const keys = peftTensorKeys(handle);
  const expected = new Set(keys.map((k) => k.key));
  const missing = keys.filter(({ key }) => !fileKeyOf.has(key)).map(({ key }) => key);
  if (missing.length)
    throw new Error(
      `loadLoraAdapter: ${weightsPath} lacks '${missing[0]}'${missing.length > 1 ? ` and ${missing.length - 1} more adapter tensors` : ''} (target_modules ${JSON.stringify(options.targetModules)})`,
    );
  const unexpected = [...fileKeyOf].filter(([native]) => !expected.has(native)).map(([, name]) => name);
  if (unexpected.length) {
    const why = unsupportedPeftKey(unexpected[0]!);
    throw new Error(
      `loadLoraAdapter: ${weightsPath} has '${unexpected[0]}'${unexpected.length > 1 ? ` and ${unexpected.length - 1} more tensors` : ''}, ${why ?? 'which no adapted layer of this model takes'}`,
    );
  }
  for (const { key, parameter } of keys) {
    const want = model.getTensor(parameter).shape;
    const got = reader.entry(fileKeyOf.get(key)!).shape;
    if (!shapesEqual(want, got))
      throw new Error(`loadLoraAdapter: ${weightsPath} has '${fileKeyOf.get(key)}' of shape ${formatShape(got)}; this model needs ${formatShape(want)}`);
  }
  for (const { key, parameter } of keys) {
    const t = await reader.load(fileKeyOf.get(key)!, { device: model.getTensor(parameter).device, dtype: 'f32', checkFinite: true });
    try {
      if (mode === 'replace') model.setTensor(parameter, t);
      else noGrad(() => copyInto(model.getTensor(parameter), t));
    } finally {
      t.dispose();
    }
  }
}
