/**
 * The one place that talks to Dawn (the `webgpu` npm package): instance creation, adapter choice
 * and device creation with the adapter's own limits.
 *
 * Adapter order: a real GPU through the platform's native backend (Vulkan / Metal / D3D12) at the
 * core feature level; otherwise OpenGL (ES) on Mesa llvmpipe at the compatibility feature level —
 * the embedded default on GPU-less hosts.
 */
import { create, globals } from 'webgpu';
import { NoAdapterError } from './errors';
import { setNativeEnv, sharedLibraryLoads } from './native-env';

export type BackendName = 'vulkan' | 'metal' | 'd3d12' | 'opengl' | 'opengles';

export interface AdapterRequest {
  /** Only try this backend. */
  backend?: BackendName;
  /** Substring matched (case-insensitively) against the adapter's description, device, vendor or backend. */
  adapter?: string;
}

export interface DawnHandles {
  readonly gpu: GPU;
  readonly adapter: GPUAdapter;
  readonly device: GPUDevice;
  readonly backend: BackendName;
  readonly featureLevel: 'core' | 'compatibility';
}

/**
 * Everything Dawn hands out stays referenced here for the life of the process: when Bun's GC frees
 * an instance while Dawn still pumps its events, the process segfaults in ProcessEvents.
 */
const keepAlive: unknown[] = [];
let globalsInstalled = false;

function installGlobals(): void {
  if (globalsInstalled) return;
  // GPUBufferUsage, GPUMapMode, GPUShaderStage... are needed as globals by WebGPU code.
  const g = globalThis as Record<string, unknown>;
  for (const [key, value] of Object.entries(globals as Record<string, unknown>)) if (!(key in g)) g[key] = value;
  globalsInstalled = true;
}

function nativeBackend(): BackendName {
  if (process.platform === 'darwin') return 'metal';
  if (process.platform === 'win32') return 'd3d12';
  return 'vulkan';
}

/** The software rasterisers Dawn can land on; a "real GPU" request must not accept them. */
export function isSoftwareAdapter(info: GPUAdapterInfo): boolean {
  const text = `${info.description} ${info.device} ${info.vendor} ${info.architecture}`.toLowerCase();
  return info.isFallbackAdapter || /llvmpipe|lavapipe|swiftshader|softpipe|software|null-backend/.test(text);
}

function describeAdapter(info: GPUAdapterInfo, backend: BackendName): string {
  return `${info.description} ${info.device} ${info.vendor} ${backend}`.toLowerCase();
}

interface Candidate {
  backend: BackendName;
  featureLevel: 'core' | 'compatibility';
  software: boolean;
}

function candidates(request: AdapterRequest): Candidate[] {
  const native: Candidate = { backend: nativeBackend(), featureLevel: 'core', software: false };
  const gl: Candidate[] = [
    { backend: 'opengl', featureLevel: 'compatibility', software: true },
    { backend: 'opengles', featureLevel: 'compatibility', software: true },
  ];
  const all = [native, ...gl];
  if (request.backend) {
    const only = all.filter((c) => c.backend === request.backend);
    if (only.length > 0) return only.map((c) => ({ ...c, software: true /* accept whatever it gives */ }));
    const level = request.backend === 'opengl' || request.backend === 'opengles' ? 'compatibility' : 'core';
    return [{ backend: request.backend, featureLevel: level, software: true }];
  }
  return all;
}

/** Limits we ask for: the adapter's own values (Dawn's defaults allow only 128 invocations per workgroup). */
const REQUESTED_LIMITS = [
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupStorageSize',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxStorageBuffersPerShaderStage',
  'maxUniformBufferBindingSize',
  'maxBindGroups',
  'maxTextureDimension2D',
  'maxStorageTexturesPerShaderStage',
] as const;

/** Opens a Dawn device, trying backends in order. Throws {@link NoAdapterError} when none fits. */
export async function openDawn(request: AdapterRequest = {}): Promise<DawnHandles> {
  // EGL would otherwise look for an X11 display and fail on a headless host.
  if (!process.env.EGL_PLATFORM) await setNativeEnv('EGL_PLATFORM', 'surfaceless');
  installGlobals();
  const tried: string[] = [];
  for (const c of candidates(request)) {
    // Without the Vulkan loader Dawn would only print a warning and find nothing.
    if (c.backend === 'vulkan' && process.platform === 'linux' && !(await sharedLibraryLoads('libvulkan.so.1'))) {
      tried.push('vulkan: libvulkan.so.1 not found');
      continue;
    }
    const gpu = create([`backend=${c.backend}`]);
    keepAlive.push(gpu);
    let adapter: GPUAdapter | null = null;
    try {
      adapter = await gpu.requestAdapter({ featureLevel: c.featureLevel, powerPreference: 'high-performance' });
    } catch (e) {
      tried.push(`${c.backend}: ${(e as Error).message}`);
      continue;
    }
    if (!adapter) {
      tried.push(`${c.backend}: no adapter`);
      continue;
    }
    if (!c.software && isSoftwareAdapter(adapter.info)) {
      tried.push(`${c.backend}: software adapter '${adapter.info.description}' skipped`);
      continue;
    }
    if (request.adapter && !describeAdapter(adapter.info, c.backend).includes(request.adapter.toLowerCase())) {
      tried.push(`${c.backend}: '${adapter.info.description}' does not match '${request.adapter}'`);
      continue;
    }
    keepAlive.push(adapter);
    const requiredLimits: Record<string, number> = {};
    const adapterLimits = adapter.limits as unknown as Record<string, number>;
    for (const name of REQUESTED_LIMITS) {
      const v = adapterLimits[name];
      if (typeof v === 'number') requiredLimits[name] = v;
    }
    const wanted: GPUFeatureName[] = ['shader-f16', 'timestamp-query'];
    const requiredFeatures = wanted.filter((f) => adapter.features.has(f));
    const device = await adapter.requestDevice({ requiredLimits, requiredFeatures, label: 'nemotron-ts' });
    keepAlive.push(device);
    return { gpu, adapter, device, backend: c.backend, featureLevel: c.featureLevel };
  }
  throw new NoAdapterError(`no WebGPU adapter found (${tried.join('; ')})`);
}
