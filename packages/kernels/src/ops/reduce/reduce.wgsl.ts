/**
 * Row reductions on the GPU: one invocation per (row, chunk) — llvmpipe runs plain loops faster
 * than workgroup tree reductions (barriers are expensive there). Long rows are cut into chunks
 * whose partial results are reduced again, which also keeps f32 sums pairwise-accurate.
 */
import type { WebGpuDevice } from '../../device/webgpu-device';
import { bindTensors } from '../../runtime/bindings';
import { Params } from '../../runtime/params';
import { GRID_ARGS, NAN_SAFE_F32, flatIndex } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import type { ReduceOp } from './reduce.cpu';

const WG = 64;

function combine(op: ReduceOp): string {
  if (op === 'sum') return 'acc = acc + v;';
  // NaN propagates like the CPU reference (WGSL's max/min may drop it).
  return op === 'max' ? 'acc = max_nan(acc, v);' : 'acc = min_nan(acc, v);';
}

/**
 * Reduces each row of a dense [rows, cols] view of `x` over chunks of `chunk` columns into
 * `out` [rows, ceil(cols / chunk)] (f32).
 */
export function reduceRowsGpu(device: WebGpuDevice, op: ReduceOp, x: Tensor, rows: number, cols: number, chunk: number, out: Tensor): void {
  const chunks = Math.ceil(cols / chunk);
  const p = new Params().u32('rows', rows).u32('cols', cols).u32('chunk', chunk).u32('chunks', chunks);
  const bound = bindTensors(
    device,
    op,
    [
      { name: 'x', tensor: x, window: { start: 0, length: rows * cols }, what: `${op} input` },
      { name: 'out', tensor: out, window: { start: 0, length: rows * chunks }, what: `${op} output`, writable: true },
    ],
    p,
  );
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${op === 'sum' ? '' : NAN_SAFE_F32}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let t = ${flatIndex(WG)};
  if (t >= P.rows * P.chunks) { return; }
  let row = t / P.chunks;
  let c0 = (t % P.chunks) * P.chunk;
  let c1 = min(c0 + P.chunk, P.cols);
  let base = P.xOff + row * P.cols;
  ${op === 'sum' ? 'var acc: f32 = 0.0; var c = c0;' : 'var acc: f32 = load_x(base + c0); var c = c0 + 1u;'}
  for (; c < c1; c++) {
    let v = load_x(base + c);
    ${combine(op)}
  }
  out[P.outOff + t] = acc;
}`;
  device.run({
    name: `reduce_${op}`,
    source,
    params: p,
    bindings: bound.ranges,
    workgroups: device.grid(rows * chunks, WG),
    detail: `[${rows},${cols}] ${x.dtype}`,
  });
}
