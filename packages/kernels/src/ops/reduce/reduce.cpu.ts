/** CPU reference for row reductions: f64 accumulation over each row of a dense [rows, cols] view. */
import { storageReader } from '../cpu-values';
import { cpuView, type Tensor } from '../../tensor';

export type ReduceOp = 'sum' | 'max' | 'min';

export function reduceRowsCpu(op: ReduceOp, x: Tensor, rows: number, cols: number, out: Tensor): void {
  const read = storageReader(x);
  const dst = cpuView(out);
  for (let r = 0; r < rows; r++) {
    const base = x.offset + r * cols;
    let acc = op === 'sum' ? 0 : op === 'max' ? -Infinity : Infinity;
    for (let c = 0; c < cols; c++) {
      const v = read(base + c);
      if (op === 'sum') acc += v;
      else if (Number.isNaN(v) || Number.isNaN(acc)) acc = NaN;
      else acc = op === 'max' ? Math.max(acc, v) : Math.min(acc, v);
    }
    dst[out.offset + r] = acc;
  }
}
