/**
 * The elementwise kernel runner shared by the family and by layout's copies and casts: broadcasts the
 * operands, picks the dtype, and dispatches to the TS reference, the native CPU kernel or WGSL.
 * Not recorded by autograd, and below every op with a backward rule, so layout can use it without
 * importing the ops that use layout.
 */
import { empty } from '../../creation';
import { isFloat, type DType } from '../../dtype';
import { broadcastShapes, broadcastStrides, collapseDims, formatShape, shapesEqual } from '../../shape';
import type { Tensor } from '../../tensor';
import type { ElementwiseDef } from './definitions';
import { elementwiseCpu, type ElementwiseOperand } from './elementwise.cpu';
import { elementwiseNative } from './elementwise.native';
import { elementwiseGpu } from './elementwise.wgsl';

export interface ElementwiseOptions {
  /** Output dtype (default: f32, or the integer dtype of integer ops on integer tensors). */
  dtype?: DType;
  /** Write into this existing view (any strides; bf16 only if contiguous) instead of a new tensor. */
  into?: Tensor;
}

/**
 * Runs one elementwise kernel over broadcast operands: the shared core of the family, also used by
 * copies and casts. Not recorded by autograd; the public ops in elementwise.ts add their rules.
 */
export function elementwise(
  name: string,
  def: ElementwiseDef,
  names: readonly string[],
  operands: readonly ElementwiseOperand[],
  scalars: readonly number[] = [],
  options: ElementwiseOptions = {},
): Tensor {
  const tensors = operands.filter((o): o is Tensor => typeof o !== 'number');
  if (tensors.length === 0) throw new Error(`${name}: at least one operand must be a tensor`);
  const device = tensors[0]!.device;
  for (const t of tensors) {
    t.assertAlive(`${name} operand`);
    if (t.device !== device) throw new Error(`${name}: operands are on different devices (${tensors.map((x) => x.device.kind).join(', ')})`);
  }
  let outShape: number[] = [];
  for (const t of tensors) outShape = broadcastShapes(outShape, t.shape, name);
  let out: Tensor;
  if (options.into) {
    out = options.into;
    out.assertAlive(`${name} destination`);
    if (out.device !== device) throw new Error(`${name}: destination is on another device`);
    if (!shapesEqual(broadcastShapes(out.shape, outShape, name), out.shape)) {
      throw new Error(`${name}: result ${formatShape(outShape)} does not fit destination ${formatShape(out.shape)}`);
    }
    outShape = [...out.shape];
    // Copies derived from the old contents (e.g. matmul's weight textures) are stale now.
    out.storage.invalidateDerived();
  } else out = empty(outShape, { dtype: options.dtype ?? resultDType(def, tensors, operands), device });
  if (out.size === 0) return out;
  const collapsed = collapseDims(outShape, [out.strides, ...tensors.map((t) => broadcastStrides(t.shape, t.strides, outShape))]);
  if (device.kind === 'cpu') {
    if (!device.native || !elementwiseNative(device.native, def, operands, scalars, out, collapsed.shape, collapsed.strides)) {
      elementwiseCpu(def.cpu, operands, scalars, out, collapsed.shape, collapsed.strides);
    }
  } else elementwiseGpu(device, { name, expr: def.wgsl, names, operands, scalars, out, shape: collapsed.shape, strides: collapsed.strides });
  return out;
}

function resultDType(def: ElementwiseDef, tensors: readonly Tensor[], operands: readonly ElementwiseOperand[]): DType {
  if (!def.integer) return 'f32';
  const first = tensors[0]!.dtype;
  if (isFloat(first) || tensors.some((t) => t.dtype !== first)) return 'f32';
  if (operands.some((o) => typeof o === 'number' && !Number.isInteger(o))) return 'f32';
  return first;
}
