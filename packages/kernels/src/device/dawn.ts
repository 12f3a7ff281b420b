/**
 * The one place that talks to Dawn (the `webgpu` npm package): instance creation, adapter choice
 * and device creation with the adapter's own limits.
 *
 * Adapter order: a real GPU through the platform's native backend (Vulkan / Metal / D3D12) at the
 * core feature level; otherwise OpenGL (ES) on Mesa llvmpipe at the compatibility feature level —
 * the embedded default on GPU-less hosts; otherwise the native backend's software adapter (Mesa
 * lavapipe, SwiftShader) at the core level. Every adapter passed over is listed with its reason in
 * {@link DawnHandles.skipped} (`nemotron info` prints them).
 */
import { existsSync, readdirSync } from 'node:fs';
import { NoAdapterError } from './errors';
import { sharedLibraryProbe, setNativeEnv, withStderrFiltered } from './native-env';

export type BackendName = 'vulkan' | 'metal' | 'd3d12' | 'opengl' | 'opengles';

export interface AdapterRequest {
  /** Only try this backend. */
  backend?: BackendName;
  /** Substring matched (case-insensitively) against the adapter's description, device, vendor or backend. */
  adapter?: string;
  /** Only a real GPU on the platform's native backend: no software adapter is opened (it would hold memory and threads). */
  hardwareOnly?: boolean;
}

export interface DawnHandles {
  readonly gpu: GPU;
  readonly adapter: GPUAdapter;
  readonly device: GPUDevice;
  readonly backend: BackendName;
  readonly featureLevel: 'core' | 'compatibility';
  /** Why each adapter tried before this one was not used (for `nemotron info`). */
  readonly skipped: readonly string[];
}

/**
 * Everything Dawn hands out stays referenced here for the life of the process: when Bun's GC frees
 * an instance while Dawn still pumps its events, the process segfaults in ProcessEvents.
 */
const keepAlive: unknown[] = [];
let globalsInstalled = false;

/** Dawn's module, loaded on the first request: a host running the native CPU backend never maps it (~9 MB of RSS). */
type Dawn = typeof import('webgpu');
let dawn: Dawn | undefined;

async function loadDawn(): Promise<Dawn> {
  dawn ??= await import('webgpu');
  return dawn;
}

function installGlobals({ globals }: Dawn): void {
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

/**
 * False when this host cannot have a GPU a driver could expose: on Linux every hardware Vulkan driver
 * opens a device node (a DRM render node, NVIDIA's, WSL's /dev/dxg), so without one asking Dawn
 * would only load its library and the Vulkan loader to find software adapters. True elsewhere.
 */
export function mayHaveHardwareGpu(): boolean {
  if (process.platform !== 'linux') return true;
  if (existsSync('/dev/dxg') || existsSync('/dev/nvidiactl')) return true;
  try {
    return readdirSync('/dev/dri').some((name) => name.startsWith('renderD') || name.startsWith('card'));
  } catch {
    return false;
  }
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
  /** Which adapters this step accepts: only real GPUs, only software ones, or whatever the backend gives. */
  accepts: 'hardware' | 'software' | 'any';
}

/**
 * The order adapters are tried in: a real GPU on the native backend; then OpenGL(ES) (llvmpipe on
 * a GPU-less host, measured ~2.5× faster than lavapipe here); then the native backend's software
 * adapter (Mesa lavapipe, SwiftShader) at the core feature level.
 */
function candidates(request: AdapterRequest): Candidate[] {
  const native = nativeBackend();
  const all: Candidate[] = [
    { backend: native, featureLevel: 'core', accepts: 'hardware' },
    { backend: 'opengl', featureLevel: 'compatibility', accepts: 'any' },
    { backend: 'opengles', featureLevel: 'compatibility', accepts: 'any' },
    { backend: native, featureLevel: 'core', accepts: 'software' },
  ];
  if (request.backend) {
    const level = request.backend === 'opengl' || request.backend === 'opengles' ? 'compatibility' : 'core';
    return [{ backend: request.backend, featureLevel: level, accepts: request.hardwareOnly ? 'hardware' : 'any' }];
  }
  return request.hardwareOnly ? all.filter((c) => c.accepts === 'hardware') : all;
}

/** A library each backend's loader must export; checked before Dawn is asked, so a missing one is a reason, not a warning. */
const LOADER_PROBES: Partial<Record<BackendName, { library: string; symbol: string }>> = {
  vulkan: { library: 'libvulkan.so.1', symbol: 'vkGetInstanceProcAddr' },
};

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

type AdapterAnswer = { gpu: GPU; adapter: GPUAdapter } | { reason: string };

/** Asks one backend for its adapter (once per backend and feature level per call of {@link openDawn}). */
async function requestAdapter(c: Candidate): Promise<AdapterAnswer> {
  const probe = process.platform === 'linux' ? LOADER_PROBES[c.backend] : undefined;
  if (probe) {
    const failure = await sharedLibraryProbe(probe.library, probe.symbol);
    if (failure !== null) return { reason: `${probe.library} does not load (${failure})` };
  }
  const gpu = (await loadDawn()).create([`backend=${c.backend}`]);
  keepAlive.push(gpu);
  try {
    const options: GPURequestAdapterOptions = { featureLevel: c.featureLevel, powerPreference: 'high-performance' };
    // Filtered only where every adapter is a software one: were a real GPU's driver to crash inside
    // the request, what it and Bun print about the crash would die with the collected stderr.
    const request = () => gpu.requestAdapter(options);
    const adapter = mayHaveHardwareGpu() ? await request() : await withStderrFiltered(request, DAWN_LIMIT_NOTES);
    return adapter ? { gpu, adapter } : { reason: 'no adapter' };
  } catch (e) {
    return { reason: (e as Error).message };
  }
}

/**
 * What Dawn prints while opening a software adapter whose limits exceed its own bookkeeping
 * ("maxDynamic…BuffersPerPipelineLayout artificially reduced from 1000000 to 16…"): four lines on
 * every run on llvmpipe or lavapipe, about limits we never use. (A host with a GPU may still show
 * the two of lavapipe, enumerated beside it.)
 */
const DAWN_LIMIT_NOTES = /^Warning: maxDynamic\w+PerPipelineLayout artificially reduced from \d+ to \d+/;

/** Opens a Dawn device, trying backends in order. Throws {@link NoAdapterError} when none fits. */
export async function openDawn(request: AdapterRequest = {}): Promise<DawnHandles> {
  // EGL would otherwise look for an X11 display and fail on a headless host.
  if (!process.env.EGL_PLATFORM) await setNativeEnv('EGL_PLATFORM', 'surfaceless');
  installGlobals(await loadDawn());
  const skipped: string[] = [];
  const answers = new Map<string, AdapterAnswer>();
  for (const c of candidates(request)) {
    const key = `${c.backend}/${c.featureLevel}`;
    const known = answers.get(key);
    const answer = known ?? (await requestAdapter(c));
    answers.set(key, answer);
    if ('reason' in answer) {
      if (!known) skipped.push(`${c.backend}: ${answer.reason}`);
      continue;
    }
    const { gpu, adapter } = answer;
    const software = isSoftwareAdapter(adapter.info);
    if (c.accepts === 'hardware' && software) {
      skipped.push(`${c.backend}: software adapter '${adapter.info.description}' deferred (a real GPU is preferred; OpenGL is tried first)`);
      continue;
    }
    if (c.accepts === 'software' && !software) continue; // already rejected as hardware above for another reason
    if (request.adapter && !describeAdapter(adapter.info, c.backend).includes(request.adapter.toLowerCase())) {
      skipped.push(`${c.backend}: '${adapter.info.description}' does not match '${request.adapter}'`);
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
    return { gpu, adapter, device, backend: c.backend, featureLevel: c.featureLevel, skipped };
  }
  throw new NoAdapterError(`no WebGPU adapter found (${skipped.join('; ')})`);
}
