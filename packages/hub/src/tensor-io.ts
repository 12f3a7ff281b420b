/**
 * Moving tensor bytes between the host and a device a chunk at a time, so a multi-GB tensor never
 * needs a second full-size copy in host memory.
 */
import { bytesPerElement, contiguous, type Tensor, type TypedArray } from '@nemotron-ts/kernels';

/** Default chunk for host ↔ device transfers. */
export const DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024;

/**
 * Writes `values` (already in the tensor's dtype) into a dense tensor from element `start`. On the
 * GPU the byte offset must be 4-byte aligned: callers split bf16 data at even element counts.
 */
export function writeElements(t: Tensor, start: number, values: TypedArray): void {
  t.assertAlive();
  if (!t.isContiguous) throw new Error(`writeElements(): ${t} is not contiguous`);
  if (values.BYTES_PER_ELEMENT !== bytesPerElement(t.dtype)) throw new Error(`writeElements(): ${values.constructor.name} values for ${t}`);
  if (start + values.length > t.size) throw new Error(`writeElements(): ${values.length} values at ${start} overflow ${t}`);
  const device = t.device;
  const byteOffset = (t.offset + start) * bytesPerElement(t.dtype);
  if (device.kind === 'cpu') {
    new Uint8Array(t.storage.cpu!, byteOffset, values.byteLength).set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    return;
  }
  if (byteOffset % 4 !== 0) throw new Error(`writeElements(): byte offset ${byteOffset} into ${t} is not 4-byte aligned`);
  // GPU writes are padded to 4 bytes: a ragged end is only safe at the end of the storage.
  const end = byteOffset + values.byteLength;
  if (end % 4 !== 0 && end < t.storage.length * bytesPerElement(t.dtype))
    throw new Error(`writeElements(): a write ending at byte ${end} of ${t} would overwrite the next element`);
  device.write(t.storage, byteOffset, values);
}

/**
 * Yields the tensor's elements as little-endian bytes of its dtype, in row-major order, at most
 * `chunkBytes` at a time. A view that is not dense is copied densely first. A yielded chunk may
 * alias device-side memory (CPU backend): consume it before asking for the next.
 */
export async function* tensorBytes(t: Tensor, chunkBytes = DEFAULT_CHUNK_BYTES): AsyncGenerator<Uint8Array> {
  t.assertAlive();
  const dense = t.isContiguous ? t : contiguous(t);
  try {
    const bpe = bytesPerElement(dense.dtype);
    const total = dense.size * bpe;
    const step = Math.max(4, Math.floor(chunkBytes / 4) * 4);
    const device = dense.device;
    const base = dense.offset * bpe;
    for (let at = 0; at < total; at += step) {
      const length = Math.min(step, total - at);
      if (device.kind === 'cpu') {
        yield new Uint8Array(dense.storage.cpu!, base + at, length);
      } else {
        yield await device.read(dense.storage, base + at, length);
      }
    }
  } finally {
    if (dense !== t) dense.dispose();
  }
}
