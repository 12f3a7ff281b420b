/**
 * Per-worker device choice. A spec is `cpu` (the TypeScript reference), `native` or `cpu:native`
 * (the native CPU backend; `native:N` with N threads), `webgpu` (any adapter), `auto` (WebGPU,
 * else CPU), a Dawn backend (`vulkan`, `metal`, `d3d12`, `opengl`, `opengles`, optionally `:0`),
 * or `adapter:NAME` (a substring of the adapter's description, vendor or device).
 *
 * Native workers without a thread count share the host's cores: {@link resolveDevices} gives
 * each an equal share of what the workers with a count leave (at least one thread each).
 */
import { availableParallelism } from 'node:os';
import type { BackendName, DeviceOptions } from '@nemotron-ts/kernels';

const BACKENDS: readonly BackendName[] = ['vulkan', 'metal', 'd3d12', 'opengl', 'opengles'];

/** A parsed spec: the device to open and, for the native backend, its thread count. */
export interface WorkerDeviceSpec {
  readonly options: DeviceOptions;
  /** Native backend threads (undefined: the backend's default, NEMOTRON_THREADS or every core). */
  readonly threads?: number;
}

export function parseWorkerDevice(spec: string): WorkerDeviceSpec {
  const text = spec.trim();
  if (text === 'cpu' || text === 'webgpu' || text === 'auto') return { options: { kind: text } };
  if (text.startsWith('adapter:') && text.length > 'adapter:'.length) return { options: { kind: 'webgpu', adapter: text.slice('adapter:'.length) } };
  const native = /^(?:cpu:)?native(?::(.*))?$/.exec(text);
  if (native) {
    if (native[1] === undefined) return { options: { kind: 'native' } };
    const threads = Number(native[1]);
    if (!/^\d+$/.test(native[1]) || threads < 1) throw new Error(`device '${spec}': the thread count must be an integer ≥ 1, got '${native[1]}'`);
    return { options: { kind: 'native' }, threads };
  }
  const [name, index] = text.split(':');
  if (name === 'cpu' && index !== undefined && /^\d+$/.test(index)) {
    throw new Error(`device '${spec}': the TypeScript CPU reference runs on one thread; give native:${index} for the native CPU backend with ${index} threads`);
  }
  if ((BACKENDS as readonly string[]).includes(name!)) {
    if (index !== undefined && index !== '0') {
      // WebGPU hands out one adapter per backend request; several GPUs are told apart by name.
      throw new Error(`device '${spec}': adapters are chosen by name, not index (use 'adapter:NAME', e.g. adapter:A100, or '${name}')`);
    }
    return { options: { kind: 'webgpu', backend: name as BackendName } };
  }
  throw new Error(
    `device '${spec}' is not one of cpu, native[:THREADS], cpu:native[:THREADS], webgpu, auto, ${BACKENDS.join(', ')} (optionally ':0') or adapter:NAME`,
  );
}

/** The device options of a spec (its thread count aside). */
export function parseDeviceSpec(spec: string): DeviceOptions {
  return parseWorkerDevice(spec).options;
}

/**
 * `devices` checked and stretched to `count` workers (one spec repeats; otherwise one per worker),
 * native specs without a thread count given `native:N`, their share of `cores`.
 */
export function resolveDevices(devices: readonly string[] | undefined, count: number, fallback: string, cores = availableParallelism()): string[] {
  const given = devices && devices.length > 0 ? [...devices] : [fallback];
  const parsed = given.map(parseWorkerDevice);
  if (given.length !== 1 && given.length !== count)
    throw new Error(`devices: ${given.length} given (${given.join(', ')}) for ${count} workers; give one, or one per worker`);
  const list = given.length === 1 ? Array.from({ length: count }, () => given[0]!) : given;
  const specs = given.length === 1 ? Array.from({ length: count }, () => parsed[0]!) : parsed;
  const shared = specs.filter((s) => s.options.kind === 'native' && s.threads === undefined).length;
  if (shared === 0) return list;
  const fixed = specs.reduce((n, s) => n + (s.threads ?? 0), 0);
  const share = Math.max(1, Math.floor((cores - fixed) / shared));
  return list.map((d, i) => (specs[i]!.options.kind === 'native' && specs[i]!.threads === undefined ? `native:${share}` : d));
}
