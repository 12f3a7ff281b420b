// Errors from the device layer must be thrown, name what failed, and never leave silent garbage.
import { describe, expect, test } from 'bun:test';
import { empty, tensor } from '../creation';
import { add } from '../ops/elementwise/elementwise';
import { tidy } from '../runtime/scope';
import { testGpu, withBindingLimit } from '../testing';
import { openDawn } from './dawn';
import { sharedLibraryProbe } from './native-env';
import { DeviceLostError, KernelValidationError, NoAdapterError, OutOfMemoryError } from './errors';
import { BindingTooLargeError } from '../runtime/bindings';
import { WebGpuDevice } from './webgpu-device';
import { deviceOptionsFromEnv } from './device';

const gpu = (await testGpu()) as WebGpuDevice | null;

describe.if(gpu !== null)('WebGPU device errors', () => {
  test('a kernel that fails to compile throws at the next sync, naming the kernel', async () => {
    const out = empty([4], { device: gpu! });
    gpu!.run({
      name: 'broken_kernel',
      source: '@group(0) @binding(1) var<storage, read_write> y: array<f32>;\n@compute @workgroup_size(1) fn main() { y[0] = undefined_name; }',
      bindings: [gpu!.bind(out.storage, 0, 4).range],
      workgroups: [1, 1, 1],
      detail: '[4]',
    });
    const err = await gpu!.sync().then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(KernelValidationError);
    expect(String((err as Error).message)).toContain("kernel 'broken_kernel' failed to build");
    out.dispose();
    // The device stays usable afterwards.
    const a = tensor([1, 2, 3], [3], { device: gpu! });
    expect(Array.from(await add(a, 1).data())).toEqual([2, 3, 4]);
  });

  test('an allocation above maxBufferSize is a clear OutOfMemoryError, before anything runs', () => {
    expect(() => empty([gpu!.limits.maxBufferSize], { device: gpu! })).toThrow(OutOfMemoryError);
    expect(() => empty([gpu!.limits.maxBufferSize], { device: gpu! })).toThrow(/maxBufferSize/);
  });

  test('a binding above maxStorageBufferBindingSize names the operand', async () => {
    await withBindingLimit(gpu!, 1024, async () => {
      const a = tensor(new Float32Array(1000), [1000], { device: gpu! });
      expect(() => add(a, 1)).toThrow(BindingTooLargeError);
      expect(() => add(a, 1)).toThrow(/add operand 0/);
    });
  });

  test('use after dispose names the tensor', () => {
    const a = tensor([1, 2], [2], { device: gpu! });
    a.name = 'weights';
    a.dispose();
    expect(() => add(a, 1)).toThrow(/weights.*used after dispose/);
  });

  test('memory returns to the pool when a tidy scope ends', async () => {
    const before = gpu!.memoryStats().liveBytes;
    tidy(() => {
      const a = tensor(new Float32Array(10000), [10000], { device: gpu! });
      add(add(a, 1), 2);
    });
    expect(gpu!.memoryStats().liveBytes).toBe(before);
  });

  test('a lost device turns the next operation into a DeviceLostError', async () => {
    // A separate device, so the shared one stays alive for the other tests.
    const own = new WebGpuDevice(await openDawn({ backend: gpu!.handles.backend }));
    own.gpu.destroy();
    await own.gpu.lost;
    expect(() => tensor([1], [1], { device: own })).toThrow(DeviceLostError);
  });
});

test('device options from the environment are validated', () => {
  expect(deviceOptionsFromEnv({ NEMOTRON_DEVICE: 'cpu', NEMOTRON_ADAPTER: 'llvm' })).toEqual({ kind: 'cpu', adapter: 'llvm' });
  expect(() => deviceOptionsFromEnv({ NEMOTRON_DEVICE: 'gpu' })).toThrow(/NEMOTRON_DEVICE/);
  expect(() => deviceOptionsFromEnv({ NEMOTRON_BACKEND: 'cuda' })).toThrow(/NEMOTRON_BACKEND/);
});

const vulkanLoaderPresent = process.platform === 'linux' && (await sharedLibraryProbe('libvulkan.so.1', 'vkGetInstanceProcAddr')) === null;

describe.if(vulkanLoaderPresent)('Vulkan adapter selection (libvulkan.so.1 loads here)', () => {
  test('NEMOTRON_BACKEND=vulkan reaches Dawn: a core-level device, or a reason other than a missing loader', async () => {
    const opened = await openDawn({ backend: 'vulkan' }).then(
      (h) => h,
      (e: unknown) => e,
    );
    if (opened instanceof NoAdapterError) {
      expect(opened.message).not.toMatch(/does not load/);
      return;
    }
    const h = opened as Awaited<ReturnType<typeof openDawn>>;
    expect(h.backend).toBe('vulkan');
    expect(h.featureLevel).toBe('core');
    h.device.destroy();
  });

  test('the default choice names every adapter it passed over, and why', async () => {
    const h = await openDawn().catch(() => null);
    if (!h) return;
    if (h.backend !== 'vulkan') expect(h.skipped.some((r) => r.startsWith('vulkan: '))).toBe(true);
    h.device.destroy();
  });
});
