/**
 * A tiny safetensors reader for tests (the hub package owns the real, lazy one): the JSON header
 * (u64 little-endian length, then JSON) and F32 / BF16 tensors as kernels tensors.
 */
import { tensor, type Device, type Tensor } from '@nemotron-ts/kernels';

export interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

export interface SafetensorsFile {
  header: Map<string, HeaderEntry>;
  /** The whole file. */
  bytes: Uint8Array;
  /** Byte offset of the data section. */
  dataStart: number;
}

export async function readSafetensors(path: string | URL): Promise<SafetensorsFile> {
  const bytes = new Uint8Array(await Bun.file(path).arrayBuffer());
  const length = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const json = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + length))) as Record<string, HeaderEntry | Record<string, string>>;
  const header = new Map<string, HeaderEntry>();
  for (const [key, entry] of Object.entries(json)) if (key !== '__metadata__') header.set(key, entry as HeaderEntry);
  return { header, bytes, dataStart: 8 + length };
}

/** key → shape, what the state-dict planner takes. */
export function shapesOf(file: SafetensorsFile): Map<string, readonly number[]> {
  return new Map([...file.header].map(([k, e]) => [k, e.shape]));
}

/** The tensor stored under `key` (F32 or BF16), as a new tensor on `device`. */
export function loadTensor(file: SafetensorsFile, key: string, device: Device): Tensor {
  const entry = file.header.get(key);
  if (!entry) throw new Error(`no tensor '${key}' in the file`);
  const [start, end] = entry.data_offsets;
  const raw = file.bytes.slice(file.dataStart + start, file.dataStart + end);
  switch (entry.dtype) {
    case 'F32':
      return tensor(new Float32Array(raw.buffer), entry.shape, { dtype: 'f32', device });
    case 'BF16':
      return tensor(new Uint16Array(raw.buffer), entry.shape, { dtype: 'bf16', device });
    default:
      throw new Error(`unsupported dtype ${entry.dtype} for '${key}'`);
  }
}

/** Host f32 values of `key` (bf16 widened). */
export function hostValues(file: SafetensorsFile, key: string): Float32Array {
  const entry = file.header.get(key)!;
  const [start, end] = entry.data_offsets;
  const raw = file.bytes.slice(file.dataStart + start, file.dataStart + end);
  if (entry.dtype === 'F32') return new Float32Array(raw.buffer);
  const words = new Uint16Array(raw.buffer);
  const out = new Float32Array(words.length);
  new Uint32Array(out.buffer).set(Array.from(words, (w) => w << 16));
  return out;
}

export const FIXTURE_CASES = ['dense_f32', 'hybrid_bf16', 'moe_flat_rsf2.5', 'moe_group4_top2', 'mtp_d2', 'padded_generation'] as const;

export function fixturePath(name: string, file: string): URL {
  return new URL(`../../../../test/fixtures/${name}/${file}`, import.meta.url);
}
