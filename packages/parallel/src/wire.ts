/**
 * The message format between the host and its workers. Control data (method names, ids, steps,
 * small arrays) is encoded with MessagePack; every {@link HostTensor} in a message is cut out and
 * its ArrayBuffer transferred alongside, so tensor bytes are moved, never serialised.
 */
import { decode, encode } from '@msgpack/msgpack';
import { isDType, type TypedArray } from '@nemotron-ts/kernels';
import { HostTensor, ownBuffer } from './host-tensor';

/** What `postMessage` carries: the MessagePack header and the tensors' buffers, in order. */
export interface WireMessage {
  readonly header: Uint8Array;
  readonly buffers: ArrayBuffer[];
  /** Shared memory handed over once, with a worker's `init` (its progress counter). */
  shared?: SharedArrayBuffer;
}

const TENSOR_TAG = '__tensor';

/** Encodes `value`; the returned `transfer` list moves the header and every tensor buffer. */
export function encodeMessage(value: unknown): { message: WireMessage; transfer: ArrayBuffer[] } {
  const buffers: ArrayBuffer[] = [];
  const seen = new Set<ArrayBuffer>();
  const strip = (v: unknown): unknown => {
    if (v instanceof HostTensor) {
      if (v.data.length !== v.shape.reduce((n, d) => n * d, 1))
        throw new Error(`encodeMessage: a HostTensor ${JSON.stringify(v.shape)} was already sent (sending moves its buffer)`);
      let data = ownBuffer(v.data);
      // One buffer can be transferred once: a tensor repeated in a message is copied.
      if (seen.has(data.buffer as ArrayBuffer)) data = data.slice() as TypedArray;
      seen.add(data.buffer as ArrayBuffer);
      buffers.push(data.buffer as ArrayBuffer);
      return { [TENSOR_TAG]: buffers.length - 1, dtype: v.dtype, shape: v.shape };
    }
    if (Array.isArray(v)) return v.map(strip);
    if (v && typeof v === 'object' && !ArrayBuffer.isView(v)) {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = strip(x);
      return out;
    }
    return v;
  };
  const header = encode(strip(value));
  const own = header.byteOffset === 0 && header.byteLength === header.buffer.byteLength ? header : header.slice();
  return { message: { header: own, buffers }, transfer: [own.buffer as ArrayBuffer, ...buffers] };
}

/** Decodes a {@link WireMessage}, rebuilding its tensors on the transferred buffers. */
export function decodeMessage(message: WireMessage): unknown {
  const restore = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(restore);
    if (v && typeof v === 'object' && !ArrayBuffer.isView(v)) {
      const o = v as Record<string, unknown>;
      if (typeof o[TENSOR_TAG] === 'number') {
        const buffer = message.buffers[o[TENSOR_TAG] as number];
        const dtype = o.dtype;
        if (!buffer || !isDType(dtype)) throw new Error(`decodeMessage: bad tensor reference ${JSON.stringify(o)}`);
        return new HostTensor(dtype, o.shape as number[], typedView(dtype, buffer));
      }
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(o)) out[k] = restore(x);
      return out;
    }
    return v;
  };
  return restore(decode(message.header));
}

/** Total bytes of the tensors in a message (what "bytes moved" counts). */
export function tensorBytes(message: WireMessage): number {
  return message.buffers.reduce((n, b) => n + b.byteLength, 0);
}

function typedView(dtype: string, buffer: ArrayBuffer): TypedArray {
  switch (dtype) {
    case 'f32':
      return new Float32Array(buffer);
    case 'bf16':
      return new Uint16Array(buffer);
    case 'i32':
      return new Int32Array(buffer);
    default:
      return new Uint32Array(buffer);
  }
}
