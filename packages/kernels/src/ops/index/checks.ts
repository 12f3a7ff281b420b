/** Argument checks shared by the index family: clear errors naming the op, the tensor and its shape. */
import { isFloat } from '../../dtype';
import { formatShape } from '../../shape';
import { cpuView, type Tensor } from '../../tensor';
import { validateHostIds } from './index-map';

/** An i32 index on the same device as `other`; ids on the host are range-checked against `axisSize`. */
export function checkIndex(op: string, index: Tensor, other: Tensor, axisSize: number): void {
  index.assertAlive(`${op} index`);
  if (index.dtype !== 'i32') throw new Error(`${op}: index ${formatShape(index.shape)} must be i32, got ${index.dtype}`);
  if (index.device !== other.device) throw new Error(`${op}: index is on ${index.device.kind}, the tensor on ${other.device.kind}`);
  if (index.device.kind === 'cpu') validateHostIds(op, index, axisSize, cpuView(index) as Int32Array);
}

export function checkFloat(op: string, t: Tensor, what: string): void {
  t.assertAlive(`${op} ${what}`);
  if (!isFloat(t.dtype)) throw new Error(`${op}: ${what} ${formatShape(t.shape)} must be f32 or bf16, got ${t.dtype}`);
}

export function checkSameDevice(op: string, a: Tensor, b: Tensor, what: string): void {
  if (a.device !== b.device) throw new Error(`${op}: ${what} is on ${b.device.kind}, the target on ${a.device.kind}`);
}

/** The element-pattern shape rule shared by gather and scatterAdd. */
/** The element-pattern shape rule shared by gather and scatterAdd. */
export function checkElementIndex(op: string, shape: readonly number[], axis: number, index: Tensor): void {
  if (index.rank !== shape.length || index.shape.some((d, i) => i !== axis && d > shape[i]!)) {
    throw new Error(`${op}: index ${formatShape(index.shape)} must have rank ${shape.length} and fit ${formatShape(shape)} outside axis ${axis}`);
  }
}
