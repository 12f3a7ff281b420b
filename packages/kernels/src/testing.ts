/**
 * Test support shared by every package: the devices to run on, seeded odd-sized data, poisoned
 * outputs, comparisons relative to the largest expected magnitude, and the tolerance model for
 * float differences between backends.
 *
 * `NEMOTRON_TEST_DEVICES` picks the devices: a comma list of `cpu` (the TypeScript reference),
 * `native` (the CPU backend with native kernels), `webgpu` (the adapter `initDevice` would pick,
 * honouring `NEMOTRON_BACKEND` / `NEMOTRON_ADAPTER`), `webgpu:<backend>` (`webgpu:opengl`,
 * `webgpu:vulkan`, ...) and `webgpu:*` (every backend that opens here). Default `cpu,native,webgpu`.
 * A missing WebGPU adapter is an error unless the list excludes it (`webgpu:*` needs at least one);
 * the native backend is skipped when its library is unavailable, unless the list names it.
 */
import { expect } from 'bun:test';
import { deviceLabel, deviceOptionsFromEnv, getCpuDevice, getNativeDevice, getWebGpuDevice, type Device } from './device/device';
import type { BackendName } from './device/dawn';
import { NoAdapterError } from './device/errors';
import { nativeUnavailableReason } from './native/library';
import type { WebGpuDevice } from './device/webgpu-device';
import { tensor } from './creation';
import { fromBf16, toBf16, type DType } from './dtype';
import { Generator } from './random';
import { sizeOf } from './shape';
import type { Tensor } from './tensor';

/** Backends `webgpu:*` tries, in this order. */
const EVERY_BACKEND: readonly BackendName[] = ['opengl', 'vulkan', 'metal', 'd3d12'];
const DEFAULT_TEST_DEVICES = 'cpu,native,webgpu';

/** The entries of `NEMOTRON_TEST_DEVICES` (validated). */
export function testDeviceList(text: string = process.env.NEMOTRON_TEST_DEVICES ?? DEFAULT_TEST_DEVICES): string[] {
  const entries = text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  for (const e of entries) {
    const backend = e.startsWith('webgpu:') ? e.slice('webgpu:'.length) : null;
    const ok = e === 'cpu' || e === 'native' || e === 'webgpu' || backend === '*' || (backend !== null && [...EVERY_BACKEND, 'opengles'].includes(backend));
    if (!ok)
      throw new Error(
        `NEMOTRON_TEST_DEVICES: unknown entry '${e}' (use cpu, native, webgpu, webgpu:opengl, webgpu:vulkan, webgpu:metal, webgpu:d3d12 or webgpu:*)`,
      );
  }
  return entries;
}

async function openEntry(entry: string): Promise<WebGpuDevice[]> {
  if (entry === 'webgpu') {
    const { backend, adapter } = deviceOptionsFromEnv();
    return [await getWebGpuDevice({ backend, adapter })];
  }
  const backend = entry.slice('webgpu:'.length);
  if (backend !== '*') return [await getWebGpuDevice({ backend: backend as BackendName })];
  const opened: WebGpuDevice[] = [];
  for (const b of EVERY_BACKEND) {
    try {
      opened.push(await getWebGpuDevice({ backend: b }));
    } catch (e) {
      if (!(e instanceof NoAdapterError)) throw e;
    }
  }
  if (opened.length === 0) throw new NoAdapterError(`NEMOTRON_TEST_DEVICES=webgpu:*: no backend of ${EVERY_BACKEND.join(', ')} opens here`);
  return opened;
}

/** The WebGPU devices the test run covers (one per backend, in list order; none when the list has no `webgpu` entry). */
export async function testGpus(): Promise<WebGpuDevice[]> {
  const out: WebGpuDevice[] = [];
  for (const entry of testDeviceList()) {
    if (entry === 'cpu' || entry === 'native') continue;
    for (const d of await openEntry(entry)) if (!out.includes(d)) out.push(d);
  }
  return out;
}

/**
 * The native CPU device, or null when the test run excludes it (or, unless NEMOTRON_TEST_DEVICES
 * names `native`, when its library cannot be built here).
 */
export function testNative(): Device | null {
  if (!testDeviceList().includes('native')) return null;
  const device = getNativeDevice();
  if (!device && process.env.NEMOTRON_TEST_DEVICES !== undefined) {
    throw new Error(`NEMOTRON_TEST_DEVICES names native but the native CPU backend is unavailable: ${nativeUnavailableReason()}`);
  }
  return device;
}

/** Every device the test run covers: the CPU reference when listed, the native backend, then {@link testGpus}. */
export async function testDevices(): Promise<Device[]> {
  const cpu = testDeviceList().includes('cpu') ? [getCpuDevice()] : [];
  const native = testNative();
  return [...cpu, ...(native ? [native] : []), ...(await testGpus())];
}

/** The first WebGPU device of the run, or null when the run excludes WebGPU. */
export async function testGpu(): Promise<Device | null> {
  return (await testGpus())[0] ?? null;
}

/** A device's name in test titles: `cpu`, `cpu:native` or `webgpu:<backend>`. */
export { deviceLabel };

/** Seeded normal data; bf16 data is pre-rounded so both backends see identical values. */
export function randomData(shape: readonly number[], seed: number, options: { dtype?: DType; scale?: number; positive?: boolean } = {}): Float32Array {
  const g = new Generator(seed);
  const n = sizeOf(shape);
  const values = new Float32Array(n);
  const scale = options.scale ?? 1;
  for (let i = 0; i < n; i++) {
    const v = g.normal() * scale;
    values[i] = options.positive ? Math.abs(v) + 1e-3 : v;
  }
  return options.dtype === 'bf16' ? fromBf16(toBf16(values)) : values;
}

/** Seeded uniform data in [low, high). */
export function uniformData(n: number, seed: number, low: number, high: number): Float32Array {
  const g = new Generator(seed);
  return Float32Array.from({ length: n }, () => low + (high - low) * g.uniform());
}

/**
 * Sequence-id rows (`seqIdx`) from each row's document lengths, which must sum to `length`:
 * document d of a row gets the id `first + step·d`.
 */
export function seqIdsFromLengths(lengths: readonly (readonly number[])[], length: number, first = 0, step = 1): Int32Array {
  const out = new Int32Array(lengths.length * length);
  lengths.forEach((row, b) => {
    expect(row.reduce((s, n) => s + n, 0)).toBe(length);
    let t = 0;
    row.forEach((n, doc) => {
      for (let i = 0; i < n; i++) out[b * length + t++] = first + step * doc;
    });
  });
  return out;
}

/** The same host values as a tensor on `device` in `dtype`. */
export function onDevice(
  values: Float32Array | Int32Array,
  shape: readonly number[],
  device: Device,
  dtype: DType = values instanceof Int32Array ? 'i32' : 'f32',
): Tensor {
  return tensor(values, shape, { dtype, device });
}

/**
 * Runs `fn` with the device's storage-binding limit lowered to `bytes`, so tensors of test size take
 * the paths that split a tensor across bindings; the limit is restored however `fn` ends.
 */
export async function withBindingLimit<T>(device: Device, bytes: number, fn: () => T | Promise<T>): Promise<T> {
  const limits = (device as WebGpuDevice).limits;
  const saved = limits.maxStorageBufferBindingSize;
  limits.maxStorageBufferBindingSize = bytes;
  try {
    return await fn();
  } finally {
    limits.maxStorageBufferBindingSize = saved;
  }
}

/** Runs `fn` with fresh allocations poisoned (NaN / all-ones), so elements a kernel forgot to write fail the comparison. */
export function poisoned<T>(device: Device, fn: () => T): T {
  const prev = device.poisonAllocations;
  device.poisonAllocations = true;
  try {
    return fn();
  } finally {
    device.poisonAllocations = prev;
  }
}

/**
 * The one model of legitimate float differences between a backend's f32 result and the f64 CPU
 * reference (GPU drivers round differently from each other, too). Each f32 operation rounds once
 * (relative error ≤ u = 2⁻²⁴); WGSL's builtins may be off by a few ULP (the spec's allowances,
 * {@link WGSL_ULP}); a driver may reduce in any order and may fuse a·b + c into one FMA. All of
 * these move a result by a number of roundings times the magnitude of the TERMS it is formed from,
 * not of the result itself: where terms cancel (a norm's gradient at d = 1), the result's own scale
 * says nothing. So a comparison's absolute tolerance is `roundings · u · magnitude`
 * ({@link f32Atol}), with `magnitude` the largest |term| (the formula evaluated on absolute values)
 * and `roundings` counted along the longest path; a sum of n terms in an unknown order counts
 * {@link sumRoundings}(n).
 */
export const F32_UNIT_ROUNDOFF = 2 ** -24;

/** ULP allowances of the WGSL builtins the kernels use (WGSL spec, "Floating Point Accuracy"). */
export const WGSL_ULP = { division: 2.5, inverseSqrt: 2, sqrt: 4.5, exp: 3, log: 3 } as const;

/**
 * Roundings a sum of n f32 terms may accumulate in any order, with or without FMAs: n − 1 in the
 * worst case, λ·√n with probability ≥ 1 − 1e-7 at λ = 6 (Higham & Mary's probabilistic bound for
 * independent rounding errors); the smaller of the two.
 */
export function sumRoundings(n: number): number {
  return n <= 1 ? 0 : Math.min(n - 1, 6 * Math.sqrt(n));
}

/** Absolute tolerance for a result of `roundings` f32 rounding steps over terms of size `magnitude`. */
export function f32Atol(roundings: number, magnitude: number): number {
  return roundings * F32_UNIT_ROUNDOFF * magnitude;
}

export interface CloseOptions {
  /** Allowed error relative to max |expected| (default 1e-5). */
  rtol?: number;
  /** Absolute floor added to the bound (default 0). */
  atol?: number;
  what?: string;
}

/**
 * Asserts max |actual − expected| ≤ rtol · max |expected| + atol, and that no NaN appears where a
 * number is expected (a NaN from a poisoned, unwritten output fails).
 */
export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, options: CloseOptions = {}): number {
  const what = options.what ?? 'values';
  expect(actual.length, `${what}: length`).toBe(expected.length);
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) if (Number.isFinite(expected[i]!)) maxRef = Math.max(maxRef, Math.abs(expected[i]!));
  const bound = (options.rtol ?? 1e-5) * maxRef + (options.atol ?? 0);
  let worst = 0;
  let worstAt = -1;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (Number.isNaN(e) ? !Number.isNaN(a) : Number.isNaN(a)) {
      throw new Error(`${what}: element ${i} is ${a}, expected ${e}`);
    }
    if (!Number.isFinite(e)) {
      if (a !== e && !Number.isNaN(e)) throw new Error(`${what}: element ${i} is ${a}, expected ${e}`);
      continue;
    }
    const d = Math.abs(a - e);
    if (d > worst) {
      worst = d;
      worstAt = i;
    }
  }
  if (worst > bound) {
    throw new Error(
      `${what}: max |diff| ${worst.toExponential(3)} at ${worstAt} (got ${actual[worstAt]}, expected ${expected[worstAt]}) exceeds ${bound.toExponential(3)}`,
    );
  }
  return worst;
}

export interface GradcheckOptions {
  /** Central-difference step (default 1e-3). */
  eps?: number;
  /** Allowed error relative to max |numeric gradient| (default 2e-3). */
  rtol?: number;
  /** Elements checked per input (default: all, up to 64 spread evenly). */
  maxElements?: number;
  seed?: number;
}

/**
 * Finite-difference gradient check on the CPU backend. The scalar checked is L = Σ w·f(x) with
 * fixed random weights w, accumulated in f64 on the host so f32 rounding of a reduction does not
 * swamp the differences. Inputs are f32 host arrays; `f` builds its graph from the given tensors.
 */
export async function gradcheck(
  f: (...inputs: Tensor[]) => Tensor,
  inputs: { values: Float32Array; shape: readonly number[] }[],
  options: GradcheckOptions = {},
): Promise<void> {
  const { backward } = await import('./autograd/backward');
  const device = getCpuDevice();
  const eps = options.eps ?? 1e-3;
  const make = (vals: Float32Array[], grad: boolean) =>
    vals.map((v, i) => {
      const t = tensor(v, inputs[i]!.shape, { device });
      return grad ? t.requiresGrad_() : t;
    });
  const base = inputs.map((i) => Float32Array.from(i.values));
  const ts = make(base, true);
  const out = f(...ts);
  const g = new Generator(options.seed ?? 99);
  const w = new Float32Array(out.size);
  for (let i = 0; i < w.length; i++) w[i] = g.normal();
  const lossOf = async (vals: Float32Array[]): Promise<number> => {
    const y = await f(...make(vals, false)).toFloat32();
    let s = 0;
    for (let i = 0; i < y.length; i++) s += w[i]! * y[i]!;
    return s;
  };
  backward(out, { grad: tensor(w, out.shape, { device }) });
  for (let k = 0; k < inputs.length; k++) {
    const analytic = ts[k]!.grad ? await ts[k]!.grad!.toFloat32() : new Float32Array(base[k]!.length);
    const n = base[k]!.length;
    const count = Math.min(n, options.maxElements ?? 64);
    const idx = Array.from({ length: count }, (_, j) => Math.floor((j * n) / count));
    const numeric: number[] = [];
    const got: number[] = [];
    for (const i of idx) {
      const plus = base.map((v) => Float32Array.from(v));
      const minus = base.map((v) => Float32Array.from(v));
      const h = eps * Math.max(1, Math.abs(base[k]![i]!));
      plus[k]![i]! += h;
      minus[k]![i]! -= h;
      const hp = plus[k]![i]! - base[k]![i]!;
      const hm = base[k]![i]! - minus[k]![i]!;
      numeric.push(((await lossOf(plus)) - (await lossOf(minus))) / (hp + hm));
      got.push(analytic[i]!);
    }
    expectClose(got, numeric, { rtol: options.rtol ?? 2e-3, atol: 1e-6, what: `gradient of input ${k}` });
  }
}

/**
 * `f` forward and backward on `device` with fresh allocations poisoned: the inputs made from
 * `inputs` (each in its dtype, f32 by default) requiring grad, the upstream gradient
 * `upstream(output shape)`; the output and each input's gradient (null where it got none) as f32.
 */
export async function outputAndGradients(
  device: Device,
  f: (...inputs: Tensor[]) => Tensor,
  inputs: readonly { values: Float32Array; shape: readonly number[]; dtype?: DType }[],
  upstream: (shape: readonly number[]) => Float32Array,
): Promise<{ out: Float32Array; grads: (Float32Array | null)[] }> {
  const { backward } = await import('./autograd/backward');
  const ts = inputs.map((i) => onDevice(i.values, i.shape, device, i.dtype).requiresGrad_());
  const out = poisoned(device, () => f(...ts));
  const g = upstream(out.shape);
  poisoned(device, () => backward(out, { grad: tensor(g, out.shape, { device }) }));
  const grads = await Promise.all(ts.map((t) => (t.grad ? t.grad.toFloat32() : Promise.resolve(null))));
  return { out: await out.toFloat32(), grads };
}

/**
 * Runs `f` forward and backward on the CPU reference and on `gpu` with identical inputs and a
 * fixed random upstream gradient, and checks outputs and every input gradient agree.
 */
export async function expectBackwardMatches(
  gpu: Device,
  f: (...inputs: Tensor[]) => Tensor,
  inputs: { values: Float32Array; shape: readonly number[] }[],
  options: CloseOptions & { seed?: number } = {},
): Promise<void> {
  const run = (device: Device) => outputAndGradients(device, f, inputs, (shape) => randomData(shape, options.seed ?? 77));
  const ref = await run(getCpuDevice());
  const got = await run(gpu);
  const tol = { rtol: options.rtol ?? 1e-5, atol: options.atol ?? 0 };
  expectClose(got.out, ref.out, { ...tol, what: `${options.what ?? 'op'} output` });
  ref.grads.forEach((r, k) => {
    const gk = got.grads[k];
    if (!r || !gk) {
      expect(gk === null, `${options.what ?? 'op'}: gradient ${k} present on one device only`).toBe(r === null);
      return;
    }
    expectClose(gk, r, { ...tol, what: `${options.what ?? 'op'} gradient of input ${k}` });
  });
}
