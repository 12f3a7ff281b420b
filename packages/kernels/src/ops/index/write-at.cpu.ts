/** CPU reference for `copyIntoAt`: a plain loop over src's elements. */
import { storageReader } from '../cpu-values';
import { cpuView } from '../../tensor';
import type { WriteAtProblem } from './write-at';

export function writeAtCpu({ dst, src, axis, start, offset }: WriteAtProblem): void {
  const out = cpuView(dst);
  const read = storageReader(src);
  const first = cpuView(start)[start.offset]! + offset;
  const coords = new Array<number>(src.rank).fill(0);
  for (let n = 0; n < src.size; n++) {
    let rem = n;
    for (let d = src.rank - 1; d >= 0; d--) {
      coords[d] = rem % src.shape[d]!;
      rem = Math.floor(rem / src.shape[d]!);
    }
    const pos = coords[axis]! + first;
    if (pos < 0 || pos >= dst.shape[axis]!) continue;
    let s = src.offset;
    let t = dst.offset;
    coords.forEach((c, d) => {
      s += c * src.strides[d]!;
      t += (d === axis ? pos : c) * dst.strides[d]!;
    });
    out[t] = read(s);
  }
}
