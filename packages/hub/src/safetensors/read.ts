/**
 * Reading a safetensors file lazily: the header is read and validated on open; each tensor is read
 * later, one byte range at a time, straight into a device tensor (or a host array).
 */
import { empty, getDefaultDevice, sizeOf, type Device, type DType, type FloatDType, type Tensor } from '@nemotron-ts/kernels';
import { CheckpointFormatError } from '../errors';
import { DEFAULT_CHUNK_BYTES, writeElements } from '../tensor-io';
import { fileSource, readExactly, readExactlyInto, type ByteSource } from './byte-source';
import { decodeFloat, decodeHost, decodeInteger, type HostArray } from './convert';
import { isStoredFloat, safetensorsBytesPerElement, type SafetensorsDType, type StoredFloatDType } from './dtype';
import { firstNonFinite } from './non-finite';
import { parseHeader, readHeaderLength, type SafetensorsHeader, type TensorEntry } from './header';

/** How tensors are loaded onto a device. */
export interface LoadOptions {
  /** Device for the new tensors (default: the default device). */
  device?: Device;
  /**
   * Float tensors are converted to this dtype. Default: the stored type (F32 → f32, BF16 → bf16;
   * F16, which devices do not hold, → f32). Integer tensors keep their type.
   */
  dtype?: FloatDType;
  /**
   * Per-tensor override of `dtype` for float tensors, e.g. keeping a few sensitive parameters in
   * f32 while the rest load as bf16. Returning undefined falls back to `dtype`.
   */
  dtypeFor?: (name: string, stored: SafetensorsDType) => FloatDType | undefined;
  /** Bytes read from the file per step (default 64 MiB): bounds host memory during a load. */
  chunkBytes?: number;
  /**
   * Throw a {@link CheckpointFormatError} naming the file, tensor and element when a float tensor
   * holds NaN or ±Inf (checked on the bytes as they are read; default false).
   */
  checkFinite?: boolean;
}

/** A tensor read to the host: floats widened to f32 (F64 kept), integers in their stored width. */
export interface HostTensor {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  readonly data: HostArray;
}

/** An open safetensors file. Only the header is held in memory. */
export class SafetensorsReader {
  private constructor(
    readonly source: ByteSource,
    readonly header: SafetensorsHeader,
  ) {}

  /** Opens a file (path) or byte source and validates its header. */
  static async open(pathOrSource: string | ByteSource): Promise<SafetensorsReader> {
    const source = typeof pathOrSource === 'string' ? await fileSource(pathOrSource) : pathOrSource;
    const prefix = await source.read(0, Math.min(8, source.size));
    const length = readHeaderLength(prefix, source.size, source.name);
    const json = await readExactly(source, 8, 8 + length, 'header');
    return new SafetensorsReader(source, parseHeader(json, source.size, source.name));
  }

  /** The file's path (or the source's name). */
  get file(): string {
    return this.source.name;
  }

  /** Tensor names in header order. */
  names(): string[] {
    return [...this.header.tensors.keys()];
  }

  has(name: string): boolean {
    return this.header.tensors.has(name);
  }

  /** The header entry of `name`; throws naming the file when it is absent. */
  entry(name: string): TensorEntry {
    const e = this.header.tensors.get(name);
    if (!e) throw new CheckpointFormatError(this.file, `tensor '${name}'`, 'is not in this file');
    return e;
  }

  /** The `__metadata__` map, or null. */
  get metadata(): Readonly<Record<string, string>> | null {
    return this.header.metadata;
  }

  /** The device dtype `name` loads as under `options`. */
  targetDType(name: string, options: LoadOptions = {}): DType {
    const { dtype } = this.entry(name);
    if (isStoredFloat(dtype)) return options.dtypeFor?.(name, dtype) ?? options.dtype ?? (dtype === 'BF16' ? 'bf16' : 'f32');
    if (dtype === 'I32') return 'i32';
    if (dtype === 'U32') return 'u32';
    throw new CheckpointFormatError(
      this.file,
      `tensor '${name}'`,
      `dtype ${dtype} cannot be loaded as a device tensor (devices hold F32, BF16, F16 as f32/bf16, I32 and U32); read it with readHost()`,
    );
  }

  /** Reads one tensor onto a device, converting as `options` say. The caller owns the result. */
  async load(name: string, options: LoadOptions = {}): Promise<Tensor> {
    const e = this.entry(name);
    const target = this.targetDType(name, options);
    const stored = e.dtype;
    const bpe = safetensorsBytesPerElement(stored);
    // Even element counts per chunk keep every bf16 write 4-byte aligned on the GPU.
    const step = Math.max(2, Math.floor((options.chunkBytes ?? DEFAULT_CHUNK_BYTES) / bpe / 2) * 2);
    const n = sizeOf(e.shape);
    const t = empty(e.shape, { dtype: target, device: options.device ?? getDefaultDevice() });
    try {
      // Host memory in the file's own dtype: the bytes are read straight into the tensor.
      if (t.device.kind === 'cpu' && t.storage.cpu && this.source.readInto && storedAs(stored) === target) {
        const source = this.source as ByteSource & Required<Pick<ByteSource, 'readInto'>>;
        for (let start = 0; start < n; start += step) {
          const count = Math.min(step, n - start);
          const dst = new Uint8Array(t.storage.cpu, (t.offset + start) * bpe, count * bpe);
          await readExactlyInto(source, this.header.dataStart + e.begin + start * bpe, dst, `tensor '${name}'`);
          if (options.checkFinite && isStoredFloat(stored)) this.checkFinite(name, stored, dst, start, n);
        }
        t.name = name;
        return t;
      }
      for (let start = 0; start < n; start += step) {
        const count = Math.min(step, n - start);
        const at = this.header.dataStart + e.begin + start * bpe;
        const bytes = await readExactly(this.source, at, at + count * bpe, `tensor '${name}'`);
        if (options.checkFinite && isStoredFloat(stored)) this.checkFinite(name, stored, bytes, start, n);
        const values = isStoredFloat(stored) ? decodeFloat(bytes, stored, target as FloatDType) : decodeInteger(bytes, stored as 'I32' | 'U32');
        writeElements(t, start, values);
      }
    } catch (err) {
      t.dispose();
      throw err;
    }
    t.name = name;
    return t;
  }

  private checkFinite(name: string, stored: StoredFloatDType, bytes: Uint8Array, start: number, n: number): void {
    const bad = firstNonFinite(bytes, stored);
    if (bad < 0) return;
    const bpe = safetensorsBytesPerElement(stored);
    const value = (decodeHost(bytes.slice(bad * bpe, (bad + 1) * bpe), stored) as Float32Array)[0]!;
    throw new CheckpointFormatError(
      this.file,
      `tensor '${name}'`,
      `element ${start + bad} of ${n} is ${value}: the weights are corrupted (NaN or infinite values)`,
    );
  }

  /** Reads one tensor of any dtype into host memory. */
  async readHost(name: string): Promise<HostTensor> {
    const e = this.entry(name);
    const at = this.header.dataStart + e.begin;
    const bytes = await readExactly(this.source, at, at + (e.end - e.begin), `tensor '${name}'`);
    return { name, dtype: e.dtype, shape: e.shape, data: decodeHost(bytes, e.dtype) };
  }
}

/** The device dtype whose bytes equal the stored ones (none for F16, whose values are widened). */
function storedAs(stored: string): DType | null {
  return stored === 'F32' ? 'f32' : stored === 'BF16' ? 'bf16' : stored === 'I32' ? 'i32' : stored === 'U32' ? 'u32' : null;
}
