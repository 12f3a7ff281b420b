/**
 * Per-worker device choice. A spec is `cpu`, `webgpu` (any adapter), `auto` (WebGPU, else CPU), a
 * Dawn backend (`vulkan`, `metal`, `d3d12`, `opengl`, `opengles`, optionally `:0`), or
 * `adapter:NAME` (a substring of the adapter's description, vendor or device).
 */
import type { BackendName, DeviceOptions } from '@nemotron-ts/kernels';

const BACKENDS: readonly BackendName[] = ['vulkan', 'metal', 'd3d12', 'opengl', 'opengles'];

export function parseDeviceSpec(spec: string): DeviceOptions {
  const text = spec.trim();
  if (text === 'cpu' || text === 'webgpu' || text === 'auto') return { kind: text };
  if (text.startsWith('adapter:') && text.length > 'adapter:'.length) return { kind: 'webgpu', adapter: text.slice('adapter:'.length) };
  const [name, index] = text.split(':');
  if ((BACKENDS as readonly string[]).includes(name!)) {
    if (index !== undefined && index !== '0') {
      // WebGPU hands out one adapter per backend request; several GPUs are told apart by name.
      throw new Error(`device '${spec}': adapters are chosen by name, not index (use 'adapter:NAME', e.g. adapter:A100, or '${name}')`);
    }
    return { kind: 'webgpu', backend: name as BackendName };
  }
  throw new Error(`device '${spec}' is not one of cpu, webgpu, auto, ${BACKENDS.join(', ')} (optionally ':0') or adapter:NAME`);
}

/** `devices` checked and stretched to `count` workers (one spec repeats; otherwise one per worker). */
export function resolveDevices(devices: readonly string[] | undefined, count: number, fallback: string): string[] {
  const list = devices && devices.length > 0 ? [...devices] : [fallback];
  for (const d of list) parseDeviceSpec(d);
  if (list.length === 1) return Array.from({ length: count }, () => list[0]!);
  if (list.length !== count) throw new Error(`devices: ${list.length} given (${list.join(', ')}) for ${count} workers; give one, or one per worker`);
  return list;
}
