/** CPU reference for top-k over the rows of a dense [rows, cols] view, and its gradient scatter. */
import { cpuView, type Tensor } from '../../tensor';
import { storageReader } from '../cpu-values';
import { orderKey } from './order';

export function topkCpu(x: Tensor, rows: number, cols: number, k: number, values: Tensor, indices: Tensor): void {
  const read = storageReader(x);
  const outV = cpuView(values);
  const outI = cpuView(indices);
  const keys = new Float64Array(cols);
  const order = new Int32Array(cols);
  for (let r = 0; r < rows; r++) {
    const base = x.offset + r * cols;
    for (let c = 0; c < cols; c++) {
      keys[c] = orderKey(read(base + c));
      order[c] = c;
    }
    order.sort((a, b) => keys[b]! - keys[a]! || a - b);
    for (let j = 0; j < k; j++) {
      outV[values.offset + r * k + j] = read(base + order[j]!);
      outI[indices.offset + r * k + j] = order[j]!;
    }
  }
}

/** dx [rows, cols] (zeroed) gets g [rows, k] at `indices` [rows, k]. */
export function topkScatterCpu(g: Tensor, indices: Tensor, rows: number, cols: number, k: number, dx: Tensor): void {
  const rg = storageReader(g);
  const idx = cpuView(indices);
  const dst = cpuView(dx);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < k; j++) dst[dx.offset + r * cols + idx[indices.offset + r * k + j]!] = rg(g.offset + r * k + j);
  }
}
