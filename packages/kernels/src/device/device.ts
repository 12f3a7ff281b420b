/**
 * Device selection. `initDevice()` opens the default device once per process:
 * `NEMOTRON_DEVICE=webgpu|cpu|auto` (default auto: WebGPU when an adapter exists, else the CPU
 * backend with a warning), `NEMOTRON_BACKEND` / `NEMOTRON_ADAPTER` pick the adapter.
 */
import { CpuDevice } from './cpu-device';
import { openDawn, type AdapterRequest, type BackendName } from './dawn';
import { NoAdapterError } from './errors';
import { WebGpuDevice } from './webgpu-device';

export type Device = CpuDevice | WebGpuDevice;
export type DeviceKind = Device['kind'];

export interface DeviceOptions extends AdapterRequest {
  /** `auto` (default): WebGPU if an adapter is found, otherwise CPU. */
  kind?: DeviceKind | 'auto';
}

let defaultDevice: Device | null = null;
let cpuDevice: CpuDevice | null = null;
const gpuDevices = new Map<string, Promise<WebGpuDevice>>();

const BACKENDS: readonly BackendName[] = ['vulkan', 'metal', 'd3d12', 'opengl', 'opengles'];

/** Device options from the environment (NEMOTRON_DEVICE, NEMOTRON_BACKEND, NEMOTRON_ADAPTER). */
export function deviceOptionsFromEnv(env: Record<string, string | undefined> = process.env): DeviceOptions {
  const opts: DeviceOptions = {};
  const kind = env.NEMOTRON_DEVICE;
  if (kind) {
    if (kind !== 'webgpu' && kind !== 'cpu' && kind !== 'auto') throw new Error(`NEMOTRON_DEVICE must be webgpu, cpu or auto, got '${kind}'`);
    opts.kind = kind;
  }
  const backend = env.NEMOTRON_BACKEND;
  if (backend) {
    if (!(BACKENDS as readonly string[]).includes(backend)) throw new Error(`NEMOTRON_BACKEND must be one of ${BACKENDS.join(', ')}, got '${backend}'`);
    opts.backend = backend as BackendName;
  }
  if (env.NEMOTRON_ADAPTER) opts.adapter = env.NEMOTRON_ADAPTER;
  return opts;
}

/** The CPU backend (one per process). */
export function getCpuDevice(): CpuDevice {
  return (cpuDevice ??= new CpuDevice());
}

/** Opens (once per adapter request) a WebGPU device. */
export function getWebGpuDevice(request: AdapterRequest = {}): Promise<WebGpuDevice> {
  const key = `${request.backend ?? ''}|${request.adapter ?? ''}`;
  let p = gpuDevices.get(key);
  if (!p) {
    p = openDawn(request).then((h) => new WebGpuDevice(h));
    p.catch(() => gpuDevices.delete(key));
    gpuDevices.set(key, p);
  }
  return p;
}

/**
 * Opens a device and makes it the default for new tensors. Options override the environment.
 */
export async function initDevice(options: DeviceOptions = {}): Promise<Device> {
  const opts = { ...deviceOptionsFromEnv(), ...stripUndefined(options) };
  const kind = opts.kind ?? 'auto';
  let device: Device;
  if (kind === 'cpu') device = getCpuDevice();
  else {
    try {
      device = await getWebGpuDevice(opts);
    } catch (e) {
      if (kind === 'webgpu' || !(e instanceof NoAdapterError)) throw e;
      console.warn(`nemotron-ts: ${(e as Error).message}; falling back to the CPU backend`);
      device = getCpuDevice();
    }
  }
  defaultDevice = device;
  return device;
}

/** The default device; throws when {@link initDevice} was not called. */
export function getDefaultDevice(): Device {
  if (!defaultDevice) throw new Error('no default device: call `await initDevice()` first (or pass { device })');
  return defaultDevice;
}

export function setDefaultDevice(device: Device): void {
  defaultDevice = device;
}

export function hasDefaultDevice(): boolean {
  return defaultDevice !== null;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
