/**
 * Flash-style attention kernels. Each invocation owns R (query, q head) rows of one kv head and a
 * range of keys. The q vectors, running max and sum, and output accumulators of its rows live in
 * registers — the source is generated per head dim and unrolled over rows, key block and vec4
 * chunks, so nothing is indexed dynamically — and it walks its keys with an online softmax. Every
 * key and value it loads serves all R rows (the q heads of a GQA group first, then neighbouring
 * queries). Scores never reach memory; no workgroup memory, no barriers (expensive on llvmpipe).
 * Neighbouring invocations own neighbouring rows, so on real GPUs they read the same keys at the
 * same time.
 *
 * When rows alone give too few invocations (decode: one query over a long cache), the keys are
 * split across invocations as well (flash-decoding): each split writes its unnormalised partial
 * output, running max and sum, and a combine kernel merges the splits per row.
 *
 * Scores are kept in log2 units (q is pre-scaled by scale·log2 e) so the kernels use exp2.
 */
import { cachedSource } from '../../runtime/source-cache';
import type { DType } from '../../dtype';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { empty } from '../../creation';
import type { KernelBinding } from '../../runtime/batch';
import { Params } from '../../runtime/params';
import { GRID_ARGS, MATH_F32, declareStorage, flatIndex, loaderF32 } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import type { AttentionProblem, HeadView, KeyRowView } from './attention';
import { TextureOperands, bindTextureOperand, textureCopyFits, textureOperandWgsl } from '../../runtime/texture-operands';
import { kernelOverrides } from '../../runtime/kernel-overrides';
import { storageReads } from '../../runtime/texture-pool';

/** Launch shape choices; the defaults follow the device's kernel tuning (device/kernel-tuning.ts). */
export interface AttentionTuning {
  /** Invocations per workgroup. */
  workgroupSize: number;
  /** (query, head) rows one invocation owns: each key and value it loads serves all of them. */
  rowsPerLane: number;
  /** Keys scored per online-softmax step (one rescale of the accumulators per block). */
  keyBlock: number;
  /** Split the keys when rows alone give fewer invocations than this. */
  targetLanes: number;
  /** Fewest keys per split. */
  minSplitKeys: number;
  /**
   * Read dense f32 keys and values from flat texture copies (read-only storage textures) instead of
   * storage buffers: llvmpipe turns every storage-buffer load into a per-lane loop.
   */
  kvTextures: boolean;
}

/**
 * On CPU-SIMD launch shapes (llvmpipe: every storage-buffer load is a per-lane loop, so loads cost
 * far more than math) an invocation owns 4 rows (with GQA 4:1, the q heads of one query) to reuse
 * every key and value it loads, and workgroups are one 8-lane vector. More rows per invocation or
 * bigger key blocks run a little faster but take LLVM tens of seconds to compile. Real GPUs want
 * one row per invocation (registers) and wide workgroups.
 */
function defaultTuning(device: WebGpuDevice): AttentionTuning {
  const kvTextures = device.tuning.textureOperands;
  if (device.tuning.launchShape === 'cpu-simd') {
    const cores = typeof navigator !== 'undefined' ? navigator.hardwareConcurrency || 2 : 2;
    return { workgroupSize: 8, rowsPerLane: 4, keyBlock: 1, targetLanes: 32 * cores, minSplitKeys: 64, kvTextures };
  }
  return { workgroupSize: 64, rowsPerLane: 1, keyBlock: 4, targetLanes: 32768, minSplitKeys: 64, kvTextures };
}

/** Calls with more queries than this are prefill-sized (they may copy keys and values to textures). */
const PREFILL_MIN_QUERIES = 8;
const LOG2E = Math.LOG2E;
/** A finite "minus infinity" (shader compilers may assume finite math): below any real score. */
const NEG = '-3.0e38';
/** lse is stored as bits: +Infinity cannot be written as an f32 expression in WGSL. */
const INF_BITS = '0x7f800000u';

/** How a kernel reads one head-vector operand: f32 vec4s (from a buffer or a flat texture), bf16 packed 8 per vec4<u32>, or per element. */
export type Access = 'vec4' | 'texture' | 'bf16x8' | DType;

interface KernelSpec {
  split: boolean;
  workgroupSize: number;
  rowsPerLane: number;
  keyBlock: number;
  headDim: number;
  valueDim: number;
  q: Access;
  k: Access;
  v: Access;
  out: 'vec4' | 'f32';
  causal: boolean;
  mask: DType | null;
  seq: boolean;
  lse: boolean;
  /** The key count is read from a buffer (and the key range of each split derived from it). */
  deviceKeys: boolean;
}

/** The launch choices in effect on `device` (defaults with any override applied). */
export function attentionTuning(device: WebGpuDevice): AttentionTuning {
  return { ...defaultTuning(device), ...kernelOverrides().attention };
}

export function attentionGpu(device: WebGpuDevice, p: AttentionProblem, out: Tensor, lse: Tensor | null): void {
  const tuning = attentionTuning(device);
  const group = p.qHeads / p.kvHeads;
  const pairs = p.queries * group;
  const R = Math.min(tuning.rowsPerLane, pairs);
  const chunks = Math.ceil(pairs / R);
  const baseLanes = chunks * p.batch * p.kvHeads;
  // The most keys any row can see.
  // With the key count on the device, the capacity bounds it: the split count is fixed by the
  // capacity and each split's share is derived in the kernel from the actual count.
  const reach = p.causal && !p.keysOnDevice ? Math.min(p.keys, p.queryOffset + p.queries) : p.keys;
  let splitKeys = p.keys;
  let splits = 1;
  if (baseLanes < tuning.targetLanes) {
    const want = Math.min(Math.ceil(tuning.targetLanes / baseLanes), Math.floor(reach / tuning.minSplitKeys));
    if (want > 1) {
      splitKeys = Math.ceil(Math.ceil(reach / want) / tuning.keyBlock) * tuning.keyBlock;
      splits = Math.ceil(reach / splitKeys);
    }
  }
  const lanes = baseLanes * splits;
  const rows = p.batch * p.queries * p.qHeads;

  const params = new Params()
    .u32('lanes', lanes)
    .u32('chunks', chunks)
    .u32('pairs', pairs)
    .u32('group', group)
    .u32('kvHeads', p.kvHeads)
    .u32('batchHeads', p.batch * p.kvHeads)
    .u32('qHeads', p.qHeads)
    .u32('queries', p.queries)
    .u32('keys', p.keys)
    .u32('queryOffset', p.queryOffset)
    .u32('splitKeys', splitKeys)
    .u32('splits', splits)
    .u32('rows', rows)
    .f32('scale', p.scale * LOG2E);
  const bindings: KernelBinding[] = [];
  const textures = new TextureOperands(device);
  // Keys and values through texture copies when both are dense f32 of whole vec4s, for prefill-sized
  // calls (a decode step would copy its whole cache to read it once).
  const kvTextures =
    tuning.kvTextures &&
    p.queries > PREFILL_MIN_QUERIES &&
    storageReads(device) &&
    p.headDim % 4 === 0 &&
    p.valueDim % 4 === 0 &&
    textureCopyFits(device, p.k.tensor) &&
    textureCopyFits(device, p.v.tensor);
  const bindHead = (name: string, view: HeadView, dim: number, texture: boolean): Access => {
    const t = view.tensor;
    params.u32(`${name}sB`, view.strides.batch).u32(`${name}sS`, view.strides.seq).u32(`${name}sH`, view.strides.head);
    if (texture) {
      bindings.push(bindTextureOperand(textures.copy(t), params, name));
      return 'texture';
    }
    const bound = device.bind(t.storage, t.offset, extent(t), `attention ${name}`);
    bindings.push(bound.range);
    params.u32(`${name}Off`, bound.elementOffset);
    const starts = [bound.elementOffset, view.strides.batch, view.strides.seq, view.strides.head];
    if (t.dtype === 'f32' && dim % 4 === 0 && starts.every((x) => x % 4 === 0)) return 'vec4';
    if (t.dtype === 'bf16' && dim % 8 === 0 && starts.every((x) => x % 8 === 0)) return 'bf16x8';
    return t.dtype;
  };
  const bindKeyRow = (name: string, view: KeyRowView): void => {
    const t = view.tensor;
    const bound = device.bind(t.storage, t.offset, extent(t), `attention ${name}`);
    bindings.push(bound.range);
    params.u32(`${name}Off`, bound.elementOffset).u32(`${name}sB`, view.batchStride).u32(`${name}sJ`, view.keyStride);
  };
  const qAccess = bindHead('q', p.q, p.headDim, false);
  const kAccess = bindHead('k', p.k, p.headDim, kvTextures);
  const vAccess = bindHead('v', p.v, p.valueDim, kvTextures);
  if (p.keyMask) bindKeyRow('m', p.keyMask);
  if (p.seqIds) bindKeyRow('s', p.seqIds);
  if (p.keysOnDevice) {
    const n = p.keysOnDevice;
    const bound = device.bind(n.storage, n.offset, 1, 'attention kvLength');
    bindings.push(bound.range);
    params.u32('nOff', bound.elementOffset);
  }

  const split = splits > 1;
  // With split keys the flash kernel writes unnormalised partials (and running max/sum) for the combine.
  const partialOut = split ? empty([splits * rows * p.valueDim], { device }) : null;
  const partialStats = split ? empty([splits * rows * 2], { device }) : null;
  try {
    const dst = partialOut ?? out;
    const o = device.bind(dst.storage, dst.offset, dst.size, split ? 'attention partial output' : 'attention output');
    bindings.push(o.range);
    params.u32('outOff', o.elementOffset);
    if (partialStats) {
      const ps = device.bind(partialStats.storage, partialStats.offset, partialStats.size, 'attention partial stats');
      bindings.push(ps.range);
      params.u32('statsOff', ps.elementOffset);
    } else if (lse) {
      const l = device.bind(lse.storage, lse.offset, lse.size, 'attention lse');
      bindings.push(l.range);
      params.u32('lseOff', l.elementOffset);
    }
    const spec: KernelSpec = {
      split,
      workgroupSize: tuning.workgroupSize,
      rowsPerLane: R,
      keyBlock: tuning.keyBlock,
      headDim: p.headDim,
      valueDim: p.valueDim,
      q: qAccess,
      k: kAccess,
      v: vAccess,
      out: p.valueDim % 4 === 0 && o.elementOffset % 4 === 0 ? 'vec4' : 'f32',
      causal: p.causal,
      mask: p.keyMask ? p.keyMask.tensor.dtype : null,
      seq: p.seqIds !== null,
      lse: lse !== null && !split,
      deviceKeys: p.keysOnDevice !== null,
    };
    const detail = `q[${p.batch},${p.queries},${p.qHeads},${p.headDim}] kv[${p.keys},${p.kvHeads},${p.valueDim}] ${p.q.tensor.dtype}/${p.k.tensor.dtype}${split ? ` ${splits} splits` : ''}`;
    const name = split ? 'attention_split' : 'attention';
    device.run({ name, source: flashSource(spec, params), params, bindings, workgroups: device.grid(lanes, tuning.workgroupSize), detail });
    if (partialOut && partialStats) {
      combineSplits(device, { splits, rows, valueDim: p.valueDim, workgroupSize: tuning.workgroupSize, partialOut, partialStats, out, lse, detail });
    }
  } finally {
    textures.release();
    partialOut?.dispose();
    partialStats?.dispose();
  }
}

/** Elements spanned by a strided view, from its offset to its last element. */
export function extent(t: Tensor): number {
  let last = 0;
  t.shape.forEach((d, i) => (last += (d - 1) * t.strides[i]!));
  return t.size === 0 ? 1 : last + 1;
}

export function declareHead(binding: number, name: string, access: Access): string {
  if (access === 'vec4') return `@group(0) @binding(${binding}) var<storage, read> ${name}: array<vec4<f32>>;`;
  // P.<x>Mask / P.<x>Shift of the flat texture: params are named after the operand (q, k, v).
  if (access === 'texture') return textureOperandWgsl(binding, name, name.slice(0, 1), true);
  if (access === 'bf16x8') return `@group(0) @binding(${binding}) var<storage, read> ${name}: array<vec4<u32>>;`;
  return `${declareStorage(binding, name, access, 'read')}\n${loaderF32(name, access)}`;
}

/**
 * Statements defining `${out}0`, `${out}1`, … as vec4<f32> chunks (zero past `dim`) of the head
 * vector that starts at element `base`, with as few loads as the access allows.
 */
export function loadHead(name: string, access: Access, base: string, dim: number, out: string): string[] {
  const chunks = Math.ceil(dim / 4);
  if (access === 'vec4') return range(chunks).map((c) => `let ${out}${c} = ${name}[(${base} >> 2u) + ${c}u];`);
  if (access === 'texture') return range(chunks).map((c) => `let ${out}${c} = ${name}_at((${base} >> 2u) + ${c}u);`);
  if (access === 'bf16x8') {
    const lines: string[] = [];
    for (const u of range(chunks / 2)) {
      const w = `${out}w${u}`;
      lines.push(`let ${w} = ${name}[(${base} >> 3u) + ${u}u];`);
      lines.push(`let ${out}${2 * u} = bitcast<vec4<f32>>(vec4<u32>(${w}.x << 16u, ${w}.x & 0xffff0000u, ${w}.y << 16u, ${w}.y & 0xffff0000u));`);
      lines.push(`let ${out}${2 * u + 1} = bitcast<vec4<f32>>(vec4<u32>(${w}.z << 16u, ${w}.z & 0xffff0000u, ${w}.w << 16u, ${w}.w & 0xffff0000u));`);
    }
    return lines;
  }
  return range(chunks).map((c) => {
    const parts = range(4).map((e) => (4 * c + e < dim ? `load_${name}(${base} + ${4 * c + e}u)` : '0.0'));
    return `let ${out}${c} = vec4<f32>(${parts.join(', ')});`;
  });
}

export const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

function sum(terms: string[]): string {
  return terms.join(' + ');
}

function maxTree(xs: string[]): string {
  if (xs.length === 1) return xs[0]!;
  const half = Math.ceil(xs.length / 2);
  return `max(${maxTree(xs.slice(0, half))}, ${maxTree(xs.slice(half))})`;
}

/** The flash kernel's source for `s` (built once per spec and parameter layout). */
function flashSource(s: KernelSpec, params: Params): string {
  return cachedSource(`attention|${JSON.stringify(s)}|${params.wgsl()}`, () => buildFlashSource(s, params));
}

/**
 * The flash kernel. Invocation t owns rows (query, head) number chunk·R … chunk·R + R − 1 of one
 * (batch, kv head) — flat row index = query · group + head-in-group — and one split of the keys:
 * t = ((split · B·Hkv) + batch·Hkv + kvHead) · chunks + chunk. Everything is unrolled over the R
 * rows, the key block and the head dims, so all state stays in named registers.
 */
function buildFlashSource(s: KernelSpec, params: Params): string {
  const R = s.rowsPerLane;
  const KB = s.keyBlock;
  const qChunks = Math.ceil(s.headDim / 4);
  const vChunks = Math.ceil(s.valueDim / 4);
  const decls: string[] = [declareHead(1, 'qb', s.q), declareHead(2, 'kb', s.k), declareHead(3, 'vb', s.v)];
  let binding = 4;
  if (s.mask) decls.push(`${declareStorage(binding++, 'maskb', s.mask, 'read')}\n${loaderF32('maskb', s.mask)}`);
  if (s.seq) decls.push(declareStorage(binding++, 'seqb', 'i32', 'read'));
  if (s.deviceKeys) decls.push(declareStorage(binding++, 'keysb', 'i32', 'read'));
  decls.push(`@group(0) @binding(${binding++}) var<storage, read_write> outb: array<${s.out === 'vec4' ? 'vec4<f32>' : 'f32'}>;`);
  if (s.split) decls.push(declareStorage(binding++, 'statsb', 'f32', 'read_write'));
  else if (s.lse) decls.push(declareStorage(binding++, 'lseb', 'u32', 'read_write'));

  const lines: string[] = [];
  const emit = (line: string, indent = 1) => lines.push(`${'  '.repeat(indent)}${line}`);
  emit(`let t = ${flatIndex(s.workgroupSize)};`);
  emit('if (t >= P.lanes) { return; }');
  emit('let chunk = t % P.chunks;');
  emit('let rest = t / P.chunks;');
  emit('let bg = rest % P.batchHeads;');
  emit('let split = rest / P.batchHeads;');
  emit('let b = bg / P.kvHeads;');
  emit('let g = bg % P.kvHeads;');
  emit(`let first = chunk * ${R}u;`);
  if (s.deviceKeys) {
    // The valid key count from the device (at most the capacity P.keys); queries sit at the last keys.
    emit('let keys = min(u32(max(keysb[P.nOff], 0)), P.keys);');
    emit('let queryOffset = max(keys, P.queries) - P.queries;');
    emit(`let splitKeys = ((keys + P.splits - 1u) / P.splits + ${KB - 1}u) / ${KB}u * ${KB}u;`);
  } else {
    emit('let keys = P.keys;');
    emit('let queryOffset = P.queryOffset;');
    emit('let splitKeys = P.splitKeys;');
  }
  for (const r of range(R)) {
    // Rows past the last one repeat it (loads stay in range) and write nothing.
    emit(`let f${r} = min(first + ${r}u, P.pairs - 1u);`);
    emit(`let i${r} = f${r} / P.group;`);
    emit(`let h${r} = g * P.group + f${r} % P.group;`);
    if (s.causal) emit(`let qpos${r} = queryOffset + i${r};`);
  }
  emit('var kEnd = keys;');
  if (s.causal) emit(`kEnd = min(kEnd, qpos${R - 1} + 1u);`);
  emit('let k0 = split * splitKeys;');
  emit('let k1 = min(k0 + splitKeys, kEnd);');
  if (s.mask) emit('let mBase = P.mOff + b * P.msB;');
  if (s.seq) emit('let sBase = P.sOff + b * P.ssB;');
  for (const r of range(R)) {
    if (s.seq) emit(`let qseq${r} = seqb[sBase + (queryOffset + i${r}) * P.ssJ];`);
    for (const line of loadHead('qb', s.q, `(P.qOff + b * P.qsB + i${r} * P.qsS + h${r} * P.qsH)`, s.headDim, `q${r}_`)) emit(line);
    for (const c of range(qChunks)) emit(`let qs${r}_${c} = q${r}_${c} * P.scale;`);
    emit(`var m${r} = ${NEG};`);
    emit(`var l${r} = 0.0;`);
    for (const c of range(vChunks)) emit(`var o${r}_${c} = vec4<f32>(0.0);`);
  }
  emit('let kBase = P.kOff + b * P.ksB + g * P.ksH;');
  emit('let vBase = P.vOff + b * P.vsB + g * P.vsH;');
  emit(`for (var j = k0; j < k1; j = j + ${KB}u) {`);
  for (const t of range(KB)) {
    emit(`let j${t} = j + ${t}u;`, 2);
    emit(`let jc${t} = min(j${t}, k1 - 1u);`, 2);
    const keyConds = [`j${t} < k1`];
    if (s.mask) keyConds.push(`load_maskb(mBase + jc${t} * P.msJ) != 0.0`);
    emit(`let key${t} = ${keyConds.join(' && ')};`, 2);
    if (s.seq) emit(`let kseq${t} = seqb[sBase + jc${t} * P.ssJ];`, 2);
    for (const line of loadHead('kb', s.k, `(kBase + jc${t} * P.ksS)`, s.headDim, `k${t}_`)) emit(line, 2);
    for (const r of range(R)) {
      const conds = [`key${t}`];
      if (s.causal) conds.push(`j${t} <= qpos${r}`);
      if (s.seq) conds.push(`kseq${t} == qseq${r}`);
      emit(`let vis${r}_${t} = ${conds.join(' && ')};`, 2);
      emit(`var d${r}_${t} = qs${r}_0 * k${t}_0;`, 2);
      for (const c of range(qChunks).slice(1)) emit(`d${r}_${t} = fma(qs${r}_${c}, k${t}_${c}, d${r}_${t});`, 2);
      emit(`let s${r}_${t} = select(${NEG}, d${r}_${t}.x + d${r}_${t}.y + d${r}_${t}.z + d${r}_${t}.w, vis${r}_${t});`, 2);
    }
  }
  for (const r of range(R)) {
    emit(`let mNew${r} = max(m${r}, ${maxTree(range(KB).map((t) => `s${r}_${t}`))});`, 2);
    emit(`let c${r} = exp2(m${r} - mNew${r});`, 2);
    for (const t of range(KB)) emit(`let p${r}_${t} = select(0.0, exp2(s${r}_${t} - mNew${r}), vis${r}_${t});`, 2);
    emit(`l${r} = l${r} * c${r} + ${sum(range(KB).map((t) => `p${r}_${t}`))};`, 2);
    emit(`m${r} = mNew${r};`, 2);
  }
  for (const t of range(KB)) for (const line of loadHead('vb', s.v, `(vBase + jc${t} * P.vsS)`, s.valueDim, `v${t}_`)) emit(line, 2);
  for (const r of range(R)) {
    for (const c of range(vChunks)) {
      let acc = `o${r}_${c} * c${r}`;
      for (const t of range(KB)) acc = `fma(vec4<f32>(p${r}_${t}), v${t}_${c}, ${acc})`;
      emit(`o${r}_${c} = ${acc};`, 2);
    }
  }
  emit('}');
  for (const r of range(R)) {
    emit(`if (first + ${r}u < P.pairs) {`);
    emit(`let row = (b * P.queries + i${r}) * P.qHeads + h${r};`, 2);
    let norm = '';
    let at = 'row';
    if (s.split) {
      // Unnormalised partial output and the split's running max (log2 units) and sum.
      emit('let pr = split * P.rows + row;', 2);
      emit(`statsb[P.statsOff + 2u * pr] = m${r};`, 2);
      emit(`statsb[P.statsOff + 2u * pr + 1u] = l${r};`, 2);
      at = 'pr';
    } else {
      emit(`let inv = select(0.0, 1.0 / l${r}, l${r} > 0.0);`, 2);
      if (s.lse) emit(`lseb[P.lseOff + row] = select(${INF_BITS}, bitcast<u32>(m${r} * ${Math.LN2} + log_f32(l${r})), l${r} > 0.0);`, 2);
      norm = ' * inv';
    }
    for (const c of range(vChunks)) {
      if (s.out === 'vec4') emit(`outb[(P.outOff >> 2u) + ${at} * ${vChunks}u + ${c}u] = o${r}_${c}${norm};`, 2);
      else for (const e of range(4)) if (4 * c + e < s.valueDim) emit(`outb[P.outOff + ${at} * ${s.valueDim}u + ${4 * c + e}u] = o${r}_${c}[${e}]${norm};`, 2);
    }
    emit('}');
  }
  const textures = s.k === 'texture' || s.v === 'texture';
  return `${textures ? 'requires readonly_and_readwrite_storage_textures;\n' : ''}${params.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${decls.join('\n')}
${s.lse ? MATH_F32 : ''}
@compute @workgroup_size(${s.workgroupSize})
fn main(${GRID_ARGS}) {
${lines.join('\n')}
}`;
}

interface CombineLaunch {
  splits: number;
  rows: number;
  valueDim: number;
  workgroupSize: number;
  partialOut: Tensor;
  partialStats: Tensor;
  out: Tensor;
  lse: Tensor | null;
  detail: string;
}

/**
 * Merges the splits of each row: rescales every partial to the largest running max, sums,
 * normalises. One invocation per (row, 4 value dims) — vec4 loads when the value dim allows.
 */
function combineSplits(device: WebGpuDevice, c: CombineLaunch): void {
  const po = device.bind(c.partialOut.storage, c.partialOut.offset, c.partialOut.size, 'attention partial output');
  const ps = device.bind(c.partialStats.storage, c.partialStats.offset, c.partialStats.size, 'attention partial stats');
  const o = device.bind(c.out.storage, c.out.offset, c.out.size, 'attention output');
  const vec = c.valueDim % 4 === 0 && po.elementOffset % 4 === 0 && o.elementOffset % 4 === 0;
  if (ps.elementOffset % 2 !== 0) throw new Error('attention: partial stats must start on an even element');
  const chunks = Math.ceil(c.valueDim / 4);
  const params = new Params()
    .u32('splits', c.splits)
    .u32('rows', c.rows)
    .u32('valueDim', c.valueDim)
    .u32('chunks', chunks)
    .u32('poOff', po.elementOffset)
    .u32('psOff', ps.elementOffset)
    .u32('outOff', o.elementOffset);
  const bindings = [po.range, ps.range, o.range];
  if (c.lse) {
    const l = device.bind(c.lse.storage, c.lse.offset, c.lse.size, 'attention lse');
    bindings.push(l.range);
    params.u32('lseOff', l.elementOffset);
  }
  const W = c.workgroupSize;
  const element = vec ? 'vec4<f32>' : 'f32';
  const partial = vec
    ? 'po[(P.poOff >> 2u) + pr * P.chunks + q]'
    : `vec4<f32>(${range(4)
        .map((e) => `po[P.poOff + pr * P.valueDim + min(d0 + ${e}u, P.valueDim - 1u)]`)
        .join(', ')})`;
  const store = vec
    ? 'outb[(P.outOff >> 2u) + r * P.chunks + q] = res;'
    : range(4)
        .map((e) => `if (d0 + ${e}u < P.valueDim) { outb[P.outOff + r * P.valueDim + d0 + ${e}u] = res[${e}]; }`)
        .join('\n  ');
  const source = `${params.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> po: array<${element}>;
@group(0) @binding(2) var<storage, read> ps: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> outb: array<${element}>;
${c.lse ? `${declareStorage(4, 'lseb', 'u32', 'read_write')}\n${MATH_F32}` : ''}
@compute @workgroup_size(${W})
fn main(${GRID_ARGS}) {
  let t = ${flatIndex(W)};
  if (t >= P.rows * P.chunks) { return; }
  let r = t / P.chunks;
  let q = t % P.chunks;
  let d0 = 4u * q;
  let stats = P.psOff >> 1u;
  var mMax = ${NEG};
  for (var s = 0u; s < P.splits; s++) { mMax = max(mMax, ps[stats + s * P.rows + r].x); }
  var l = 0.0;
  var o = vec4<f32>(0.0);
  for (var s = 0u; s < P.splits; s++) {
    let pr = s * P.rows + r;
    let ml = ps[stats + pr];
    let w = exp2(ml.x - mMax);
    l = l + ml.y * w;
    o = fma(vec4<f32>(w), ${partial}, o);
  }
  let res = o * select(0.0, 1.0 / l, l > 0.0);
  ${store}
  ${c.lse ? `if (q == 0u) { lseb[P.lseOff + r] = select(${INF_BITS}, bitcast<u32>(mMax * ${Math.LN2} + log_f32(l)), l > 0.0); }` : ''}
}`;
  device.run({ name: 'attention_combine', source, params, bindings, workgroups: device.grid(c.rows * chunks, W), detail: c.detail });
}
