/**
 * Kernels of gradient-norm clipping: per tensor, partial sums of squares (each invocation strides
 * through about CHUNK elements, so neighbouring invocations read neighbouring elements); and the
 * scaled copy g·min(1, maxNorm / (norm + eps)) that reads the norm on the device.
 */
import type { WebGpuDevice } from '../device/webgpu-device';
import { bindingWindows, type BindingWindow } from '../runtime/binding-windows';
import { Params } from '../runtime/params';
import { GRID_ARGS, flatIndex } from '../runtime/wgsl';
import type { Tensor } from '../tensor';

const WG = 256;
/** Elements per partial sum: short enough for f32 accuracy, long enough to keep partials few. */
const CHUNK = 1024;

/** Partial sums one window of a tensor produces. */
export function partialsFor(w: BindingWindow): number {
  return Math.ceil(w.length / CHUNK);
}

/** Writes the partial sums of squares of `grad` (dense f32) into `partials` from element `at`; returns the count. */
export function sumSquaresGpu(device: WebGpuDevice, grad: Tensor, partials: Tensor, at: number): number {
  let written = 0;
  for (const w of bindingWindows(device, grad.size, 4)) {
    const count = partialsFor(w);
    const src = device.bind(grad.storage, grad.offset + w.start, w.length, `clipGradNorm ${grad}`);
    const dst = device.bind(partials.storage, partials.offset + at + written, count, 'clipGradNorm partials');
    const p = new Params().u32('n', w.length).u32('count', count).u32('inOff', src.elementOffset).u32('outOff', dst.elementOffset);
    device.run({
      name: 'sum_squares',
      source: `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let t = ${flatIndex(WG)};
  if (t >= P.count) { return; }
  var acc = 0.0;
  for (var i = t; i < P.n; i += P.count) {
    let v = g[P.inOff + i];
    acc += v * v;
  }
  partials[P.outOff + t] = acc;
}`,
      params: p,
      bindings: [src.range, dst.range],
      workgroups: device.grid(count, WG),
      detail: `[${grad.shape.join(',')}]`,
    });
    written += count;
  }
  return written;
}

/** out = grad · min(1, maxNorm / (norm + eps)) for dense f32 `grad` and `out`; `norm` is a one-element f32 tensor. */
export function scaleByNormGpu(device: WebGpuDevice, grad: Tensor, norm: Tensor, out: Tensor, maxNorm: number, eps: number): void {
  const n = device.bind(norm.storage, norm.offset, 1, 'clipGradNorm norm');
  for (const w of bindingWindows(device, grad.size, 4)) {
    const src = device.bind(grad.storage, grad.offset + w.start, w.length, `clipGradNorm ${grad}`);
    const dst = device.bind(out.storage, out.offset + w.start, w.length, 'clipGradNorm output');
    const p = new Params()
      .u32('n', w.length)
      .u32('inOff', src.elementOffset)
      .u32('outOff', dst.elementOffset)
      .u32('normOff', n.elementOffset)
      .f32('maxNorm', maxNorm)
      .f32('eps', eps);
    device.run({
      name: 'clip_scale',
      source: `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> norm: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${flatIndex(WG)};
  if (i >= P.n) { return; }
  let coef = min(1.0, P.maxNorm / (norm[P.normOff] + P.eps));
  out[P.outOff + i] = g[P.inOff + i] * coef;
}`,
      params: p,
      bindings: [src.range, n.range, dst.range],
      workgroups: device.grid(w.length, WG),
      detail: `[${grad.shape.join(',')}]`,
    });
  }
}
