/**
 * Attention backward kernels (FlashAttention-2 style, no float atomics, no [T, T] tensor):
 *
 * 1. `attention_bwd_stats`: per (batch, query, q head) row, the lse in log2 units (a finite huge
 *    value for a row that saw no key, so exp2(s − lse) is 0 without infinities in the shader) and
 *    D = dO·O.
 * 2. `attention_bwd_dq`: invocation owns R rows of one kv head's group (as in the forward) and walks
 *    the keys they can see, recomputing P = exp2(s − lse) and accumulating dQ += P·(dO·v − D)·k.
 * 3. `attention_bwd_dkv`: invocation owns R keys of one (batch, kv head) and walks every query row
 *    that can see them (the q heads of the group included, which sums GQA) accumulating
 *    dV += P·dO and dK += P·(dO·v − D)·q. dK and dV share one buffer (kernels stay within 8
 *    storage bindings); the caller hands out the two halves as contiguous views.
 *
 * State lives in registers, unrolled over rows/keys and vec4 chunks of the head dims, as in the
 * forward; scores are in log2 units (the dot product times scale·log2 e).
 */
import { cachedSource } from '../../runtime/source-cache';
import { empty } from '../../creation';
import type { DType } from '../../dtype';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { bindTensors, type NamedBinding } from '../../runtime/bindings';
import { Params } from '../../runtime/params';
import { GRID_ARGS, flatIndex } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import type { AttentionBackwardProblem, AttentionGradients, HeadView, KeyRowView } from './attention';
import { attentionTuning, declareHead, extent, keyRowBinding, loadHead, range, type Access } from './attention.wgsl';
import { narrow, reshape } from '../layout/layout';
import { TextureOperands, bindTextureOperand, textureCopyFits } from '../../runtime/texture-operands';
import { storageReads } from '../../runtime/texture-pool';

/** lse (log2 units) of a row that saw no key: finite, so exp2(score − it) is exactly 0. */
const EMPTY_ROW_LSE = '3.0e38';

/**
 * Most vec4 registers of per-row (dQ) or per-key (dK/dV) state one invocation unrolls: LLVM's compile
 * time on llvmpipe grows steeply with it (head dim 128, 4 keys per invocation: 82 s; 2: 14 s; 1:
 * 5 s, for 2× the run time), so large head dims own fewer rows or keys per invocation.
 */
const MAX_STATE_VEC4 = 128;

/** Rows or keys per invocation: the tuning's choice, fewer when each carries `stateVec4` registers, at most `count`. */
function perLane(device: WebGpuDevice, stateVec4: number, count: number): number {
  return Math.max(1, Math.min(attentionTuning(device).rowsPerLane, Math.floor(MAX_STATE_VEC4 / stateVec4), count));
}

interface Launch {
  device: WebGpuDevice;
  params: Params;
  /** The bindings in order; `bindTensors` numbers and declares them. */
  list: NamedBinding[];
  /** Flat texture copies, released once every backward kernel is recorded. */
  textures: TextureOperands;
}

/** Loops at least this long read their operands (when dense f32) from flat texture copies. */
const TEXTURE_MIN_LOOP = 8;

/**
 * Binds a head operand. With `texture`, a dense f32 operand of whole vec4 rows is read through a
 * flat texture copy (read-only storage texture; llvmpipe turns every storage-buffer load into a
 * per-lane loop): for the operands an invocation's inner loop walks.
 */
function bindHead(l: Launch, name: string, view: HeadView, dim: number, texture = false): Access {
  const t = view.tensor;
  l.params.u32(`${name}sB`, view.strides.batch).u32(`${name}sS`, view.strides.seq).u32(`${name}sH`, view.strides.head);
  // Declared `<name>b`, read by `loadHead` with P.<name>Off in elements.
  const wgslName = `${name}b`;
  if (texture && dim % 4 === 0 && textureCopyFits(l.device, t)) {
    l.list.push({ name: wgslName, binding: bindTextureOperand(l.textures.copy(t), l.params, name), declare: (n) => declareHead(n, wgslName, 'texture') });
    return 'texture';
  }
  const bound = l.device.bind(t.storage, t.offset, extent(t), `attention backward ${name}`);
  l.params.u32(`${name}Off`, bound.elementOffset);
  const starts = [bound.elementOffset, view.strides.batch, view.strides.seq, view.strides.head];
  const access: Access =
    t.dtype === 'f32' && dim % 4 === 0 && starts.every((x) => x % 4 === 0)
      ? 'vec4'
      : t.dtype === 'bf16' && dim % 8 === 0 && starts.every((x) => x % 8 === 0)
        ? 'bf16x8'
        : t.dtype;
  l.list.push({ name: wgslName, binding: bound.range, declare: (n) => declareHead(n, wgslName, access) });
  return access;
}

/** Binds a per-key row operand (mask `m` as `maskb`, sequence ids `s` as `seqb`), read with P.<name>Off in elements. */
function bindKeyRow(l: Launch, name: 'm' | 's', view: KeyRowView): void {
  const t = view.tensor;
  const bound = l.device.bind(t.storage, t.offset, extent(t), `attention backward ${name}`);
  l.params.u32(`${name}Off`, bound.elementOffset).u32(`${name}sB`, view.batchStride).u32(`${name}sJ`, view.keyStride);
  l.list.push(keyRowBinding(name, t.dtype, bound.range));
}

/** Gradients for q (when `want.q`) and for k and v (when `want.kv`): contiguous f32 in the shapes of q, k and v. */
export function attentionBackwardGpu(device: WebGpuDevice, bp: AttentionBackwardProblem, want: { q: boolean; kv: boolean }): AttentionGradients {
  const p = bp.forward;
  const rows = p.batch * p.queries * p.qHeads;
  const stats = empty([2 * rows], { device });
  const textures = new TextureOperands(device);
  try {
    launchStats(device, bp, stats, textures);
    const grads: AttentionGradients = { q: null, k: null, v: null };
    if (want.q) {
      grads.q = empty([p.batch, p.queries, p.qHeads, p.headDim], { device });
      launchDq(device, bp, stats, grads.q, textures);
    }
    if (want.kv) {
      const kSize = p.batch * p.keys * p.kvHeads * p.headDim;
      const vSize = p.batch * p.keys * p.kvHeads * p.valueDim;
      const both = empty([kSize + vSize], { device });
      launchDkv(device, bp, stats, both, kSize, textures);
      grads.k = reshape(narrow(both, 0, 0, kSize), [p.batch, p.keys, p.kvHeads, p.headDim]);
      grads.v = reshape(narrow(both, 0, kSize, vSize), [p.batch, p.keys, p.kvHeads, p.valueDim]);
      both.dispose();
    }
    return grads;
  } finally {
    stats.dispose();
    textures.release();
  }
}

function launchStats(device: WebGpuDevice, bp: AttentionBackwardProblem, stats: Tensor, textures: TextureOperands): void {
  const p = bp.forward;
  const rows = p.batch * p.queries * p.qHeads;
  const { workgroupSize: W } = attentionTuning(device);
  const l: Launch = {
    device,
    textures,
    params: new Params().u32('rows', rows).u32('queries', p.queries).u32('qHeads', p.qHeads).u32('valueDim', p.valueDim),
    list: [],
  };
  const g = bp.gradOut;
  l.params.u32('gsB', g.strides.batch).u32('gsS', g.strides.seq).u32('gsH', g.strides.head);
  // dO per element (P.gradbOff), whatever its layout.
  l.list.push(
    { name: 'gradb', tensor: g.tensor, window: { start: 0, length: extent(g.tensor) }, what: 'attention backward g' },
    { name: 'outb', tensor: bp.out, what: 'attention backward output' },
    // lse is read as bits (+Infinity marks a row that saw no key).
    { name: 'lseb', tensor: bp.lse, what: 'attention backward lse', as: 'u32' },
    { name: 'statsb', tensor: stats, what: 'attention backward stats', writable: true },
  );
  const bound = bindTensors(device, 'attention backward', l.list, l.params);
  const source = cachedSource(
    `attention-backward|stats|${W}|${l.params.wgsl()}|${bound.decls}`,
    () => `${l.params.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
@compute @workgroup_size(${W})
fn main(${GRID_ARGS}) {
  let r = ${flatIndex(W)};
  if (r >= P.rows) { return; }
  let h = r % P.qHeads;
  let i = (r / P.qHeads) % P.queries;
  let b = r / (P.qHeads * P.queries);
  let gb = P.gradbOff + b * P.gsB + i * P.gsS + h * P.gsH;
  let ob = P.outbOff + r * P.valueDim;
  var rowDot = 0.0;
  for (var d = 0u; d < P.valueDim; d++) { rowDot = fma(load_gradb(gb + d), outb[ob + d], rowDot); }
  let bits = lseb[P.lsebOff + r];
  // +Infinity marks a row that saw no key (never read it as a float: compilers may assume finite math).
  let unseen = (bits & 0x7fffffffu) >= 0x7f800000u;
  statsb[P.statsbOff + 2u * r] = select(bitcast<f32>(select(bits, 0u, unseen)) * ${Math.LOG2E}, ${EMPTY_ROW_LSE}, unseen);
  statsb[P.statsbOff + 2u * r + 1u] = select(rowDot, 0.0, unseen);
}`,
  );
  device.run({
    name: 'attention_bwd_stats',
    source,
    params: l.params,
    bindings: bound.ranges,
    workgroups: device.grid(rows, W),
    detail: `rows ${rows} Dv ${p.valueDim}`,
  });
}

interface Variant {
  workgroupSize: number;
  /** Rows (dQ) or keys (dK/dV) one invocation owns. */
  perLane: number;
  headDim: number;
  valueDim: number;
  q: Access;
  k: Access;
  v: Access;
  g: Access;
  causal: boolean;
  mask: DType | null;
  seq: boolean;
}

/** Binds the inputs both gradient kernels read (q, k, v, dO, stats, mask, seqIds) and their common params. */
function bindInputs(
  device: WebGpuDevice,
  bp: AttentionBackwardProblem,
  stats: Tensor,
  launch: { lanes: number; chunks: number; perLane: number; looped: 'keys' | 'queries'; textures: TextureOperands },
): { l: Launch; variant: Variant } {
  const { lanes, chunks, perLane, looped } = launch;
  const p = bp.forward;
  const { workgroupSize, kvTextures } = attentionTuning(device);
  // The operands of the inner loop: keys and values (dQ) or queries and their output gradients (dK/dV).
  const textures = kvTextures && storageReads(device) && (looped === 'keys' ? p.keys : p.queries) >= TEXTURE_MIN_LOOP;
  const keysLooped = textures && looped === 'keys';
  const queriesLooped = textures && looped === 'queries';
  const group = p.qHeads / p.kvHeads;
  const params = new Params()
    .u32('lanes', lanes)
    .u32('chunks', chunks)
    .u32('pairs', p.queries * group)
    .u32('group', group)
    .u32('kvHeads', p.kvHeads)
    .u32('batchHeads', p.batch * p.kvHeads)
    .u32('qHeads', p.qHeads)
    .u32('queries', p.queries)
    .u32('keys', p.keys)
    .u32('queryOffset', p.queryOffset)
    .f32('scale', p.scale)
    .f32('scale2', p.scale * Math.LOG2E);
  const l: Launch = { device, params, list: [], textures: launch.textures };
  const variant: Variant = {
    workgroupSize,
    perLane,
    headDim: p.headDim,
    valueDim: p.valueDim,
    q: bindHead(l, 'q', p.q, p.headDim, queriesLooped),
    k: bindHead(l, 'k', p.k, p.headDim, keysLooped),
    v: bindHead(l, 'v', p.v, p.valueDim, keysLooped),
    g: bindHead(l, 'g', bp.gradOut, p.valueDim, queriesLooped),
    causal: p.causal,
    mask: p.keyMask ? p.keyMask.tensor.dtype : null,
    seq: p.seqIds !== null,
  };
  l.list.push({ name: 'statsb', tensor: stats, what: 'attention backward stats' });
  if (p.keyMask) bindKeyRow(l, 'm', p.keyMask);
  if (p.seqIds) bindKeyRow(l, 's', p.seqIds);
  return { l, variant };
}

/** `a0·b0 + a1·b1 + …` over the vec4 chunks of a head vector. */
function dotChunks(a: string, b: string, chunks: number): string {
  return range(chunks)
    .map((c) => `dot(${a}${c}, ${b}${c})`)
    .join(' + ');
}

/** Per-element stores of vec4 registers `${reg}0…` into a flat f32 array starting at `base`. */
function storeChunks(array: string, base: string, reg: string, dim: number, scale: string): string[] {
  return range(dim).map((e) => `${array}[${base} + ${e}u] = ${reg}${Math.floor(e / 4)}[${e % 4}]${scale};`);
}

function kernel(params: Params, v: Variant, decls: string, body: string[]): string {
  const textures = [v.q, v.k, v.v, v.g].includes('texture');
  return `${textures ? 'requires readonly_and_readwrite_storage_textures;\n' : ''}${params.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${decls}
@compute @workgroup_size(${v.workgroupSize})
fn main(${GRID_ARGS}) {
${body.map((line) => `  ${line}`).join('\n')}
}`;
}

function launchDq(device: WebGpuDevice, bp: AttentionBackwardProblem, stats: Tensor, dq: Tensor, textures: TextureOperands): void {
  const p = bp.forward;
  const pairs = p.queries * (p.qHeads / p.kvHeads);
  // Per row: q, dQ and dO.
  const R = perLane(device, 2 * Math.ceil(p.headDim / 4) + Math.ceil(p.valueDim / 4), pairs);
  const chunks = Math.ceil(pairs / R);
  const lanes = chunks * p.batch * p.kvHeads;
  const { l, variant } = bindInputs(device, bp, stats, { lanes, chunks, perLane: R, looped: 'keys', textures });
  l.list.push({ name: 'dqb', tensor: dq, what: 'attention backward dq', writable: true });
  const bound = bindTensors(device, 'attention backward', l.list, l.params);
  const source = cachedSource(`attention-backward|dq|${JSON.stringify(variant)}|${l.params.wgsl()}|${bound.decls}`, () =>
    buildDq(l.params, bound.decls, variant),
  );
  device.run({
    name: 'attention_bwd_dq',
    source,
    params: l.params,
    bindings: bound.ranges,
    workgroups: device.grid(lanes, variant.workgroupSize),
    detail: detail(bp),
  });
}

function launchDkv(device: WebGpuDevice, bp: AttentionBackwardProblem, stats: Tensor, both: Tensor, kSize: number, textures: TextureOperands): void {
  const p = bp.forward;
  // Per key: k, dK, v and dV.
  const R = perLane(device, 2 * Math.ceil(p.headDim / 4) + 2 * Math.ceil(p.valueDim / 4), p.keys);
  const chunks = Math.ceil(p.keys / R);
  const lanes = chunks * p.batch * p.kvHeads;
  const { l, variant } = bindInputs(device, bp, stats, { lanes, chunks, perLane: R, looped: 'queries', textures });
  l.list.push({ name: 'dkvb', tensor: both, what: 'attention backward dk/dv', writable: true });
  l.params.u32('dvAt', kSize);
  const bound = bindTensors(device, 'attention backward', l.list, l.params);
  const source = cachedSource(`attention-backward|dkv|${JSON.stringify(variant)}|${l.params.wgsl()}|${bound.decls}`, () =>
    buildDkv(l.params, bound.decls, variant),
  );
  device.run({
    name: 'attention_bwd_dkv',
    source,
    params: l.params,
    bindings: bound.ranges,
    workgroups: device.grid(lanes, variant.workgroupSize),
    detail: detail(bp),
  });
}

function detail(bp: AttentionBackwardProblem): string {
  const p = bp.forward;
  return `q[${p.batch},${p.queries},${p.qHeads},${p.headDim}] kv[${p.keys},${p.kvHeads},${p.valueDim}] ${p.q.tensor.dtype}/${p.k.tensor.dtype}`;
}

/**
 * dQ: invocation t = (batch·Hkv + kvHead)·chunks + chunk owns rows chunk·R … chunk·R + R − 1
 * (flat row = query·group + head-in-group) and walks the keys the last of them can see.
 */
function buildDq(params: Params, decls: string, v: Variant): string {
  const R = v.perLane;
  const qc = Math.ceil(v.headDim / 4);
  const vc = Math.ceil(v.valueDim / 4);
  const body: string[] = [];
  body.push(`let t = ${flatIndex(v.workgroupSize)};`, 'if (t >= P.lanes) { return; }');
  body.push('let chunk = t % P.chunks;', 'let bg = t / P.chunks;', 'let b = bg / P.kvHeads;', 'let g = bg % P.kvHeads;', `let first = chunk * ${R}u;`);
  if (v.mask) body.push('let mBase = P.mOff + b * P.msB;');
  if (v.seq) body.push('let sBase = P.sOff + b * P.ssB;');
  for (const r of range(R)) {
    // Rows past the last one repeat it (loads stay in range) and write nothing.
    body.push(`let f${r} = min(first + ${r}u, P.pairs - 1u);`, `let i${r} = f${r} / P.group;`, `let h${r} = g * P.group + f${r} % P.group;`);
    body.push(`let qpos${r} = P.queryOffset + i${r};`);
    if (v.seq) body.push(`let qseq${r} = seqb[sBase + qpos${r} * P.ssJ];`);
    body.push(...loadHead('qb', v.q, `(P.qOff + b * P.qsB + i${r} * P.qsS + h${r} * P.qsH)`, v.headDim, `q${r}_`));
    body.push(...loadHead('gb', v.g, `(P.gOff + b * P.gsB + i${r} * P.gsS + h${r} * P.gsH)`, v.valueDim, `do${r}_`));
    body.push(`let row${r} = (b * P.queries + i${r}) * P.qHeads + h${r};`);
    body.push(`let lse${r} = statsb[P.statsbOff + 2u * row${r}];`, `let rd${r} = statsb[P.statsbOff + 2u * row${r} + 1u];`);
    for (const c of range(qc)) body.push(`var dq${r}_${c} = vec4<f32>(0.0);`);
  }
  body.push(v.causal ? `let kEnd = min(P.keys, qpos${R - 1} + 1u);` : 'let kEnd = P.keys;');
  body.push('let kBase = P.kOff + b * P.ksB + g * P.ksH;', 'let vBase = P.vOff + b * P.vsB + g * P.vsH;');
  body.push('for (var j = 0u; j < kEnd; j++) {');
  const inner: string[] = [];
  inner.push(v.mask ? 'let keyOk = load_maskb(mBase + j * P.msJ) != 0.0;' : 'let keyOk = true;');
  if (v.seq) inner.push('let kseq = seqb[sBase + j * P.ssJ];');
  inner.push(...loadHead('kb', v.k, '(kBase + j * P.ksS)', v.headDim, 'k_'));
  inner.push(...loadHead('vb', v.v, '(vBase + j * P.vsS)', v.valueDim, 'v_'));
  for (const r of range(R)) {
    const conds = ['keyOk'];
    if (v.causal) conds.push(`j <= qpos${r}`);
    if (v.seq) conds.push(`kseq == qseq${r}`);
    inner.push(`let p${r} = select(0.0, exp2((${dotChunks(`q${r}_`, 'k_', qc)}) * P.scale2 - lse${r}), ${conds.join(' && ')});`);
    inner.push(`let ds${r} = vec4<f32>(p${r} * ((${dotChunks(`do${r}_`, 'v_', vc)}) - rd${r}));`);
    for (const c of range(qc)) inner.push(`dq${r}_${c} = fma(ds${r}, k_${c}, dq${r}_${c});`);
  }
  body.push(...inner.map((line) => `  ${line}`), '}');
  for (const r of range(R)) {
    body.push(`if (first + ${r}u < P.pairs) {`);
    body.push(...storeChunks('dqb', `P.dqbOff + row${r} * ${v.headDim}u`, `dq${r}_`, v.headDim, ' * P.scale').map((line) => `  ${line}`));
    body.push('}');
  }
  return kernel(params, v, decls, body);
}

/**
 * dK and dV: invocation t = (batch·Hkv + kvHead)·chunks + chunk owns keys chunk·R … chunk·R + R − 1
 * and walks every query row (each q head of the group) from the first query that can see its first key.
 */
function buildDkv(params: Params, decls: string, v: Variant): string {
  const R = v.perLane;
  const qc = Math.ceil(v.headDim / 4);
  const vc = Math.ceil(v.valueDim / 4);
  const body: string[] = [];
  body.push(`let t = ${flatIndex(v.workgroupSize)};`, 'if (t >= P.lanes) { return; }');
  body.push('let chunk = t % P.chunks;', 'let bg = t / P.chunks;', 'let b = bg / P.kvHeads;', 'let g = bg % P.kvHeads;', `let first = chunk * ${R}u;`);
  if (v.mask) body.push('let mBase = P.mOff + b * P.msB;');
  if (v.seq) body.push('let sBase = P.sOff + b * P.ssB;');
  body.push('let kBase = P.kOff + b * P.ksB + g * P.ksH;', 'let vBase = P.vOff + b * P.vsB + g * P.vsH;');
  for (const r of range(R)) {
    // Keys past the last one repeat it (loads stay in range) and write nothing.
    body.push(`let j${r} = min(first + ${r}u, P.keys - 1u);`);
    body.push(v.mask ? `let keyOk${r} = load_maskb(mBase + j${r} * P.msJ) != 0.0;` : `let keyOk${r} = true;`);
    if (v.seq) body.push(`let kseq${r} = seqb[sBase + j${r} * P.ssJ];`);
    body.push(...loadHead('kb', v.k, `(kBase + j${r} * P.ksS)`, v.headDim, `k${r}_`));
    body.push(...loadHead('vb', v.v, `(vBase + j${r} * P.vsS)`, v.valueDim, `v${r}_`));
    for (const c of range(qc)) body.push(`var dk${r}_${c} = vec4<f32>(0.0);`);
    for (const c of range(vc)) body.push(`var dv${r}_${c} = vec4<f32>(0.0);`);
  }
  // Causal: query i sits at key position queryOffset + i and sees key j from i = j − queryOffset on.
  body.push(v.causal ? 'let iStart = max(first, P.queryOffset) - P.queryOffset;' : 'let iStart = 0u;');
  body.push('for (var i = iStart; i < P.queries; i++) {');
  const inner: string[] = [];
  inner.push('let qpos = P.queryOffset + i;');
  if (v.seq) inner.push('let qseq = seqb[sBase + qpos * P.ssJ];');
  inner.push('for (var hh = 0u; hh < P.group; hh++) {');
  const head: string[] = [];
  head.push('let h = g * P.group + hh;', 'let row = (b * P.queries + i) * P.qHeads + h;');
  head.push('let lse = statsb[P.statsbOff + 2u * row];', 'let rd = statsb[P.statsbOff + 2u * row + 1u];');
  head.push(...loadHead('qb', v.q, '(P.qOff + b * P.qsB + i * P.qsS + h * P.qsH)', v.headDim, 'q_'));
  head.push(...loadHead('gb', v.g, '(P.gOff + b * P.gsB + i * P.gsS + h * P.gsH)', v.valueDim, 'do_'));
  for (const r of range(R)) {
    const conds = [`keyOk${r}`];
    if (v.causal) conds.push(`j${r} <= qpos`);
    if (v.seq) conds.push(`kseq${r} == qseq`);
    head.push(`let p${r} = select(0.0, exp2((${dotChunks('q_', `k${r}_`, qc)}) * P.scale2 - lse), ${conds.join(' && ')});`);
    head.push(`let ds${r} = vec4<f32>(p${r} * ((${dotChunks('do_', `v${r}_`, vc)}) - rd));`);
    for (const c of range(vc)) head.push(`dv${r}_${c} = fma(vec4<f32>(p${r}), do_${c}, dv${r}_${c});`);
    for (const c of range(qc)) head.push(`dk${r}_${c} = fma(ds${r}, q_${c}, dk${r}_${c});`);
  }
  inner.push(...head.map((line) => `  ${line}`), '}');
  body.push(...inner.map((line) => `  ${line}`), '}');
  for (const r of range(R)) {
    body.push(`if (first + ${r}u < P.keys) {`);
    body.push(`  let kvRow = (b * P.keys + j${r}) * P.kvHeads + g;`);
    body.push(...storeChunks('dkvb', `P.dkvbOff + kvRow * ${v.headDim}u`, `dk${r}_`, v.headDim, ' * P.scale').map((line) => `  ${line}`));
    body.push(...storeChunks('dkvb', `P.dkvbOff + P.dvAt + kvRow * ${v.valueDim}u`, `dv${r}_`, v.valueDim, '').map((line) => `  ${line}`));
    body.push('}');
  }
  return kernel(params, v, decls, body);
}
