/**
 * Device selection. `initDevice()` opens the default device once per process:
 * `NEMOTRON_DEVICE=webgpu|native|cpu|auto` (default auto: a hardware WebGPU adapter, else the
 * native CPU backend, else a software WebGPU adapter, else the TypeScript CPU reference with a
 * warning), `NEMOTRON_BACKEND` / `NEMOTRON_ADAPTER` pick the adapter, `NEMOTRON_THREADS` the native
 * backend's threads.
 */
import { CpuDevice } from './cpu-device';
import { mayHaveHardwareGpu, openDawn, type AdapterRequest, type BackendName } from './dawn';
import { nativeKernels, nativeUnavailableReason } from '../native/library';
import { NoAdapterError } from './errors';
import { WebGpuDevice } from './webgpu-device';

export type Device = CpuDevice | WebGpuDevice;
export type DeviceKind = Device['kind'];

/** What `NEMOTRON_DEVICE` / `--device` may name: `native` is the CPU backend with native kernels. */
export type DeviceChoice = DeviceKind | 'native' | 'auto';
export const DEVICE_CHOICES: readonly DeviceChoice[] = ['webgpu', 'native', 'cpu', 'auto'];

export interface DeviceOptions extends AdapterRequest {
  /** `auto` (default): a hardware WebGPU adapter, else native CPU, else software WebGPU, else the CPU reference. */
  kind?: DeviceChoice;
}

let defaultDevice: Device | null = null;
let cpuDevice: CpuDevice | null = null;
let nativeDevice: CpuDevice | null | undefined;
const gpuDevices = new Map<string, Promise<WebGpuDevice>>();

const BACKENDS: readonly BackendName[] = ['vulkan', 'metal', 'd3d12', 'opengl', 'opengles'];

/** Device options from the environment (NEMOTRON_DEVICE, NEMOTRON_BACKEND, NEMOTRON_ADAPTER). */
export function deviceOptionsFromEnv(env: Record<string, string | undefined> = process.env): DeviceOptions {
  const opts: DeviceOptions = {};
  const kind = env.NEMOTRON_DEVICE;
  if (kind) {
    if (!(DEVICE_CHOICES as readonly string[]).includes(kind)) throw new Error(`NEMOTRON_DEVICE must be ${DEVICE_CHOICES.join(', ')}, got '${kind}'`);
    opts.kind = kind as DeviceChoice;
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

/** The CPU backend with native kernels (one per process), or null when the library cannot be built or loaded. */
export function getNativeDevice(): CpuDevice | null {
  if (nativeDevice === undefined) {
    const lib = nativeKernels();
    nativeDevice = lib ? new CpuDevice(lib) : null;
  }
  return nativeDevice;
}

/** Opens (once per adapter request) a WebGPU device. */
export function getWebGpuDevice(request: AdapterRequest = {}): Promise<WebGpuDevice> {
  const key = `${request.backend ?? ''}|${request.adapter ?? ''}|${request.hardwareOnly ? 'hardware' : ''}`;
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
  else if (kind === 'native') {
    const native = getNativeDevice();
    if (!native) throw new Error(`the native CPU backend is unavailable: ${nativeUnavailableReason()}`);
    device = native;
  } else if (kind === 'auto' && getNativeDevice()) {
    // A real GPU, else the native kernels: asked in that order, so a host without a GPU never opens a
    // software adapter it would not use (measured: ~90 MB of RSS, and llvmpipe's threads).
    device = (await hardwareGpu(opts)) ?? getNativeDevice()!;
  } else {
    // webgpu, or auto without native kernels: a software adapter beats the TypeScript reference.
    let gpu: WebGpuDevice | null = null;
    try {
      gpu = await getWebGpuDevice(opts);
    } catch (e) {
      if (kind === 'webgpu' || !(e instanceof NoAdapterError)) throw e;
      console.warn(`nemotron-ts: ${(e as Error).message}; falling back to the CPU backend`);
    }
    device = gpu ?? getCpuDevice();
    // Say why the fast CPU path is not used (no compiler, not Linux …): silently landing on a software
    // adapter or the reference would cost the user 3× or more without a hint.
    if (kind === 'auto' && (!gpu || gpu.isSoftwareAdapter))
      console.warn(
        `nemotron-ts: native CPU kernels unavailable (${nativeUnavailableReason()}); running on ${gpu ? 'a software GPU adapter' : 'the TypeScript reference'}, which is slower`,
      );
  }
  defaultDevice = device;
  return device;
}

/** A WebGPU device on a real GPU, or null when the host has none. */
async function hardwareGpu(request: AdapterRequest): Promise<WebGpuDevice | null> {
  if (!mayHaveHardwareGpu()) return null;
  try {
    return await getWebGpuDevice({ ...request, hardwareOnly: true });
  } catch (e) {
    if (e instanceof NoAdapterError) return null;
    throw e;
  }
}

/** A short label for benchmark rows and logs: `cpu`, `cpu:native` or `webgpu:<backend>` (e.g. `webgpu:opengl`). */
export function deviceLabel(device: Device): string {
  return device.kind === 'cpu' ? device.name : `webgpu:${device.handles.backend}`;
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
