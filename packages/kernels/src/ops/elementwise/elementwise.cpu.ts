/** CPU reference for the elementwise family: f64 math over strided, broadcast operands. */
import { storageReader } from '../cpu-values';
import { f32ToBf16Bits } from '../../dtype';
import { cpuView, type Tensor } from '../../tensor';

/** A tensor operand (already broadcast through strides) or a scalar. */
export type ElementwiseOperand = Tensor | number;

/**
 * `strides[0]` are the output's strides over `shape`, `strides[1..]` those of each tensor operand.
 */
export function elementwiseCpu(
  fn: (...v: number[]) => number,
  operands: readonly ElementwiseOperand[],
  scalars: readonly number[],
  out: Tensor,
  shape: readonly number[],
  strides: readonly (readonly number[])[],
): void {
  const rank = shape.length;
  const n = out.size;
  const [outStrides, ...operandStrides] = strides;
  const readers = operands.map((op) => {
    if (typeof op === 'number') return null;
    return storageReader(op);
  });
  const tensorStrides: (readonly number[] | null)[] = [];
  let ti = 0;
  for (const op of operands) tensorStrides.push(typeof op === 'number' ? null : operandStrides[ti++]!);
  const dst = cpuView(out);
  const toBf16 = out.dtype === 'bf16';
  const coord = new Array<number>(rank).fill(0);
  const args = new Array<number>(operands.length + scalars.length);
  scalars.forEach((s, k) => (args[operands.length + k] = s));
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < operands.length; k++) {
      const op = operands[k]!;
      if (typeof op === 'number') {
        args[k] = op;
        continue;
      }
      const st = tensorStrides[k]!;
      let idx = op.offset;
      for (let d = 0; d < rank; d++) idx += coord[d]! * st[d]!;
      args[k] = readers[k]!(idx);
    }
    let o = out.offset;
    for (let d = 0; d < rank; d++) o += coord[d]! * outStrides![d]!;
    const v = fn(...args);
    dst[o] = toBf16 ? f32ToBf16Bits(v) : v;
    for (let d = rank - 1; d >= 0; d--) {
      if (++coord[d]! < shape[d]!) break;
      coord[d] = 0;
    }
  }
}
