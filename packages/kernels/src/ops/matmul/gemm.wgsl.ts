/**
 * Portable storage-buffer matmul kernels, the path on real GPUs and the fallback elsewhere:
 *
 * - `tiled`: 64×64 output tiles per 16×16 workgroup (4×4 per invocation), A and B staged through
 *   workgroup memory 16 deep along K, loads mapped so consecutive invocations read consecutive
 *   addresses whichever of the operand's strides is 1.
 * - `gemv`: M ≤ 8 (decode): each weight element is read once; a workgroup covers a few columns,
 *   its invocations split K (along B's contiguous direction) and reduce in workgroup memory. With
 *   one lane along K (software devices, where barriers are expensive) each invocation owns a column.
 *
 * Operands are read through element strides (transposed and broadcast views cost nothing); bf16 is
 * widened on load. Problems whose bindings exceed the device limit run as chunks (see split.ts).
 */
import type { WebGpuDevice } from '../../device/webgpu-device';
import type { BufferRange } from '../../runtime/batch';
import { Params } from '../../runtime/params';
import { declareStorage, loaderF32 } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import { viewExtent, type MatmulProblem, type MatrixView } from './problem';
import { cachedSource } from '../../runtime/source-cache';
import { bindingBudget, planChunks, type MatmulChunk } from './split';

/** Most rows the GEMV kernel takes. */
export const GEMV_MAX_ROWS = 8;

const TILE = 64;
const BK = 16;

export interface GemvShape {
  /** Invocations per workgroup. */
  workgroup: number;
  /** Lanes splitting K per column (1: one invocation per column, no reduction). */
  kLanes: number;
}

/** GEMV workgroup shape: K split across lanes on real GPUs; one invocation per column on CPU-SIMD launch shapes. */
export function gemvShape(cpuSimd: boolean): GemvShape {
  return cpuSimd ? { workgroup: 64, kLanes: 1 } : { workgroup: 256, kLanes: 32 };
}

export type BufferKernel = { kind: 'tiled' } | { kind: 'gemv'; shape: GemvShape };

/** Runs `problem` with a storage-buffer kernel into the dense f32 `out` [batch, M, N]. */
export function bufferMatmul(device: WebGpuDevice, p: MatmulProblem, out: Tensor, kernel: BufferKernel): void {
  const maxWg = device.limits.maxComputeWorkgroupsPerDimension;
  const cols = kernel.kind === 'tiled' ? TILE : gemvLayout(p.b, kernel.shape).cols;
  const chunks = planChunks(p, {
    budget: bindingBudget(device),
    maxBatch: maxWg,
    maxRows: kernel.kind === 'tiled' ? maxWg * TILE : GEMV_MAX_ROWS,
    maxCols: maxWg * cols,
  });
  for (const c of chunks) launchChunk(device, p, out, kernel, c);
}

interface GemvLayout {
  /** K is B's contiguous direction (a [N, K] weight): lanes along K read adjacent words. */
  kContiguous: boolean;
  kLanes: number;
  /** Columns per workgroup. */
  cols: number;
}

/** Lanes along K follow B's contiguous direction; along N, a few K lanes suffice. */
function gemvLayout(b: MatrixView, shape: GemvShape): GemvLayout {
  const kContiguous = b.rowStride === 1 && b.colStride !== 1;
  const kLanes = kContiguous ? shape.kLanes : Math.min(shape.kLanes, 4);
  return { kContiguous, kLanes, cols: shape.workgroup / kLanes };
}

function sub(v: MatrixView, z0: number, r0: number, c0: number): MatrixView {
  return { ...v, offset: v.offset + z0 * v.batchStride + r0 * v.rowStride + c0 * v.colStride };
}

function launchChunk(device: WebGpuDevice, p: MatmulProblem, out: Tensor, kernel: BufferKernel, c: MatmulChunk): void {
  const batch = c.z1 - c.z0;
  const m = c.m1 - c.m0;
  const n = c.n1 - c.n0;
  const k = c.k1 - c.k0;
  const a = sub(p.a, c.z0, c.m0, c.k0);
  const b = sub(p.b, c.z0, c.k0, c.n0);
  const bindA = bindView(device, a, batch, m, k, 'matmul A');
  const bindB = bindView(device, b, batch, k, n, 'matmul B');
  const outStart = out.offset + c.z0 * p.m * p.n + c.m0 * p.n + c.n0;
  const outView: MatrixView = { tensor: out, offset: outStart, batchStride: p.m * p.n, rowStride: p.n, colStride: 1 };
  const bindOut = bindView(device, outView, batch, m, n, 'matmul output');
  const accumulate = c.k0 > 0;
  const bias = p.bias && !accumulate ? p.bias : null;
  const params = new Params()
    .u32('m', m)
    .u32('n', n)
    .u32('k', k)
    .u32('accumulate', accumulate ? 1 : 0)
    .u32('aOff', bindA.elementOffset)
    .u32('aBatch', a.batchStride)
    .u32('aRow', a.rowStride)
    .u32('aCol', a.colStride)
    .u32('bOff', bindB.elementOffset)
    .u32('bBatch', b.batchStride)
    .u32('bRow', b.rowStride)
    .u32('bCol', b.colStride)
    .u32('outOff', bindOut.elementOffset)
    .u32('outBatch', p.m * p.n)
    .u32('outRow', p.n);
  const bindings: BufferRange[] = [bindA.range, bindB.range];
  if (bias) {
    const bound = device.bind(bias.tensor.storage, bias.offset + c.n0 * bias.stride, (n - 1) * bias.stride + 1, 'matmul bias');
    params.u32('biasOff', bound.elementOffset).u32('biasStride', bias.stride);
    bindings.push(bound.range);
  }
  bindings.push(bindOut.range);
  const dtypes = { a: p.a.tensor.dtype, b: p.b.tensor.dtype, bias: bias?.tensor.dtype ?? null };
  const detail = `[${batch}×${m}×${k}]·[${k}×${n}] ${dtypes.a}·${dtypes.b}${bias ? '+bias' : ''}${accumulate ? ' (accumulate)' : ''}`;
  if (kernel.kind === 'tiled') {
    const layout = { aKContiguous: a.colStride === 1, bNContiguous: b.colStride === 1 };
    const source = cachedSource(`tiled|${params.wgsl()}|${JSON.stringify(dtypes)}|${JSON.stringify(layout)}`, () => tiledSource(params, dtypes, layout));
    device.run({ name: 'matmul_tiled', source, params, bindings, workgroups: [Math.ceil(n / TILE), Math.ceil(m / TILE), batch], detail });
  } else {
    const layout = gemvLayout(b, kernel.shape);
    const shape = { rows: m, workgroup: kernel.shape.workgroup, ...layout };
    const source = cachedSource(`gemv|${params.wgsl()}|${JSON.stringify(dtypes)}|${JSON.stringify(shape)}`, () => gemvSource(params, dtypes, shape));
    device.run({ name: 'matmul_gemv', source, params, bindings, workgroups: [Math.ceil(n / layout.cols), 1, batch], detail });
  }
}

function bindView(device: WebGpuDevice, v: MatrixView, batch: number, rows: number, cols: number, what: string) {
  const { start, count } = viewExtent(v, 0, batch, 0, rows, 0, cols);
  return device.bind(v.tensor.storage, start, Math.max(count, 1), what);
}

interface Dtypes {
  a: Tensor['dtype'];
  b: Tensor['dtype'];
  bias: Tensor['dtype'] | null;
}

function declarations(p: Params, d: Dtypes): string {
  const lines = [
    p.wgsl(),
    '@group(0) @binding(0) var<uniform> P: Params;',
    declareStorage(1, 'a', d.a, 'read'),
    loaderF32('a', d.a),
    declareStorage(2, 'b', d.b, 'read'),
    loaderF32('b', d.b),
  ];
  if (d.bias) lines.push(declareStorage(3, 'bias', d.bias, 'read'), loaderF32('bias', d.bias));
  lines.push(declareStorage(d.bias ? 4 : 3, 'out', 'f32', 'read_write'));
  // The epilogue: accumulate into the output (K chunks after the first) or add the bias.
  lines.push(`fn finish(o: u32, n: u32, v: f32) -> f32 {
  if (P.accumulate != 0u) { return out[o] + v; }
  ${d.bias ? 'return v + load_bias(P.biasOff + n * P.biasStride);' : 'return v;'}
}`);
  return lines.join('\n');
}

function tiledSource(p: Params, d: Dtypes, layout: { aKContiguous: boolean; bNContiguous: boolean }): string {
  const per = TILE / 16;
  const acc: string[] = [];
  const fma: string[] = [];
  const store: string[] = [];
  for (let i = 0; i < per; i++) for (let j = 0; j < per; j++) acc.push(`var c${i}${j} = 0.0;`);
  for (let i = 0; i < per; i++) fma.push(`let a${i} = As[kk * ${TILE}u + lid.y + ${16 * i}u];`);
  for (let j = 0; j < per; j++) fma.push(`let b${j} = Bs[kk * ${TILE}u + lid.x + ${16 * j}u];`);
  for (let i = 0; i < per; i++) for (let j = 0; j < per; j++) fma.push(`c${i}${j} = fma(a${i}, b${j}, c${i}${j});`);
  for (let i = 0; i < per; i++) {
    for (let j = 0; j < per; j++) {
      store.push(`{ let m = m0 + lid.y + ${16 * i}u; let n = n0 + lid.x + ${16 * j}u;
    if (m < P.m && n < P.n) { let o = outBase + m * P.outRow + n; out[o] = finish(o, n, c${i}${j}); } }`);
    }
  }
  // Tile loads: consecutive invocations take consecutive addresses of each operand.
  const aIndex = layout.aKContiguous ? `let am = idx / ${BK}u; let ak = idx % ${BK}u;` : `let am = idx % ${TILE}u; let ak = idx / ${TILE}u;`;
  const bIndex = layout.bNContiguous ? `let bn = idx % ${TILE}u; let bk = idx / ${TILE}u;` : `let bn = idx / ${BK}u; let bk = idx % ${BK}u;`;
  const loads = (TILE * BK) / 256;
  return `${declarations(p, d)}
var<workgroup> As: array<f32, ${BK * TILE}>;
var<workgroup> Bs: array<f32, ${BK * TILE}>;
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let z = wg.z;
  let m0 = wg.y * ${TILE}u;
  let n0 = wg.x * ${TILE}u;
  let aBase = P.aOff + z * P.aBatch;
  let bBase = P.bOff + z * P.bBatch;
  let outBase = P.outOff + z * P.outBatch;
  ${acc.join(' ')}
  for (var k0 = 0u; k0 < P.k; k0 = k0 + ${BK}u) {
    for (var i = 0u; i < ${loads}u; i = i + 1u) {
      let idx = li + i * 256u;
      ${aIndex}
      var av = 0.0;
      if (m0 + am < P.m && k0 + ak < P.k) { av = load_a(aBase + (m0 + am) * P.aRow + (k0 + ak) * P.aCol); }
      As[ak * ${TILE}u + am] = av;
      ${bIndex}
      var bv = 0.0;
      if (n0 + bn < P.n && k0 + bk < P.k) { bv = load_b(bBase + (k0 + bk) * P.bRow + (n0 + bn) * P.bCol); }
      Bs[bk * ${TILE}u + bn] = bv;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${BK}u; kk = kk + 1u) {
      ${fma.join('\n      ')}
    }
    workgroupBarrier();
  }
  ${store.join('\n  ')}
}`;
}

function gemvSource(p: Params, d: Dtypes, s: GemvLayout & { rows: number; workgroup: number }): string {
  const { rows, workgroup, kLanes, cols } = s;
  const r = [...Array(rows).keys()];
  // Lanes along K are adjacent invocations when K is B's contiguous direction, columns otherwise.
  const mapping = s.kContiguous ? `let col = li / ${kLanes}u; let lane = li % ${kLanes}u;` : `let col = li % ${cols}u; let lane = li / ${cols}u;`;
  const laneStep = s.kContiguous ? 1 : cols;
  const reduce =
    kLanes === 1
      ? ''
      : `${r.map((i) => `red[${i * workgroup}u + li] = acc${i};`).join(' ')}
  workgroupBarrier();
  for (var half = ${kLanes / 2}u; half > 0u; half = half >> 1u) {
    if (lane < half) {
      ${r.map((i) => `red[${i * workgroup}u + li] = red[${i * workgroup}u + li] + red[${i * workgroup}u + li + half * ${laneStep}u];`).join('\n      ')}
    }
    workgroupBarrier();
  }
  ${r.map((i) => `acc${i} = red[${i * workgroup}u + li];`).join(' ')}`;
  return `${declarations(p, d)}
${kLanes > 1 ? `var<workgroup> red: array<f32, ${rows * workgroup}>;` : ''}
@compute @workgroup_size(${workgroup})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let z = wg.z;
  ${mapping}
  let n = wg.x * ${cols}u + col;
  ${r.map((i) => `var acc${i} = 0.0;`).join(' ')}
  if (n < P.n) {
    let aBase = P.aOff + z * P.aBatch;
    let bBase = P.bOff + z * P.bBatch + n * P.bCol;
    for (var k = lane; k < P.k; k = k + ${kLanes}u) {
      let w = load_b(bBase + k * P.bRow);
      let ak = aBase + k * P.aCol;
      ${r.map((i) => `acc${i} = fma(load_a(ak + ${i}u * P.aRow), w, acc${i});`).join('\n      ')}
    }
  }
  ${reduce}
  if (lane == 0u && n < P.n) {
    let outBase = P.outOff + z * P.outBatch;
    ${r.map((i) => `{ let o = outBase + ${i}u * P.outRow + n; out[o] = finish(o, n, acc${i}); }`).join('\n    ')}
  }
}`;
}
