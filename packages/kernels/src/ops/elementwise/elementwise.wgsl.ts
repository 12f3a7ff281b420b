/**
 * One WGSL generator for every elementwise op: N operands (strided tensors, broadcast through
 * zero strides, or scalars from the uniform), one output (contiguous or a strided view),
 * rank-specialised index math. bf16 outputs are written a 32-bit word (two elements) per
 * invocation, rounded to nearest even, so no two invocations share a word.
 */
import type { DType } from '../../dtype';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { bindTensors, type NamedBinding } from '../../runtime/bindings';
import { Params } from '../../runtime/params';
import { F32_TO_BF16, GRID_ARGS, flatIndex } from '../../runtime/wgsl';
import { contiguousStrides } from '../../shape';
import type { Tensor } from '../../tensor';
import { ELEMENTWISE_PRELUDE, integerPrelude } from './definitions';
import type { ElementwiseOperand } from './elementwise.cpu';

const WG = 256;
const MAX_RANK = 8;

export interface ElementwiseLaunch {
  name: string;
  expr: string;
  names: readonly string[];
  operands: readonly ElementwiseOperand[];
  scalars: readonly number[];
  out: Tensor;
  /** Collapsed iteration shape. */
  shape: readonly number[];
  /** Strides of the output followed by those of each tensor operand, over `shape`. */
  strides: readonly (readonly number[])[];
}

export function elementwiseGpu(device: WebGpuDevice, l: ElementwiseLaunch): void {
  const { name, out, shape } = l;
  const rank = shape.length;
  if (vec4Applies(l)) return elementwiseVec4(device, l);
  if (rank > MAX_RANK) throw new Error(`${name}: rank ${rank} above ${MAX_RANK} after collapsing dimensions`);
  const integerMode = out.dtype === 'i32' || out.dtype === 'u32';
  const computeType = out.dtype === 'i32' ? 'i32' : out.dtype === 'u32' ? 'u32' : 'f32';
  const [outStrides, ...operandStrides] = l.strides;
  const denseOut = out.isContiguous;
  if (out.dtype === 'bf16' && !denseOut) throw new Error(`${name}: a bf16 output must be contiguous`);

  const p = new Params()
    .u32('n', out.size)
    .f32('p0', l.scalars[0] ?? 0)
    .f32('p1', l.scalars[1] ?? 0);
  const list: NamedBinding[] = [];
  const loads: string[] = [];
  let tensorIndex = 0;
  l.operands.forEach((op, k) => {
    const v = l.names[k]!;
    if (typeof op === 'number') {
      // A scalar operand lives in the uniform, typed like the computation.
      if (computeType === 'f32') p.f32(`s${k}`, op);
      else p.i32(`s${k}`, op);
      loads.push(`let ${v} = ${computeType === 'f32' ? `P.s${k}` : `${computeType}(P.s${k})`};`);
      return;
    }
    const buf = `in${k}`;
    list.push({ name: buf, tensor: op, window: { start: 0, length: extent(op) }, what: `${name} operand ${k}` });
    p.u32Array(`st${k}`, operandStrides[tensorIndex++]!, MAX_RANK);
    const st = operandStrides[tensorIndex - 1]!;
    loads.push(`let ${v} = ${loadExpr(buf, op.dtype, indexExpr(`P.${buf}Off`, `P.st${k}`, st), computeType)};`);
  });
  p.u32Array('shape', shape, MAX_RANK);
  if (!denseOut) p.u32Array('ost', outStrides!, MAX_RANK);
  // bf16 results are stored two per 32-bit word.
  if (out.dtype === 'bf16' && out.offset % 2 !== 0) throw new Error(`${name}: bf16 output must start on a 32-bit word`);
  list.push({ name: 'out', tensor: out, window: { start: 0, length: extent(out) }, what: `${name} output`, writable: true });
  const bound = bindTensors(device, name, list, p);

  const header = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${integerMode ? integerPrelude(computeType as 'i32' | 'u32') : ELEMENTWISE_PRELUDE}
${out.dtype === 'bf16' ? F32_TO_BF16 : ''}
fn value_at(i: u32) -> ${computeType} {
  ${coordCode(rank)}
  ${loads.join('\n  ')}
  ${l.expr.includes('p0') || l.expr.includes('p1') ? 'let p0 = P.p0; let p1 = P.p1;' : ''}
  return ${computeType}(${l.expr});
}`;
  let body: string;
  let invocations = out.size;
  if (out.dtype === 'bf16') {
    invocations = Math.ceil(out.size / 2);
    body = `
  let w = ${flatIndex(WG)};
  let i = 2u * w;
  if (i >= P.n) { return; }
  let lo = f32_to_bf16(value_at(i));
  var hi = 0u;
  if (i + 1u < P.n) { hi = f32_to_bf16(value_at(i + 1u)); }
  out[P.outOff / 2u + w] = lo | (hi << 16u);`;
  } else if (denseOut) {
    body = `
  let i = ${flatIndex(WG)};
  if (i >= P.n) { return; }
  out[P.outOff + i] = value_at(i);`;
  } else {
    body = `
  let i = ${flatIndex(WG)};
  if (i >= P.n) { return; }
  ${coordCode(rank)}
  out[${indexExpr('P.outOff', 'P.ost', outStrides!)}] = value_at(i);`;
  }
  const source = `${header}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {${body}
}`;
  device.run({
    name,
    source,
    params: p,
    bindings: bound.ranges,
    workgroups: device.grid(invocations, WG),
    detail: `[${shape.join(',')}] ${l.operands.map((o) => (typeof o === 'number' ? 'scalar' : o.dtype)).join(',')}→${out.dtype}`,
  });
}

/**
 * The vec4 fast path: an f32 output and f32 tensor operands that are all dense with the output's
 * shape (no broadcasting, no strides), element counts and offsets multiples of 4. Each invocation
 * loads and stores whole vec4s (llvmpipe turns every storage access into a per-lane loop, so a
 * quarter of the accesses is ~2.5× the throughput) and evaluates the scalar expression per
 * component. Everything else takes the general path.
 */
function vec4Applies(l: ElementwiseLaunch): boolean {
  const { out, shape, strides } = l;
  if (out.dtype !== 'f32' || !out.isContiguous || out.size % 4 !== 0 || out.offset % 4 !== 0) return false;
  const dense = contiguousStrides(shape);
  const same = (st: readonly number[]) => st.length === dense.length && st.every((v, d) => v === dense[d] || shape[d] === 1);
  if (!same(strides[0]!)) return false;
  let tensorIndex = 1;
  for (const op of l.operands) {
    if (typeof op === 'number') continue;
    if (op.dtype !== 'f32' || op.offset % 4 !== 0 || !same(strides[tensorIndex++]!)) return false;
  }
  return true;
}

const VEC4_WG = 64;

function elementwiseVec4(device: WebGpuDevice, l: ElementwiseLaunch): void {
  const { name, out } = l;
  const count = out.size / 4;
  const p = new Params()
    .u32('n', count)
    .f32('p0', l.scalars[0] ?? 0)
    .f32('p1', l.scalars[1] ?? 0);
  const list: NamedBinding[] = [];
  const loads: string[] = [];
  const component: string[] = [];
  l.operands.forEach((op, k) => {
    const v = l.names[k]!;
    if (typeof op === 'number') {
      p.f32(`s${k}`, op);
      component.push(`let ${v} = P.s${k};`);
      return;
    }
    list.push({ name: `in${k}`, tensor: op, what: `${name} operand ${k}`, vec4: true });
    loads.push(`let ${v}4 = in${k}[P.in${k}Off + i];`);
    component.push(`let ${v} = ${v}4[c];`);
  });
  list.push({ name: 'out', tensor: out, what: `${name} output`, writable: true, vec4: true });
  const bound = bindTensors(device, name, list, p);
  const params = l.expr.includes('p0') || l.expr.includes('p1') ? 'let p0 = P.p0; let p1 = P.p1;' : '';
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${ELEMENTWISE_PRELUDE}
fn value_at(c: u32${l.operands.map((op, k) => (typeof op === 'number' ? '' : `, ${l.names[k]}4: vec4<f32>`)).join('')}) -> f32 {
  ${component.join('\n  ')}
  ${params}
  return f32(${l.expr});
}
@compute @workgroup_size(${VEC4_WG})
fn main(${GRID_ARGS}) {
  let i = ${flatIndex(VEC4_WG)};
  if (i >= P.n) { return; }
  ${loads.join('\n  ')}
  out[P.outOff + i] = vec4<f32>(${[0, 1, 2, 3].map((c) => `value_at(${c}u${l.operands.map((op, k) => (typeof op === 'number' ? '' : `, ${l.names[k]}4`)).join('')})`).join(', ')});
}`;
  device.run({
    name,
    source,
    params: p,
    bindings: bound.ranges,
    workgroups: device.grid(count, VEC4_WG),
    detail: `[${l.shape.join(',')}] ${l.operands.map((o) => (typeof o === 'number' ? 'scalar' : o.dtype)).join(',')}→f32 vec4`,
  });
}

/** Elements spanned by a strided view, from its offset to its last element. */
function extent(t: Tensor): number {
  let last = 0;
  t.shape.forEach((d, i) => (last += (d - 1) * t.strides[i]!));
  return t.size === 0 ? 1 : last + 1;
}

/** Element d of a `array<vec4<u32>, 2>` uniform field, with a constant index. */
function at(field: string, d: number): string {
  return `${field}[${d >> 2}][${d & 3}]`;
}

/** Decomposes the flat index `i` into coordinates c0..c(rank-1). */
function coordCode(rank: number): string {
  if (rank === 1) return 'let c0 = i;';
  const lines = ['var rem = i;'];
  for (let d = rank - 1; d >= 1; d--) lines.push(`let c${d} = rem % ${at('P.shape', d)}; rem = rem / ${at('P.shape', d)};`);
  lines.push('let c0 = rem;');
  return lines.join('\n  ');
}

/**
 * Flat index of an operand. Strides of 0 (broadcast) and 1 (dense) are baked into the source —
 * the common cases compile to plain indexing; other strides come from the uniform.
 */
function indexExpr(offset: string, field: string, strides: readonly number[]): string {
  const terms = [offset];
  strides.forEach((s, d) => {
    if (s === 0) return;
    terms.push(s === 1 ? `c${d}` : `c${d} * ${at(field, d)}`);
  });
  return terms.join(' + ');
}

function loadExpr(buf: string, dtype: DType, idx: string, as: string): string {
  if (dtype === 'bf16') return as === 'f32' ? `load_${buf}(${idx})` : `${as}(load_${buf}(${idx}))`;
  if (dtype === 'f32' && as === 'f32') return `${buf}[${idx}]`;
  return `${as}(${buf}[${idx}])`;
}
