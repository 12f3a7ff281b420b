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
import { bindRows, rowBlocks, type RowOperand } from '../../runtime/row-blocks';
import { GRID_ARGS, declareStorage, flatIndex, loaderF32, storageElement } from '../../runtime/wgsl';
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
  const load = out.dtype === 'f32' ? loaderF32('x', x.dtype) : `fn load_x(i: u32) -> ${acc} { return x[i]; }`;
  const input = `${declareStorage(1, 'x', x.dtype, 'read')}\n${load}`;
  const xs: RowOperand = { tensor: x, perRow: cols, what: 'cumsum input' };
  let part: Tensor | null = null;
  if (chunks > 1) {
    part = empty([rows, chunks], { dtype: out.dtype, device });
    const ps: RowOperand = { tensor: part, perRow: chunks, what: 'cumsum partials' };
    for (const block of rowBlocks(device, rows, [xs, ps])) {
      const bx = bindRows(device, xs, block);
      const bp = bindRows(device, ps, block);
      const p = new Params().u32('rows', block.count).u32('cols', cols).u32('chunks', chunks).u32('xOff', bx.elementOffset).u32('pOff', bp.elementOffset);
      const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${input}
${declareStorage(2, 'part', out.dtype, 'read_write')}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  ${chunkPrologue()}
  var s = ${zero};
  for (var c = c0; c < c1; c++) { s += load_x(xb + c); }
  part[P.pOff + t] = s;
}`;
      device.run({
        name: 'cumsum_partials',
        source,
        params: p,
        bindings: [bx.range, bp.range],
        workgroups: device.grid(block.count * chunks, WG),
        detail: `[${rows},${cols}] ${x.dtype}`,
      });
    }
  }
  const os: RowOperand = { tensor: out, perRow: cols, what: 'cumsum output' };
  const ps: RowOperand | null = part ? { tensor: part, perRow: chunks, what: 'cumsum partials' } : null;
  // The chunks before this one in scan order: lower chunks forward, higher ones reversed.
  const carry = reverse
    ? 'for (var k = chunk + 1u; k < P.chunks; k++) { s += part[P.pOff + row * P.chunks + k]; }'
    : 'for (var k = 0u; k < chunk; k++) { s += part[P.pOff + row * P.chunks + k]; }';
  const scan = reverse
    ? 'for (var c = c1; c > c0; c--) { s += load_x(xb + c - 1u); out[ob + c - 1u] = s; }'
    : 'for (var c = c0; c < c1; c++) { s += load_x(xb + c); out[ob + c] = s; }';
  for (const block of rowBlocks(device, rows, ps ? [xs, os, ps] : [xs, os])) {
    const bx = bindRows(device, xs, block);
    const bo = bindRows(device, os, block);
    const bp = ps ? bindRows(device, ps, block) : null;
    const p = new Params().u32('rows', block.count).u32('cols', cols).u32('chunks', chunks).u32('xOff', bx.elementOffset).u32('outOff', bo.elementOffset);
    if (bp) p.u32('pOff', bp.elementOffset);
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${input}
${declareStorage(2, 'out', out.dtype, 'read_write')}
${bp ? declareStorage(3, 'part', out.dtype, 'read') : ''}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  ${chunkPrologue()}
  let ob = P.outOff + row * P.cols;
  var s = ${zero};
  ${bp ? carry : ''}
  ${scan}
}`;
    const bindings = bp ? [bx.range, bo.range, bp.range] : [bx.range, bo.range];
    device.run({
      name: reverse ? 'cumsum_reverse' : 'cumsum',
      source,
      params: p,
      bindings,
      workgroups: device.grid(block.count * chunks, WG),
      detail: `[${rows},${cols}] ${x.dtype}`,
    });
  }
  part?.dispose();
}
