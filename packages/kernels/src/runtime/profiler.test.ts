// Per-kernel GPU time from timestamp queries: where a device offers 'timestamp-query' (Vulkan/Metal/
// D3D12 at the core level; lavapipe here), profiling names every kernel dispatched with a positive
// time and leaves results unchanged; without the feature it refuses clearly.
import { describe, expect, test } from 'bun:test';
import { tensor } from '../creation';
import type { WebGpuDevice } from '../device/webgpu-device';
import { add, relu2 } from '../ops/elementwise/elementwise';
import { matmul } from '../ops/matmul/matmul';
import { softmax } from '../ops/softmax/softmax';
import { deviceLabel, randomData, testGpus } from '../testing';

const gpus = (await testGpus()) as WebGpuDevice[];

for (const gpu of gpus) {
  describe(`kernel profile on ${deviceLabel(gpu)}`, () => {
    test.if(gpu.canProfileKernels)('every kernel dispatched is named with its calls and a positive GPU time; results are unchanged', async () => {
      const a = tensor(randomData([33, 70], 1), [33, 70], { device: gpu });
      const b = tensor(randomData([70, 45], 2), [70, 45], { device: gpu });
      const run = () => softmax(relu2(add(matmul(a, b), 1)));
      const plain = await run().toFloat32();
      const { result, kernels } = await gpu.profileKernels(() => run().toFloat32());
      expect(Array.from(result)).toEqual(Array.from(plain));
      const names = kernels.map((k) => k.kernel);
      expect(names.some((n) => n.startsWith('softmax'))).toBe(true);
      expect(names.some((n) => n.includes('relu2'))).toBe(true);
      for (const k of kernels) {
        expect(k.calls).toBeGreaterThan(0);
        expect(k.gpuMs).toBeGreaterThan(0);
      }
    });

    test.if(!gpu.canProfileKernels)('without timestamp-query, profiling refuses naming the feature', async () => {
      await expect(gpu.profileKernels(() => 0)).rejects.toThrow(/timestamp-query/);
    });
  });
}
