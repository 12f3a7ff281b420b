/**
 * Inclusive prefix sums along the last axis, forward or reversed (the backward of a prefix sum is
 * the reversed one). Rows are cut into chunks of {@link CUMSUM_CHUNK} columns, one invocation per
 * (row, chunk): rows of more than one chunk first get per-chunk totals, then every chunk scans its
 * columns starting from the total of the chunks before it. Floats accumulate in f32; i32 and u32
 * stay integers (wrapping like two's complement).
 */
import { empty } from '../../creation';
import type { WebGpuDevice } from '../../device/webgpu-device';
import type { DType } from '../../dtype';
import { Params } from '../../runtime/params';
import { bindTensors, type NamedBinding } from '../../runtime/bindings';
import { rowBinding, rowBlocks, type RowOperand } from '../../runtime/row-blocks';
import { GRID_ARGS, flatIndex, storageElement } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';

const WG = 64;

/** Columns per invocation. */
export const CUMSUM_CHUNK = 1024;

/** The dtype a prefix sum of `dtype` produces: integers stay integers, floats become f32. */
export function cumsumDType(dtype: DType): DType {
  return dtype === 'i32' || dtype === 'u32' ? dtype : 'f32';
}

function chunkPrologue(): string {
  return `let t = ${flatIndex(WG)};
  if (t >= P.rows * P.chunks) { return; }
  let row = t / P.chunks;
  let chunk = t % P.chunks;
  let c0 = chunk * ${CUMSUM_CHUNK}u;
  let c1 = min(c0 + ${CUMSUM_CHUNK}u, P.cols);
  let xb = P.xOff + row * P.cols;`;
}

/** Prefix sums of each row of a dense [rows, cols] `x` into `out` (dtype {@link cumsumDType}). */
export function cumsumGpu(device: WebGpuDevice, x: Tensor, rows: number, cols: number, reverse: boolean, out: Tensor): void {
  const chunks = Math.ceil(cols / CUMSUM_CHUNK);
  const acc = storageElement(out.dtype);
  const zero = `${acc}(0)`;
  // The binder gives float inputs their f32 loader; integers are summed as they are.
  const intLoader = out.dtype === 'f32' ? '' : `fn load_x(i: u32) -> ${acc} { return x[i]; }`;
  const xs: RowOperand = { tensor: x, perRow: cols, what: 'cumsum input' };
  let part: Tensor | null = null;
  if (chunks > 1) {
    part = empty([rows, chunks], { dtype: out.dtype, device });
    const ps: RowOperand = { tensor: part, perRow: chunks, what: 'cumsum partials' };
    for (const block of rowBlocks(device, rows, [xs, ps])) {
      const p = new Params().u32('rows', block.count).u32('cols', cols).u32('chunks', chunks);
      const bound = bindTensors(device, 'cumsum', [rowBinding('x', xs, block), rowBinding('part', ps, block, true)], p);
      const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${intLoader}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  ${chunkPrologue()}
  var s = ${zero};
  for (var c = c0; c < c1; c++) { s += load_x(xb + c); }
  part[P.partOff + t] = s;
}`;
      device.run({
        name: 'cumsum_partials',
        source,
        params: p,
        bindings: bound.ranges,
        workgroups: device.grid(block.count * chunks, WG),
        detail: `[${rows},${cols}] ${x.dtype}`,
      });
    }
  }
  const os: RowOperand = { tensor: out, perRow: cols, what: 'cumsum output' };
  const ps: RowOperand | null = part ? { tensor: part, perRow: chunks, what: 'cumsum partials' } : null;
  // The chunks before this one in scan order: lower chunks forward, higher ones reversed.
  const carry = reverse
    ? 'for (var k = chunk + 1u; k < P.chunks; k++) { s += part[P.partOff + row * P.chunks + k]; }'
    : 'for (var k = 0u; k < chunk; k++) { s += part[P.partOff + row * P.chunks + k]; }';
  const scan = reverse
    ? 'for (var c = c1; c > c0; c--) { s += load_x(xb + c - 1u); out[ob + c - 1u] = s; }'
    : 'for (var c = c0; c < c1; c++) { s += load_x(xb + c); out[ob + c] = s; }';
  for (const block of rowBlocks(device, rows, ps ? [xs, os, ps] : [xs, os])) {
    const p = new Params().u32('rows', block.count).u32('cols', cols).u32('chunks', chunks);
    const list: NamedBinding[] = [rowBinding('x', xs, block), rowBinding('out', os, block, true)];
    if (ps) list.push(rowBinding('part', ps, block));
    const bound = bindTensors(device, 'cumsum', list, p);
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${intLoader}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  ${chunkPrologue()}
  let ob = P.outOff + row * P.cols;
  var s = ${zero};
  ${ps ? carry : ''}
  ${scan}
}`;
    device.run({
      name: reverse ? 'cumsum_reverse' : 'cumsum',
      source,
      params: p,
      bindings: bound.ranges,
      workgroups: device.grid(block.count * chunks, WG),
      detail: `[${rows},${cols}] ${x.dtype}`,
    });
  }
  part?.dispose();
}
