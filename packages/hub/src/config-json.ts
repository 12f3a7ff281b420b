/**
 * config.json and generation_config.json as plain JSON objects: reads accept Python's
 * `Infinity`/`NaN` literals and name the file (and line and column) in errors; writes produce HF's
 * format (indent 2, sorted keys, bare `Infinity`). Which fields a model's config holds, and of what
 * kind, is the model package's job (e.g. core's `NemotronHConfig.fromJSON`), not this one's.
 */
import { stat } from 'node:fs/promises';
import { writeFileAtomically } from './atomic-file';
import { CheckpointFormatError } from './errors';
import { parseHfJson, stringifyHfJson, type JsonObject } from './hf-json';

/** Parses config text into an object; `file` names the source in errors. */
export function parseConfigJson(text: string, file: string): JsonObject {
  const value = parseHfJson(text, file);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new CheckpointFormatError(file, undefined, 'must hold a JSON object');
  return value;
}

/** Reads a config.json into an object. */
export async function readConfigJson(path: string): Promise<JsonObject> {
  return parseConfigJson(await readText(path), path);
}

/** Reads a generation_config.json into an object. */
export async function readGenerationConfigJson(path: string): Promise<JsonObject> {
  return parseConfigJson(await readText(path), path);
}

/** Writes a config (or generation config) as HF does, atomically. */
export async function writeConfigJson(path: string, config: JsonObject): Promise<void> {
  await writeFileAtomically(path, stringifyHfJson(config));
}

async function readText(path: string): Promise<string> {
  const info = await stat(path).catch(() => null);
  if (!info?.isFile()) throw new CheckpointFormatError(path, undefined, 'does not exist');
  return Bun.file(path).text();
}
