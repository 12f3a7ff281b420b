/**
 * The safetensors header: an 8-byte little-endian length N, then N bytes of UTF-8 JSON mapping each
 * tensor name to `{dtype, shape, data_offsets}` (offsets relative to the data area after the
 * header), plus an optional `__metadata__` string→string map. Everything in it is validated before
 * any offset is trusted.
 */
import { CheckpointFormatError } from '../errors';
import { compareCodePoints } from '../code-point-order';
import { isSafetensorsDType, safetensorsBytesPerElement, type SafetensorsDType } from './dtype';

/** Headers above this size are rejected (the reference implementation uses the same bound). */
export const MAX_HEADER_BYTES = 100_000_000;

/** One tensor's header entry; `begin`/`end` are byte offsets into the data area. */
export interface TensorEntry {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  readonly begin: number;
  readonly end: number;
}

/** A validated header. */
export interface SafetensorsHeader {
  /** Entries in header order. */
  readonly tensors: ReadonlyMap<string, TensorEntry>;
  readonly metadata: Readonly<Record<string, string>> | null;
  /** File offset of the data area (8 + header length). */
  readonly dataStart: number;
  /** Size of the data area in bytes. */
  readonly dataSize: number;
}

const METADATA_KEY = '__metadata__';
const ENTRY_KEYS = new Set(['dtype', 'shape', 'data_offsets']);

/**
 * Validates the 8-byte length prefix against the file size and returns the header length.
 * `file` names the file in errors.
 */
export function readHeaderLength(prefix: Uint8Array, fileSize: number, file: string): number {
  if (fileSize < 8 || prefix.byteLength < 8) {
    throw new CheckpointFormatError(
      file,
      'header length',
      `truncated: the file has ${fileSize} bytes, but a safetensors file starts with an 8-byte header length`,
    );
  }
  const length = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (length > BigInt(fileSize - 8)) {
    throw new CheckpointFormatError(
      file,
      'header length',
      `${length} bytes, beyond the end of the file (${fileSize} bytes): the file is truncated or not safetensors`,
    );
  }
  if (length > BigInt(MAX_HEADER_BYTES)) {
    throw new CheckpointFormatError(file, 'header length', `${length} bytes, above the ${MAX_HEADER_BYTES}-byte limit`);
  }
  if (length < 2n) throw new CheckpointFormatError(file, 'header length', `${length} bytes is too short for a JSON header`);
  return Number(length);
}

/** Parses and validates the header JSON of a file of `fileSize` bytes. */
export function parseHeader(json: Uint8Array, fileSize: number, file: string): SafetensorsHeader {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(json);
  } catch {
    throw new CheckpointFormatError(file, 'header', 'is not valid UTF-8');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new CheckpointFormatError(file, 'header', `is not valid JSON (${(e as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new CheckpointFormatError(file, 'header', 'must be a JSON object mapping tensor names to entries');
  }
  const dataStart = 8 + json.byteLength;
  const dataSize = fileSize - dataStart;
  let metadata: Record<string, string> | null = null;
  const tensors = new Map<string, TensorEntry>();
  for (const [name, value] of Object.entries(parsed as Record<string, unknown>)) {
    if (name === METADATA_KEY) metadata = parseMetadata(value, file);
    else tensors.set(name, parseEntry(name, value, dataSize, file));
  }
  checkNoOverlap([...tensors.values()], file);
  // As the reference reader: the tensors end where the file ends (appended bytes mean a damaged file).
  let end = 0;
  for (const e of tensors.values()) end = Math.max(end, e.end);
  if (end < dataSize) {
    throw new CheckpointFormatError(
      file,
      'data',
      `the file has ${dataSize - end} bytes after the last tensor (${fileSize} bytes, the header accounts for ${dataStart + end}): the file was appended to or damaged`,
    );
  }
  return { tensors, metadata, dataStart, dataSize };
}

function parseMetadata(value: unknown, file: string): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new CheckpointFormatError(file, METADATA_KEY, 'must be an object of string values');
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (typeof v !== 'string') throw new CheckpointFormatError(file, `${METADATA_KEY}.${k}`, `must be a string, got ${describe(v)}`);
    out[k] = v;
  }
  return out;
}

function parseEntry(name: string, value: unknown, dataSize: number, file: string): TensorEntry {
  const at = `tensor '${name}'`;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new CheckpointFormatError(file, at, `entry must be an object with dtype, shape and data_offsets, got ${describe(value)}`);
  }
  const entry = value as Record<string, unknown>;
  for (const key of Object.keys(entry)) {
    if (!ENTRY_KEYS.has(key)) throw new CheckpointFormatError(file, at, `unknown field '${key}'`);
  }
  const dtype = entry.dtype;
  if (!isSafetensorsDType(dtype)) throw new CheckpointFormatError(file, `${at} dtype`, `unknown dtype ${describe(dtype)}`);
  const shape = entry.shape;
  if (!Array.isArray(shape) || !shape.every(isByteCount)) {
    throw new CheckpointFormatError(file, `${at} shape`, `must be an array of non-negative integers, got ${describe(shape)}`);
  }
  const offsets = entry.data_offsets;
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isByteCount)) {
    throw new CheckpointFormatError(file, `${at} data_offsets`, `must be [begin, end] with non-negative integers, got ${describe(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) throw new CheckpointFormatError(file, `${at} data_offsets`, `begin ${begin} is after end ${end}`);
  if (end > dataSize) {
    throw new CheckpointFormatError(file, `${at} data_offsets`, `[${begin}, ${end}] runs past the data area of ${dataSize} bytes (file truncated?)`);
  }
  let elements = 1;
  for (const d of shape as number[]) elements *= d;
  const bytes = elements * safetensorsBytesPerElement(dtype);
  if (bytes !== end - begin) {
    throw new CheckpointFormatError(
      file,
      at,
      `shape [${shape.join(', ')}] of ${dtype} needs ${bytes} bytes, but data_offsets [${begin}, ${end}] span ${end - begin}`,
    );
  }
  return { name, dtype, shape: Object.freeze([...(shape as number[])]), begin, end };
}

function checkNoOverlap(entries: TensorEntry[], file: string): void {
  const sorted = entries.filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (cur.begin < prev.end) {
      throw new CheckpointFormatError(
        file,
        `tensor '${cur.name}' data_offsets`,
        `[${cur.begin}, ${cur.end}] overlaps tensor '${prev.name}' at [${prev.begin}, ${prev.end}]`,
      );
    }
  }
}

function isByteCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function describe(v: unknown): string {
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/**
 * Encodes a header: the 8-byte length, then compact JSON with `__metadata__` and the entries in
 * sorted key order (as the reference writer does), padded with spaces so the data area starts at a
 * multiple of 8 bytes.
 */
export function encodeHeader(entries: readonly TensorEntry[], metadata: Readonly<Record<string, string>> | null): Uint8Array {
  const object: Record<string, unknown> = {};
  const keys = entries.map((e) => e.name);
  if (metadata) keys.push(METADATA_KEY);
  const byName = new Map(entries.map((e) => [e.name, e]));
  for (const key of keys.sort(compareCodePoints)) {
    if (key === METADATA_KEY) {
      object[key] = Object.fromEntries(Object.entries(metadata!).sort(([a], [b]) => compareCodePoints(a, b)));
      continue;
    }
    const e = byName.get(key)!;
    object[key] = { dtype: e.dtype, shape: e.shape, data_offsets: [e.begin, e.end] };
  }
  const json = new TextEncoder().encode(JSON.stringify(object));
  const padded = Math.ceil((8 + json.byteLength) / 8) * 8 - 8;
  const out = new Uint8Array(8 + padded).fill(0x20, 8 + json.byteLength);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}
