/**
 * The fused AdamW kernel: one pass per parameter tensor reads the gradient and updates the
 * parameter and both moments in place. Parameters above one storage binding are updated window by
 * window.
 */
import type { WebGpuDevice } from '../device/webgpu-device';
import { bindingWindows } from '../runtime/binding-windows';
import { Params } from '../runtime/params';
import { GRID_ARGS, flatIndex } from '../runtime/wgsl';
import type { Tensor } from '../tensor';

const WG = 256;

/** Per-step scalars, computed on the host in f64. */
export interface AdamWCoefficients {
  beta1: number;
  beta2: number;
  eps: number;
  /** 1 − lr·weightDecay (decoupled weight decay). */
  decay: number;
  /** lr / (1 − beta1^t). */
  stepSize: number;
  /** sqrt(1 − beta2^t). */
  bias2Sqrt: number;
  /** Multiplies the gradient first (a folded clipping coefficient; CPU kernels only, default 1). */
  gradScale?: number;
}

export function adamwStepGpu(device: WebGpuDevice, param: Tensor, grad: Tensor, expAvg: Tensor, expAvgSq: Tensor, c: AdamWCoefficients): void {
  for (const w of bindingWindows(device, param.size, 4)) {
    const tensors = [param, grad, expAvg, expAvgSq];
    const bound = tensors.map((t) => device.bind(t.storage, t.offset + w.start, w.length, `AdamW ${t}`));
    const p = new Params()
      .u32('n', w.length)
      .u32('pOff', bound[0]!.elementOffset)
      .u32('gOff', bound[1]!.elementOffset)
      .u32('mOff', bound[2]!.elementOffset)
      .u32('vOff', bound[3]!.elementOffset)
      .f32('beta1', c.beta1)
      .f32('beta2', c.beta2)
      .f32('eps', c.eps)
      .f32('decay', c.decay)
      .f32('stepSize', c.stepSize)
      .f32('bias2Sqrt', c.bias2Sqrt);
    device.run({
      name: 'adamw',
      source: `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${flatIndex(WG)};
  if (i >= P.n) { return; }
  let g = grad[P.gOff + i];
  let mi = P.beta1 * m[P.mOff + i] + (1.0 - P.beta1) * g;
  let vi = P.beta2 * v[P.vOff + i] + (1.0 - P.beta2) * g * g;
  m[P.mOff + i] = mi;
  v[P.vOff + i] = vi;
  param[P.pOff + i] = param[P.pOff + i] * P.decay - P.stepSize * mi / (sqrt(vi) / P.bias2Sqrt + P.eps);
}`,
      params: p,
      bindings: bound.map((b) => b.range),
      workgroups: device.grid(w.length, WG),
      detail: `[${param.shape.join(',')}]`,
    });
  }
}
