/**
 * Native elementwise ops (packages/kernels/native/elementwise.c): the hot subset of the definitions,
 * f32 math over f32/bf16 operands into an f32 or bf16 result (casts included). Anything else
 * (integer mode, pow/comparisons, rank > 6) returns false and runs the reference.
 */
import type { NativeKernels } from '../../native/library';
import { nativeDTypeCode } from '../../native/dtype-codes';
import type { Tensor } from '../../tensor';
import { BINARY, IDENTITY, UNARY, UNARY_GRAD, type ElementwiseDef } from './definitions';
import type { ElementwiseOperand } from './elementwise.cpu';

const CODES = new Map<ElementwiseDef | null, number>([
  [UNARY.neg, 0],
  [UNARY.abs, 1],
  [UNARY.exp, 2],
  [UNARY.log, 3],
  [UNARY.sqrt, 4],
  [UNARY.rsqrt, 5],
  [UNARY.reciprocal, 6],
  [UNARY.square, 7],
  [UNARY.sigmoid, 8],
  [UNARY.silu, 9],
  [UNARY.softplus, 10],
  [UNARY.relu, 11],
  [UNARY.relu2, 12],
  [UNARY.tanh, 13],
  [UNARY.clamp, 14],
  [IDENTITY, 15],
  [BINARY.add, 20],
  [BINARY.sub, 21],
  [BINARY.mul, 22],
  [BINARY.div, 23],
  [BINARY.maximum, 24],
  [BINARY.minimum, 25],
  [UNARY_GRAD.sigmoid, 40],
  [UNARY_GRAD.silu, 41],
  [UNARY_GRAD.softplus, 42],
  [UNARY_GRAD.relu, 43],
  [UNARY_GRAD.relu2, 44],
  [UNARY_GRAD.tanh, 45],
  [UNARY_GRAD.square, 46],
  [UNARY_GRAD.exp, 47],
  [UNARY_GRAD.neg, 48],
]);
CODES.delete(null);

/** Same contract as elementwiseCpu; false when this op or these dtypes have no native kernel. */
export function elementwiseNative(
  lib: NativeKernels,
  def: ElementwiseDef,
  operands: readonly ElementwiseOperand[],
  scalars: readonly number[],
  out: Tensor,
  shape: readonly number[],
  strides: readonly (readonly number[])[],
): boolean {
  const op = CODES.get(def);
  const rank = shape.length;
  const outCode = nativeDTypeCode(out.dtype);
  if (op === undefined || (outCode !== 0 && outCode !== 1) || operands.length > 3 || rank > 6) return false;
  if (rank === 0)
    return elementwiseNative(
      lib,
      def,
      operands,
      scalars,
      out,
      [1],
      strides.map(() => [0]),
    );
  const params: number[] = [op, rank, operands.length, scalars[0] ?? 0, scalars[1] ?? 0, out.offset, outCode, ...shape, ...strides[0]!];
  const buffers: (ArrayBufferLike | Float32Array)[] = [];
  let ti = 1;
  for (const o of operands) {
    if (typeof o === 'number') {
      buffers.push(Float32Array.of(o));
      params.push(0, 0, ...shape.map(() => 0));
      continue;
    }
    const code = nativeDTypeCode(o.dtype);
    if (code === null || code === 2) return false;
    buffers.push(o.storage.cpu!);
    params.push(code, o.offset, ...strides[ti++]!);
  }
  return lib.symbols.nt_elementwise(new Float64Array(params), out.storage.cpu, buffers[0] ?? null, buffers[1] ?? null, buffers[2] ?? null) === 0;
}
