/** Exact copies of dense tensors for optimizer state (a buffer copy on the GPU: no binding limit). */
import { empty } from '../creation';
import { bytesPerElement } from '../dtype';
import { cpuView, type Tensor } from '../tensor';

/** A new dense tensor with the same dtype, shape and bits as the dense `t`. */
export function cloneDense(t: Tensor): Tensor {
  t.assertAlive('optimizer state');
  if (!t.isContiguous) throw new Error(`optimizer state ${t} must be dense`);
  const out = empty(t.shape, { dtype: t.dtype, device: t.device });
  if (t.size === 0) return out;
  const device = t.device;
  if (device.kind === 'cpu') {
    cpuView(out).set(cpuView(t).subarray(t.offset, t.offset + t.size) as never);
    return out;
  }
  const bpe = bytesPerElement(t.dtype);
  const bytes = t.size * bpe;
  if ((t.offset * bpe) % 4 !== 0 || bytes % 4 !== 0) throw new Error(`optimizer state ${t} is not 32-bit aligned`);
  device.batch.copy(t.storage.gpu!, t.offset * bpe, out.storage.gpu!, 0, bytes);
  return out;
}
