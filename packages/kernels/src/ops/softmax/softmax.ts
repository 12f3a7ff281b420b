/**
 * Softmax and log-softmax along one axis (default: the last), numerically stable (max-subtracted),
 * f32 results from f32 or bf16 input. A row holding NaN gives NaN; a row of only −∞ gives NaN.
 */
import { record } from '../../autograd/graph';
import { empty } from '../../creation';
import type { Tensor } from '../../tensor';
import { alongAxis, assertFloatRows, dense, rowsOf } from '../rows';
import { softmaxCpu, softmaxGradCpu } from './softmax.cpu';
import { softmaxGpu, softmaxGradGpu, type SoftmaxKind } from './softmax.wgsl';

/** exp(x − max) / Σ exp(x − max) along `axis`. */
export function softmax(x: Tensor, axis = -1): Tensor {
  assertFloatRows(x, 'softmax');
  return alongAxis(x, axis, 'softmax', (t) => softmaxLast('softmax', t));
}

/** x − max − log Σ exp(x − max) along `axis`. */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  assertFloatRows(x, 'logSoftmax');
  return alongAxis(x, axis, 'logSoftmax', (t) => softmaxLast('logSoftmax', t));
}

function softmaxLast(kind: SoftmaxKind, x: Tensor): Tensor {
  const { rows, cols } = rowsOf(x);
  const out = empty(x.shape, { device: x.device });
  if (out.size > 0) {
    const xd = dense(x);
    if (x.device.kind === 'cpu') softmaxCpu(kind, xd, rows, cols, out);
    else softmaxGpu(x.device, kind, xd, rows, cols, out);
    xd.dispose();
  }
  record(kind, out, [x], (g, [y]) => [softmaxGrad(kind, y!, g)], [out]);
  return out;
}

/** The input gradient of softmax / log-softmax from its output `y` and the upstream gradient `g`. */
function softmaxGrad(kind: SoftmaxKind, y: Tensor, g: Tensor): Tensor {
  const { rows, cols } = rowsOf(y);
  const dx = empty(y.shape, { device: y.device });
  if (dx.size === 0) return dx;
  const gd = dense(g);
  if (y.device.kind === 'cpu') softmaxGradCpu(kind, y, gd, rows, cols, dx);
  else softmaxGradGpu(y.device, kind, y, gd, rows, cols, dx);
  gd.dispose();
  return dx;
}
