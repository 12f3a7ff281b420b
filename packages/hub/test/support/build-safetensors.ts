/** Hand-built safetensors bytes for tests: any dtype, any (even invalid) header. */
import { encodeHeader, type SafetensorsDType } from '../../src';

export interface BuildTensor {
  name: string;
  dtype: SafetensorsDType;
  shape: number[];
  data: Uint8Array;
}

/** A valid file laid out in the given order (no reordering), with `{"format": "pt"}` metadata. */
export function buildSafetensors(tensors: BuildTensor[], metadata: Record<string, string> | null = { format: 'pt' }): Uint8Array {
  let offset = 0;
  const entries = tensors.map((t) => {
    const begin = offset;
    offset += t.data.byteLength;
    return { name: t.name, dtype: t.dtype, shape: t.shape, begin, end: offset };
  });
  const header = encodeHeader(entries, metadata);
  const out = new Uint8Array(header.byteLength + offset);
  out.set(header);
  let at = header.byteLength;
  for (const t of tensors) {
    out.set(t.data, at);
    at += t.data.byteLength;
  }
  return out;
}

/** A file from raw header JSON text and data bytes, with an optional false length prefix. */
export function rawSafetensors(headerJson: string, data: Uint8Array = new Uint8Array(0), lengthPrefix?: bigint): Uint8Array {
  const json = new TextEncoder().encode(headerJson);
  const out = new Uint8Array(8 + json.byteLength + data.byteLength);
  new DataView(out.buffer).setBigUint64(0, lengthPrefix ?? BigInt(json.byteLength), true);
  out.set(json, 8);
  out.set(data, 8 + json.byteLength);
  return out;
}

export function bytesOf(values: ArrayBufferView): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength).slice();
}
