/** Creating tensors: from host data, constants, ranges and seeded random values. */
import { getDefaultDevice, type Device } from './device/device';
import { allocArray, bytesPerElement, f32ToBf16Bits, toBf16, type DType, type TypedArray } from './dtype';
import { defaultGenerator, type Generator } from './random';
import { assertValidShape, formatShape, sizeOf, type Shape } from './shape';
import { Tensor, cpuView } from './tensor';

export interface CreateOptions {
  dtype?: DType;
  device?: Device;
}

/** Allocates an uninitialised tensor (contents undefined until written by a kernel). */
export function empty(shape: Shape, options: CreateOptions = {}): Tensor {
  assertValidShape(shape);
  const device = options.device ?? getDefaultDevice();
  const dtype = options.dtype ?? 'f32';
  return new Tensor(device.allocate(dtype, sizeOf(shape)), shape);
}

/**
 * A tensor from host data. Numbers are converted to `dtype` (default: f32, or the typed array's own
 * type; a Uint16Array is taken as bf16 words). Floats given for bf16 are rounded to nearest even.
 */
export function tensor(data: TypedArray | ArrayLike<number>, shape?: Shape, options: CreateOptions = {}): Tensor {
  const dtype = options.dtype ?? inferDType(data);
  const s = shape ?? [data.length];
  assertValidShape(s);
  if (sizeOf(s) !== data.length) throw new Error(`tensor(): ${data.length} values do not fill shape ${formatShape(s)}`);
  const values = convert(data, dtype);
  const t = empty(s, { dtype, device: options.device });
  upload(t, values);
  return t;
}

function inferDType(data: ArrayLike<number>): DType {
  if (data instanceof Int32Array) return 'i32';
  if (data instanceof Uint32Array) return 'u32';
  if (data instanceof Uint16Array) return 'bf16';
  return 'f32';
}

function convert(data: ArrayLike<number>, dtype: DType): TypedArray {
  switch (dtype) {
    case 'f32':
      return data instanceof Float32Array ? data : Float32Array.from(data);
    case 'bf16':
      return data instanceof Uint16Array ? data : toBf16(data);
    case 'i32':
      return data instanceof Int32Array ? data : Int32Array.from(data);
    case 'u32':
      return data instanceof Uint32Array ? data : Uint32Array.from(data);
  }
}

/** Writes host values into a whole contiguous tensor. */
export function upload(t: Tensor, values: TypedArray): void {
  if (!t.isContiguous || values.length !== t.size) throw new Error(`upload(): ${values.length} values for ${t}`);
  const device = t.device;
  if (device.kind === 'cpu') {
    (cpuView(t) as TypedArray).set(values as never, t.offset);
    return;
  }
  const bytes = new Uint8Array(values.buffer, values.byteOffset, values.length * bytesPerElement(t.dtype));
  if ((t.offset * bytesPerElement(t.dtype)) % 4 !== 0) throw new Error('upload(): tensor offset is not 4-byte aligned');
  device.write(t.storage, t.offset * bytesPerElement(t.dtype), bytes);
}

/** A tensor filled with `value`; on the GPU this is a recorded fill, not an upload. */
export function full(shape: Shape, value: number, options: CreateOptions = {}): Tensor {
  const dtype = options.dtype ?? 'f32';
  const device = options.device ?? getDefaultDevice();
  if (device.kind === 'webgpu') {
    const t = empty(shape, { dtype, device });
    const words = Math.ceil((t.size * bytesPerElement(dtype)) / 4);
    if (words > 0) device.fillWords(t.storage.gpu!, 0, words, fillWord(value, dtype));
    return t;
  }
  // Host memory: a zeroed buffer, filled in place unless the value is 0 (and allocations are not poisoned).
  assertValidShape(shape);
  const t = new Tensor(device.allocate(dtype, sizeOf(shape), true), shape);
  const words = Math.ceil((t.size * bytesPerElement(dtype)) / 4);
  if (!Object.is(value, 0) || device.poisonAllocations) new Uint32Array(t.storage.cpu!, 0, words).fill(fillWord(value, dtype));
  return t;
}

/** The 32-bit word that repeats `value` in `dtype` (two copies for bf16). */
function fillWord(value: number, dtype: DType): number {
  switch (dtype) {
    case 'f32':
      return new Uint32Array(Float32Array.of(value).buffer)[0]!;
    case 'bf16': {
      const h = f32ToBf16Bits(value);
      return ((h << 16) | h) >>> 0;
    }
    case 'i32':
      return (value | 0) >>> 0;
    case 'u32':
      return value >>> 0;
  }
}

export function zeros(shape: Shape, options: CreateOptions = {}): Tensor {
  return full(shape, 0, options);
}

export function ones(shape: Shape, options: CreateOptions = {}): Tensor {
  return full(shape, 1, options);
}

export function zerosLike(t: Tensor, dtype: DType = t.dtype): Tensor {
  return zeros(t.shape, { dtype, device: t.device });
}

export function onesLike(t: Tensor, dtype: DType = t.dtype): Tensor {
  return ones(t.shape, { dtype, device: t.device });
}

export function fullLike(t: Tensor, value: number, dtype: DType = t.dtype): Tensor {
  return full(t.shape, value, { dtype, device: t.device });
}

/** [start, start+step, ...) below `end`. */
export function arange(start: number, end?: number, step = 1, options: CreateOptions = {}): Tensor {
  if (end === undefined) [start, end] = [0, start];
  if (step === 0) throw new Error('arange(): step must not be 0');
  const n = Math.max(0, Math.ceil((end - start) / step));
  const dtype = options.dtype ?? 'i32';
  const values = allocArray(dtype === 'bf16' ? 'f32' : dtype, n);
  for (let i = 0; i < n; i++) values[i] = start + i * step;
  return tensor(values, [n], { ...options, dtype });
}

export interface RandomOptions extends CreateOptions {
  generator?: Generator;
}

/** Uniform in [low, high). */
export function rand(shape: Shape, options: RandomOptions & { low?: number; high?: number } = {}): Tensor {
  const g = options.generator ?? defaultGenerator();
  const low = options.low ?? 0;
  const high = options.high ?? 1;
  const values = new Float32Array(sizeOf(shape));
  for (let i = 0; i < values.length; i++) values[i] = low + (high - low) * g.uniform();
  return tensor(values, shape, { dtype: options.dtype ?? 'f32', device: options.device });
}

/** Normal with the given mean and std. */
export function randn(shape: Shape, options: RandomOptions & { mean?: number; std?: number } = {}): Tensor {
  const g = options.generator ?? defaultGenerator();
  const mean = options.mean ?? 0;
  const std = options.std ?? 1;
  const values = new Float32Array(sizeOf(shape));
  for (let i = 0; i < values.length; i++) values[i] = mean + std * g.normal();
  return tensor(values, shape, { dtype: options.dtype ?? 'f32', device: options.device });
}

/** Uniform integers in [low, high). */
export function randint(low: number, high: number, shape: Shape, options: RandomOptions = {}): Tensor {
  const g = options.generator ?? defaultGenerator();
  const values = new Int32Array(sizeOf(shape));
  for (let i = 0; i < values.length; i++) values[i] = low + Math.floor((high - low) * g.uniform());
  return tensor(values, shape, { dtype: options.dtype ?? 'i32', device: options.device });
}
