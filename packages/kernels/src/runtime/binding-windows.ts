/**
 * Ranges of a large operand that each fit one storage binding. Ops over tensors above
 * `maxStorageBufferBindingSize` (gathers from huge tables, optimizer steps on huge parameters) run
 * one dispatch per range, each binding only its own range.
 */
import type { WebGpuDevice } from '../device/webgpu-device';

export interface BindingWindow {
  /** First element of the window, relative to the tensor's offset. */
  start: number;
  /** Elements in the window. */
  length: number;
}

/** Windows covering `extent` elements of `bytesPerElement` bytes each. */
export function bindingWindows(device: WebGpuDevice, extent: number, bytesPerElement: number): BindingWindow[] {
  // `bind` starts up to one alignment below the first element and pads the end to 4 bytes.
  const budget = device.limits.maxStorageBufferBindingSize - device.limits.minStorageBufferOffsetAlignment - 4;
  // Whole 64-element groups keep bf16 windows on 32-bit word boundaries.
  const perWindow = Math.floor(budget / bytesPerElement / 64) * 64;
  if (perWindow <= 0) throw new Error(`bindingWindows: maxStorageBufferBindingSize ${device.limits.maxStorageBufferBindingSize} is too small`);
  const windows: BindingWindow[] = [];
  for (let start = 0; start < extent; start += perWindow) windows.push({ start, length: Math.min(perWindow, extent - start) });
  if (windows.length === 0) windows.push({ start: 0, length: Math.max(extent, 1) });
  return windows;
}
