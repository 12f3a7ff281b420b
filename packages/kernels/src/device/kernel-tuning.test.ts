import { describe, expect, test } from 'bun:test';
import { kernelTuningFor } from './kernel-tuning';

const adapter = (description: string, isFallbackAdapter = false): GPUAdapterInfo =>
  ({ description, device: '', vendor: '', architecture: '', isFallbackAdapter }) as unknown as GPUAdapterInfo;

describe('kernelTuningFor', () => {
  test('software rasterisers get texture operands, uniform operands, CPU-SIMD launches', () => {
    for (const info of [adapter('llvmpipe (LLVM 15.0.6, 256 bits)'), adapter('lavapipe'), adapter('SwiftShader Device'), adapter('x', true)]) {
      expect(kernelTuningFor(info, undefined)).toEqual({
        name: 'software',
        textureOperands: true,
        uniformOperands: true,
        launchShape: 'cpu-simd',
      });
    }
  });

  test('a real GPU gets storage-buffer operands and wide launches', () => {
    expect(kernelTuningFor(adapter('NVIDIA GeForce RTX 4090'), undefined)).toEqual({
      name: 'hardware',
      textureOperands: false,
      uniformOperands: false,
      launchShape: 'gpu',
    });
  });

  test('NEMOTRON_KERNEL_TUNING picks the row whatever the adapter, and a bad value is named', () => {
    expect(kernelTuningFor(adapter('llvmpipe'), 'hardware').name).toBe('hardware');
    expect(kernelTuningFor(adapter('NVIDIA'), 'software').name).toBe('software');
    expect(() => kernelTuningFor(adapter('llvmpipe'), 'fast')).toThrow(/NEMOTRON_KERNEL_TUNING must be software or hardware, got 'fast'/);
  });
});
