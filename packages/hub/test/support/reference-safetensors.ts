/**
 * An independent, minimal reading of the safetensors format for checking our writer: the raw bytes
 * of each tensor, and the stricter rules the reference (Rust) loader enforces.
 */
import { expect } from 'bun:test';

const SIZES: Record<string, number> = { BOOL: 1, U8: 1, I8: 1, I16: 2, U16: 2, F16: 2, BF16: 2, I32: 4, U32: 4, F32: 4, I64: 8, U64: 8, F64: 8 };

export interface RawEntry {
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

export interface RawFile {
  metadata: Record<string, string> | null;
  tensors: Map<string, RawEntry>;
}

export function readRaw(file: Uint8Array): RawFile {
  const n = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + n))) as Record<string, unknown>;
  const tensors = new Map<string, RawEntry>();
  let metadata: Record<string, string> | null = null;
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = v as Record<string, string>;
      continue;
    }
    const e = v as { dtype: string; shape: number[]; data_offsets: [number, number] };
    tensors.set(name, { dtype: e.dtype, shape: e.shape, bytes: file.subarray(8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1]) });
  }
  return { metadata, tensors };
}

/**
 * The checks the reference loader makes beyond ours (that PyTorch/HF rely on): the header starts
 * with '{' and is padded to 8 bytes, data offsets are contiguous from 0 and cover the data area
 * exactly, and each tensor starts aligned to its element size.
 */
export function expectReferenceLayout(file: Uint8Array): void {
  const n = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));
  expect(file[8]).toBe('{'.charCodeAt(0));
  expect((8 + n) % 8).toBe(0);
  const header = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + n))) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  const entries = Object.entries(header)
    .filter(([k]) => k !== '__metadata__')
    .map(([, e]) => e)
    .sort((a, b) => a.data_offsets[0] - b.data_offsets[0]);
  let offset = 0;
  for (const e of entries) {
    expect(e.data_offsets[0]).toBe(offset);
    expect(e.data_offsets[0] % SIZES[e.dtype]!).toBe(0);
    offset = e.data_offsets[1];
  }
  expect(offset).toBe(file.byteLength - 8 - n);
}
