/**
 * Grouped GEMM over expert segments: out[r, n] = Σ_k A[a(r), k] · W[e(r), n, k] (+ bias[e(r), n]),
 * optionally followed by relu². W is stacked [E, N, K] (HF's layout: K contiguous).
 *
 * Each workgroup takes rowTile rows of one expert segment (segments are padded, so rows never
 * straddle experts) and lanes × cols columns; each invocation keeps a rowTile × cols register tile.
 * The grid covers the worst case of the routing and workgroups past the used rows exit at once, so
 * launch sizes never depend on the routing. When K and the offsets allow, A and W are read 8
 * elements per load (two vec4<f32>, or one vec4<u32> of packed bf16), split into even and odd
 * elements so both dtypes share one inner product. Experts whose weights do not fit one binding
 * are launched in expert ranges, one dispatch each.
 */
import type { WebGpuDevice } from '../../device/webgpu-device';
import { BindingTooLargeError } from '../../runtime/bindings';
import { bytesPerElement, type DType } from '../../dtype';
import type { BufferRange } from '../../runtime/batch';
import { Params } from '../../runtime/params';
import { NAN_SAFE_F32, declareStorage, inputF32 } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import { NO_ROW, type ExpertGrouping } from './moe-grouping.wgsl';
import { kernelOverrides } from '../../runtime/kernel-overrides';
import { storageReads } from '../../runtime/texture-pool';
import { textureGroupedGemm } from './moe-texture-gemm.wgsl';

/**
 * Output columns per invocation: 8 beside 8 rows; with one-row tiles (decode) 16, so the row's
 * input loads are shared by more weight rows.
 */
function colsFor(rows: number): number {
  return rows === 1 ? 16 : 8;
}
/**
 * Bytes of data one binding can hold wherever it starts: `bind` begins up to one offset alignment
 * below the first element and pads the end to 4 bytes.
 */
export function bindingBudget(device: WebGpuDevice): number {
  return device.limits.maxStorageBufferBindingSize - device.limits.minStorageBufferOffsetAlignment - 4;
}

export interface GroupedGemm {
  name: string;
  grouping: ExpertGrouping;
  /**
   * A operand (contiguous, K columns). Gathered: rows are tokens, row r of a segment reads token
   * rowPairs[r] / slots, starting at element `aFirst`. Otherwise: rows follow the grouped order.
   */
  a: Tensor;
  aFirst: number;
  aRows: number;
  gather: { slots: number } | null;
  /** [E, N, K], contiguous. */
  weight: Tensor;
  /** [E, N] or null, contiguous. */
  bias: Tensor | null;
  relu2: boolean;
  /** [rowCapacity, N] f32. */
  out: Tensor;
}

/** Invocations per workgroup: CPU-SIMD devices gain from many small workgroups. */
function lanesFor(device: WebGpuDevice): number {
  return device.tuning.launchShape === 'cpu-simd' ? 16 : 64;
}

/** How many experts of a stacked [E, N, K] weight one binding holds; throws when not even one fits. */
export function expertsPerBinding(device: WebGpuDevice, weight: Tensor, name: string): number {
  const [, n, k] = weight.shape as [number, number, number];
  const weightBytes = n * k * bytesPerElement(weight.dtype);
  const perBinding = Math.floor(bindingBudget(device) / weightBytes);
  if (perBinding < 1) {
    throw new BindingTooLargeError(
      `${name}: one expert's weight [${n}, ${k}] ${weight.dtype} (${weightBytes} bytes) exceeds maxStorageBufferBindingSize (${device.limits.maxStorageBufferBindingSize})`,
    );
  }
  return perBinding;
}

export function groupedGemm(device: WebGpuDevice, g: GroupedGemm): void {
  // Prefill-sized tiles on devices that read operands from textures: the texture tile (decode keeps one-row tiles here).
  const textures =
    g.grouping.rowTile > 1 &&
    storageReads(device) &&
    (kernelOverrides().groupedGemm ?? (device.tuning.textureOperands ? 'textures' : 'buffers')) === 'textures';
  if (textures && textureGroupedGemm(device, g)) return;
  const [experts, n, k] = g.weight.shape as [number, number, number];
  const perBinding = expertsPerBinding(device, g.weight, g.name);
  const lanes = lanesFor(device);
  const vector = k % 8 === 0 && (g.a.offset + g.aFirst) % 8 === 0 && g.weight.offset % 8 === 0;
  const source = gemmSource(g, lanes, vector);
  const starts = device.bind(g.grouping.segmentStarts.storage, 0, experts + 1, `${g.name} segment starts`);
  const a = device.bind(g.a.storage, g.a.offset + g.aFirst, g.aRows * k, `${g.name} input`);
  const out = device.bind(g.out.storage, g.out.offset, g.grouping.rowCapacity * n, `${g.name} output`);
  const rowPairs = g.gather ? device.bind(g.grouping.rowPairs.storage, 0, g.grouping.rowCapacity, `${g.name} row pairs`) : null;
  const pairs = g.grouping.pairs;
  const tile = g.grouping.rowTile;
  for (let e0 = 0; e0 < experts; e0 += perBinding) {
    const e1 = Math.min(experts, e0 + perBinding);
    const w = device.bind(g.weight.storage, g.weight.offset + e0 * n * k, (e1 - e0) * n * k, `${g.name} weight experts ${e0}..${e1 - 1}`);
    const bindings: BufferRange[] = [starts.range];
    if (rowPairs) bindings.push(rowPairs.range);
    bindings.push(a.range, w.range);
    const p = new Params()
      .u32('e0', e0)
      .u32('e1', e1)
      .u32('n', n)
      .u32('k', k)
      .u32('slots', g.gather?.slots ?? 1)
      .u32('aOff', a.elementOffset)
      .u32('wOff', w.elementOffset)
      .u32('outOff', out.elementOffset);
    if (g.bias) {
      const b = device.bind(g.bias.storage, g.bias.offset + e0 * n, (e1 - e0) * n, `${g.name} bias`);
      p.u32('bOff', b.elementOffset);
      bindings.push(b.range);
    }
    bindings.push(out.range);
    // Worst case for this range: every pair, plus padding for each of its experts that gets a pair.
    const rows = pairs + Math.min(e1 - e0, pairs) * (tile - 1);
    device.run({
      name: g.name,
      source,
      params: p,
      bindings,
      workgroups: [Math.ceil(rows / tile), Math.ceil(n / (lanes * colsFor(tile))), 1],
      detail: `experts ${e0}..${e1 - 1} of ${experts} [${n},${k}] ${g.a.dtype}·${g.weight.dtype}${vector ? ' vec8' : ''}`,
    });
  }
}

/** Declaration of a vector-read operand: 8 elements per two vec4<f32>, or per vec4<u32> of bf16. */
function vectorStorage(binding: number, name: string, dtype: DType): string {
  return `@group(0) @binding(${binding}) var<storage, read> ${name}: array<vec4<${dtype === 'bf16' ? 'u32' : 'f32'}>>;`;
}

/** Statements loading 8 elements at vector chunk `chunk` of a row starting at vector index `base`, as even/odd lanes. */
function load8(name: string, dtype: DType, v: string, base: string): string {
  if (dtype === 'bf16') {
    return `let ${v}w = ${name}[${base} + j]; let ${v}e = bitcast<vec4<f32>>(${v}w << vec4<u32>(16u)); let ${v}o = bitcast<vec4<f32>>(${v}w & vec4<u32>(0xffff0000u));`;
  }
  return `let ${v}l = ${name}[${base} + 2u * j]; let ${v}h = ${name}[${base} + 2u * j + 1u]; let ${v}e = vec4<f32>(${v}l.xz, ${v}h.xz); let ${v}o = vec4<f32>(${v}l.yw, ${v}h.yw);`;
}

function gemmSource(g: GroupedGemm, lanes: number, vector: boolean): string {
  const rows = g.grouping.rowTile;
  const cols = colsFor(rows);
  const aType = g.a.dtype;
  const wType = g.weight.dtype;
  const p = new Params().u32('e0', 0).u32('e1', 0).u32('n', 0).u32('k', 0).u32('slots', 0).u32('aOff', 0).u32('wOff', 0).u32('outOff', 0);
  if (g.bias) p.u32('bOff', 0);
  let binding = 1;
  const decls = [declareStorage(binding++, 'starts', 'u32', 'read')];
  if (g.gather) decls.push(declareStorage(binding++, 'row_pairs', 'u32', 'read'));
  if (vector) decls.push(vectorStorage(binding++, 'A', aType), vectorStorage(binding++, 'W', wType));
  else decls.push(inputF32(binding++, 'A', aType), inputF32(binding++, 'W', wType));
  if (g.bias) decls.push(inputF32(binding++, 'bias', g.bias.dtype));
  decls.push(declareStorage(binding, 'out', 'f32', 'read_write'));

  // Per-row start of A (elements), and whether the row holds a pair.
  const rowSetup: string[] = [];
  for (let r = 0; r < rows; r++) {
    if (g.gather) {
      rowSetup.push(`let pair${r} = row_pairs[row0 + ${r}u];`);
      rowSetup.push(`let valid${r} = pair${r} != ${NO_ROW}u;`);
      rowSetup.push(`let a${r} = P.aOff + select(0u, pair${r} / P.slots, valid${r}) * P.k;`);
    } else {
      rowSetup.push(`let a${r} = P.aOff + (row0 + ${r}u) * P.k;`);
    }
  }
  const colSetup: string[] = [];
  for (let c = 0; c < cols; c++) colSetup.push(`let w${c} = P.wOff + (expert_base + min(col0 + ${c}u, P.n - 1u)) * P.k;`);
  const accs: string[] = [];
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) accs.push(`var acc${r}_${c} = 0.0;`);

  let loop: string;
  if (vector) {
    const aDiv = aType === 'bf16' ? 8 : 4;
    const wDiv = wType === 'bf16' ? 8 : 4;
    const body: string[] = [];
    for (let r = 0; r < rows; r++) body.push(load8('A', aType, `x${r}`, `a${r} / ${aDiv}u`));
    for (let c = 0; c < cols; c++) {
      body.push(load8('W', wType, `y${c}`, `w${c} / ${wDiv}u`));
      for (let r = 0; r < rows; r++) body.push(`acc${r}_${c} += dot(x${r}e, y${c}e) + dot(x${r}o, y${c}o);`);
    }
    loop = `for (var j = 0u; j < P.k / 8u; j++) {\n    ${body.join('\n    ')}\n  }`;
  } else {
    const body: string[] = [];
    for (let r = 0; r < rows; r++) body.push(`let x${r} = load_A(a${r} + j);`);
    for (let c = 0; c < cols; c++) {
      body.push(`let y${c} = load_W(w${c} + j);`);
      for (let r = 0; r < rows; r++) body.push(`acc${r}_${c} += x${r} * y${c};`);
    }
    loop = `for (var j = 0u; j < P.k; j++) {\n    ${body.join('\n    ')}\n  }`;
  }

  const store: string[] = [];
  for (let c = 0; c < cols; c++) {
    const stores: string[] = [];
    if (g.bias) stores.push(`let b${c} = load_bias(P.bOff + (expert_base + col0 + ${c}u));`);
    for (let r = 0; r < rows; r++) {
      let v = `acc${r}_${c}`;
      if (g.bias) v = `${v} + b${c}`;
      if (g.relu2) v = `relu2(${v})`;
      // Padding rows of a gathered operand are written as zeros, so the grouped activations are defined everywhere a segment reaches.
      if (g.gather) v = `select(0.0, ${v}, valid${r})`;
      stores.push(`out[P.outOff + (row0 + ${r}u) * P.n + col0 + ${c}u] = ${v};`);
    }
    store.push(`if (col0 + ${c}u < P.n) {\n    ${stores.join('\n    ')}\n  }`);
  }

  return `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${decls.join('\n')}
${NAN_SAFE_F32}
fn relu2(v: f32) -> f32 { let r = relu_nan(v); return r * r; }
// The expert whose segment holds row: the last e in [e0, e1) with starts[e] <= row (empty segments share their start with the next one).
fn expert_of(row: u32) -> u32 {
  var lo = P.e0;
  var hi = P.e1;
  while (hi - lo > 1u) {
    let mid = (lo + hi) / 2u;
    if (starts[mid] <= row) { lo = mid; } else { hi = mid; }
  }
  return lo;
}
@compute @workgroup_size(${lanes})
fn main(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  let row0 = starts[P.e0] + wid.x * ${rows}u;
  if (row0 >= starts[P.e1]) { return; }
  let col0 = (wid.y * ${lanes}u + lid.x) * ${cols}u;
  if (col0 >= P.n) { return; }
  let expert_base = (expert_of(row0) - P.e0) * P.n;
  ${rowSetup.join('\n  ')}
  ${colSetup.join('\n  ')}
  ${accs.join('\n  ')}
  ${loop}
  ${store.join('\n  ')}
}`;
}
