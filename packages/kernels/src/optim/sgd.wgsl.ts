/**
 * The fused SGD kernel: one pass per parameter tensor updates the parameter (and its momentum
 * buffer) in place. Parameters above one storage binding are updated window by window.
 */
import type { WebGpuDevice } from '../device/webgpu-device';
import { bindingWindows } from '../runtime/binding-windows';
import { Params } from '../runtime/params';
import { GRID_ARGS, flatIndex } from '../runtime/wgsl';
import type { Tensor } from '../tensor';

const WG = 256;

export interface SgdCoefficients {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
  /** First step of this parameter: the momentum buffer starts as the gradient itself. */
  first: boolean;
}

export function sgdStepGpu(device: WebGpuDevice, param: Tensor, grad: Tensor, momentumBuffer: Tensor | null, c: SgdCoefficients): void {
  const tensors = momentumBuffer ? [param, grad, momentumBuffer] : [param, grad];
  for (const w of bindingWindows(device, param.size, 4)) {
    const bound = tensors.map((t) => device.bind(t.storage, t.offset + w.start, w.length, `SGD ${t}`));
    const p = new Params()
      .u32('n', w.length)
      .u32('pOff', bound[0]!.elementOffset)
      .u32('gOff', bound[1]!.elementOffset)
      .u32('bOff', bound[2]?.elementOffset ?? 0)
      .u32('first', c.first ? 1 : 0)
      .f32('lr', c.lr)
      .f32('momentum', c.momentum)
      .f32('dampening', c.dampening)
      .f32('weightDecay', c.weightDecay);
    const momentum = momentumBuffer
      ? `
  var b = d;
  if (P.first == 0u) { b = P.momentum * buf[P.bOff + i] + (1.0 - P.dampening) * d; }
  buf[P.bOff + i] = b;
  d = ${c.nesterov ? 'd + P.momentum * b' : 'b'};`
      : '';
    device.run({
      name: 'sgd',
      source: `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
${momentumBuffer ? '@group(0) @binding(3) var<storage, read_write> buf: array<f32>;' : ''}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${flatIndex(WG)};
  if (i >= P.n) { return; }
  let p = param[P.pOff + i];
  var d = grad[P.gOff + i] + P.weightDecay * p;${momentum}
  param[P.pOff + i] = p - P.lr * d;
}`,
      params: p,
      bindings: bound.map((b) => b.range),
      workgroups: device.grid(w.length, WG),
      detail: `[${param.shape.join(',')}]`,
    });
  }
}
