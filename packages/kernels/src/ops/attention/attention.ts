/**
 * Scaled dot-product attention for Nemotron-H: grouped-query heads, no positional encoding, causal
 * by default, with an optional key-padding mask and packed-document ids.
 *
 * `attention` is differentiable in q, k and v for the training layout (`kvLayout: 'bshd'`, no
 * `kvLength`): the node keeps q, k, v, the output and the per-row log-sum-exp — never a
 * [B, heads, Lq, Lk] tensor — and its backward recomputes the probabilities tile by tile
 * (FlashAttention-2). Cached/decode calls and `attentionWithStats` have no backward.
 *
 * Layouts (the last dimension of every view must be dense; other views are copied first):
 * - q: `[B, Lq, Hq, D]`; the result: `[B, Lq, Hq, Dv]` f32, contiguous.
 * - k / v, `kvLayout: 'bshd'` (default): `[B, Lk, Hkv, D]` / `[B, Lk, Hkv, Dv]`, e.g. projections.
 * - k / v, `kvLayout: 'bhsd'`: `[B, Hkv, capacity, D]` / `[B, Hkv, capacity, Dv]`, the generation
 *   KV cache; only the first `kvLength` positions are read, so decode never copies the cache.
 *   `kvLength` may be an i32 tensor read on the device, so a recorded decode step (see
 *   `StepProgram`) attends over a cache that grows between replays.
 *
 * A query row that can see no key at all (e.g. a left-padding position) gets zeros, and its lse is
 * +Infinity (so exp(score − lse) is 0 for every key, which a backward rule can use as is).
 */
import { defineFunction } from '../../autograd/function';
import { needsGrad } from '../../autograd/graph';
import { empty, zeros } from '../../creation';
import { isFloat } from '../../dtype';
import { formatShape } from '../../shape';
import type { Tensor } from '../../tensor';
import { contiguous } from '../layout/layout';
import { attentionBackwardCpu } from './attention-backward.cpu';
import { attentionBackwardGpu } from './attention-backward.wgsl';
import { attentionCpu } from './attention.cpu';
import { attentionBackwardNative, attentionNative } from './attention.native';
import { attentionGpu } from './attention.wgsl';

export type KvLayout = 'bshd' | 'bhsd';

export interface AttentionOptions {
  /** Key j is visible to query i only when j ≤ queryOffset + i (default true). */
  causal?: boolean;
  /** Multiplies q·k (default D^-0.5). */
  scale?: number;
  /**
   * Absolute key position of query 0 (default: keys − Lq, so decode and chunked prefill over a
   * cache need nothing). Used by `causal` and `seqIds`, which need 0 ≤ queryOffset ≤ keys − Lq.
   */
  queryOffset?: number;
  /** `[B, n]`, any dtype: nonzero = attend, 0 = padding. n is the key count or k's sequence dimension. */
  keyMask?: Tensor;
  /**
   * i32 `[B, n]` document ids of the keys (n as for keyMask): query i, at key position
   * queryOffset + i, attends only keys whose id equals its own (packed documents stay isolated).
   */
  seqIds?: Tensor;
  /** How k and v are laid out (see the file header); default 'bshd'. */
  kvLayout?: KvLayout;
  /**
   * Number of valid keys (≤ the sequence/capacity dimension of k and v); default all of them. An
   * i32 tensor of one element is read on the device (values above the capacity count as the
   * capacity); queries then sit at the last Lq valid keys (queryOffset must be left out).
   */
  kvLength?: number | Tensor;
}

/** Element strides of a `[batch, seq, head, dim]` view (dim is dense). */
export interface HeadStrides {
  batch: number;
  seq: number;
  head: number;
}

export interface HeadView {
  tensor: Tensor;
  strides: HeadStrides;
}

/** A `[B, n]` per-key tensor with its element strides. */
export interface KeyRowView {
  tensor: Tensor;
  batchStride: number;
  keyStride: number;
}

/** A validated attention call, in the terms both backends work in. */
export interface AttentionProblem {
  batch: number;
  queries: number;
  qHeads: number;
  kvHeads: number;
  headDim: number;
  valueDim: number;
  /** Valid keys (kvLength); with `keysOnDevice`, the capacity (an upper bound). */
  keys: number;
  /** i32 [1]: the valid key count, read on the device; null when `keys` is exact. */
  keysOnDevice: Tensor | null;
  causal: boolean;
  scale: number;
  /** Key position of query 0; 0 when neither causal nor seqIds use it. */
  queryOffset: number;
  q: HeadView;
  k: HeadView;
  v: HeadView;
  keyMask: KeyRowView | null;
  seqIds: KeyRowView | null;
}

export interface AttentionResult {
  /** `[B, Lq, Hq, Dv]` f32. */
  out: Tensor;
  /** `[B, Lq, Hq]` f32: log Σ_j exp(scale·q·k_j) over the visible keys (+Infinity when none). */
  lse: Tensor;
}

/** What the backward of one attention call works from. */
export interface AttentionBackwardProblem {
  /** The forward call, rebuilt from the saved inputs. */
  forward: AttentionProblem;
  /** The forward's output `[B, Lq, Hq, Dv]`, f32 contiguous. */
  out: Tensor;
  /** The forward's lse `[B, Lq, Hq]`, f32 contiguous (+Infinity for rows that saw no key). */
  lse: Tensor;
  /** dLoss/dout `[B, Lq, Hq, Dv]` (dense last dim). */
  gradOut: HeadView;
}

/** Gradients of q, k and v (f32, contiguous, their shapes in 'bshd'), null where not computed. */
export interface AttentionGradients {
  q: Tensor | null;
  k: Tensor | null;
  v: Tensor | null;
}

/** Attention output `[B, Lq, Hq, Dv]` (f32). See the file header for layouts, masking and gradients. */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  if (needsGrad([q, k, v])) {
    if (options.kvLayout === 'bhsd')
      fail("kvLayout 'bhsd' (the generation cache) has no backward: call it inside noGrad(), or pass k and v as [B, Lk, Hkv, D] projections");
    if (options.kvLength !== undefined) fail('kvLength (a cached call) has no backward: call it inside noGrad(), or pass only the valid keys');
    return differentiableAttention(q, k, v, options);
  }
  return run(q, k, v, options, false).out;
}

/** Attention output plus the per-row log-sum-exp of the scaled scores. Not differentiable. */
export function attentionWithStats(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): AttentionResult {
  if (needsGrad([q, k, v])) fail('attentionWithStats has no backward: use attention() for gradients, or call it inside noGrad()');
  const { out, lse } = run(q, k, v, options, true);
  return { out, lse: lse! };
}

function run(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions, withLse: boolean): { out: Tensor; lse: Tensor | null } {
  const copies: Tensor[] = [];
  try {
    const problem = toProblem(q, k, v, options, copies);
    const device = q.device;
    const out = empty([problem.batch, problem.queries, problem.qHeads, problem.valueDim], { device });
    const lse = withLse ? empty([problem.batch, problem.queries, problem.qHeads], { device }) : null;
    if (out.size > 0) {
      if (device.kind === 'cpu') {
        if (!device.native || !attentionNative(device.native, problem, out, lse)) attentionCpu(problem, out, lse);
      } else attentionGpu(device, problem, out, lse);
    }
    return { out, lse };
  } finally {
    for (const t of copies) t.dispose();
  }
}

/** The options without their tensors (those are saved with the node). */
type ScalarOptions = Omit<AttentionOptions, 'keyMask' | 'seqIds'>;

interface NodeState {
  options: ScalarOptions;
  hasMask: boolean;
  hasSeqIds: boolean;
}

/** One autograd node: saves q, k, v, out, lse (and the mask / document ids) for the backward. */
const differentiableAttention = defineFunction<[Tensor, Tensor, Tensor, AttentionOptions], NodeState>({
  name: 'attention',
  forward(ctx, q, k, v, options) {
    const { out, lse } = run(q, k, v, options, true);
    const { keyMask, seqIds, ...scalars } = options;
    ctx.save(q, k, v, out, lse!);
    if (keyMask) ctx.save(keyMask);
    if (seqIds) ctx.save(seqIds);
    ctx.state = { options: scalars, hasMask: keyMask !== undefined, hasSeqIds: seqIds !== undefined };
    return out;
  },
  backward(ctx, grad) {
    const [q, k, v, out, lse, ...rest] = ctx.saved as [Tensor, Tensor, Tensor, Tensor, Tensor, ...Tensor[]];
    const { options, hasMask, hasSeqIds } = ctx.state;
    const [wantQ, wantK, wantV] = ctx.needsInputGrad;
    const want = { q: wantQ === true, kv: wantK === true || wantV === true };
    const copies: Tensor[] = [];
    try {
      const forward = toProblem(q, k, v, { ...options, keyMask: hasMask ? rest[0] : undefined, seqIds: hasSeqIds ? rest[hasMask ? 1 : 0] : undefined }, copies);
      let grads: AttentionGradients;
      if (out.size === 0) {
        // No queries: nothing flows to q, k or v.
        const zerosOf = (t: Tensor, wanted: boolean) => (wanted ? zeros(t.shape, { device: t.device }) : null);
        grads = { q: zerosOf(q, want.q), k: zerosOf(k, want.kv), v: zerosOf(v, want.kv) };
      } else {
        const problem: AttentionBackwardProblem = { forward, out, lse, gradOut: headView(grad, 1, 2, copies) };
        const device = q.device;
        if (device.kind === 'cpu') grads = (device.native && attentionBackwardNative(device.native, problem, want)) || attentionBackwardCpu(problem, want);
        else grads = attentionBackwardGpu(device, problem, want);
      }
      return [grads.q, wantK ? grads.k : null, wantV ? grads.v : null];
    } finally {
      for (const t of copies) t.dispose();
    }
  },
});

/** `t` as a head view over (seqAxis, headAxis); a copy (pushed to `copies`) when its last dim is strided. */
function headView(t: Tensor, seqAxis: number, headAxis: number, copies: Tensor[]): HeadView {
  const dense = t.strides[3] === 1 || t.shape[3] === 1 ? t : contiguous(t);
  if (dense !== t) copies.push(dense);
  return { tensor: dense, strides: { batch: dense.strides[0]!, seq: dense.strides[seqAxis]!, head: dense.strides[headAxis]! } };
}

function fail(message: string): never {
  throw new Error(`attention: ${message}`);
}

/** Validates the call and normalises it into an {@link AttentionProblem}; dense copies go to `copies`. */
function toProblem(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions, copies: Tensor[]): AttentionProblem {
  const named = { q, k, v };
  for (const [name, t] of Object.entries(named)) {
    t.assertAlive(`attention ${name}`);
    if (t.rank !== 4) fail(`${name} ${formatShape(t.shape)} must have rank 4`);
    if (!isFloat(t.dtype)) fail(`${name} must be f32 or bf16, got ${t.dtype}`);
    if (t.device !== q.device) fail(`q, k and v are on different devices (${q.device.kind}, ${k.device.kind}, ${v.device.kind})`);
  }
  const layout = options.kvLayout ?? 'bshd';
  if (layout !== 'bshd' && layout !== 'bhsd') fail(`kvLayout must be 'bshd' or 'bhsd', got '${String(layout)}'`);
  const [batch, queries, qHeads, headDim] = q.shape as [number, number, number, number];
  // Dimensions of k and v in [B, seq, heads, dim] order whatever the layout.
  const kvDims = (t: Tensor) =>
    layout === 'bshd' ? [t.shape[0]!, t.shape[1]!, t.shape[2]!, t.shape[3]!] : [t.shape[0]!, t.shape[2]!, t.shape[1]!, t.shape[3]!];
  const [kb, kSeq, kvHeads, kDim] = kvDims(k) as [number, number, number, number];
  const [vb, vSeq, vHeads, valueDim] = kvDims(v) as [number, number, number, number];
  const shapes = `q ${formatShape(q.shape)}, k ${formatShape(k.shape)}, v ${formatShape(v.shape)} (kvLayout '${layout}')`;
  if (kb !== batch || vb !== batch) fail(`batch sizes differ: ${shapes}`);
  if (kDim !== headDim) fail(`q and k head dims differ: ${shapes}`);
  if (vSeq !== kSeq || vHeads !== kvHeads) fail(`k and v disagree on keys or heads: ${shapes}`);
  if (kvHeads === 0 || qHeads % kvHeads !== 0) fail(`q heads (${qHeads}) must be a multiple of kv heads (${kvHeads}): ${shapes}`);
  if (headDim === 0 || valueDim === 0) fail(`head dims must be nonzero: ${shapes}`);

  const keysOnDevice = typeof options.kvLength === 'object' ? options.kvLength : null;
  if (keysOnDevice) {
    keysOnDevice.assertAlive('attention kvLength');
    if (keysOnDevice.dtype !== 'i32' || keysOnDevice.size !== 1)
      fail(`a kvLength tensor must be i32 with one element, got ${keysOnDevice.dtype} ${formatShape(keysOnDevice.shape)}`);
    if (keysOnDevice.device !== q.device) fail(`kvLength is on ${keysOnDevice.device.kind}, q on ${q.device.kind}`);
    if (options.queryOffset !== undefined) fail('queryOffset cannot be combined with a kvLength tensor (queries sit at the last valid keys)');
  }
  const keys = keysOnDevice ? kSeq : ((options.kvLength as number | undefined) ?? kSeq);
  if (!Number.isInteger(keys) || keys < 1 || keys > kSeq) fail(`kvLength ${keys} must be an integer in [1, ${kSeq}] for ${shapes}`);
  const causal = options.causal ?? true;
  const scale = options.scale ?? 1 / Math.sqrt(headDim);
  if (!Number.isFinite(scale)) fail(`scale ${scale} is not finite`);
  const offset = options.queryOffset ?? keys - queries;
  if (!Number.isInteger(offset)) fail(`queryOffset ${offset} is not an integer`);
  const positional = causal || options.seqIds !== undefined;
  if (positional && (offset < 0 || offset + queries > keys)) {
    fail(`queryOffset ${offset} puts queries 0..${queries - 1} outside the ${keys} keys (need 0 ≤ queryOffset ≤ keys − Lq for causal or seqIds)`);
  }

  const head = (t: Tensor, seqAxis: number, headAxis: number): HeadView => headView(t, seqAxis, headAxis, copies);
  const [kSeqAxis, kHeadAxis] = layout === 'bshd' ? [1, 2] : [2, 1];
  const perKey = (name: 'keyMask' | 'seqIds', t: Tensor | undefined): KeyRowView | null => {
    if (t === undefined) return null;
    t.assertAlive(`attention ${name}`);
    if (t.device !== q.device) fail(`${name} is on ${t.device.kind}, q on ${q.device.kind}`);
    if (name === 'seqIds' && t.dtype !== 'i32') fail(`seqIds must be i32, got ${t.dtype}`);
    if (t.rank !== 2 || t.shape[0] !== batch || (t.shape[1] !== keys && t.shape[1] !== kSeq)) {
      fail(`${name} ${formatShape(t.shape)} must be [${batch}, ${keys}]${kSeq !== keys ? ` or [${batch}, ${kSeq}]` : ''} for ${shapes}`);
    }
    return { tensor: t, batchStride: t.strides[0]!, keyStride: t.strides[1]! };
  };
  return {
    batch,
    queries,
    qHeads,
    kvHeads,
    headDim,
    valueDim,
    keys,
    keysOnDevice,
    causal,
    scale,
    queryOffset: positional ? offset : 0,
    q: head(q, 1, 2),
    k: head(k, kSeqAxis, kHeadAxis),
    v: head(v, kSeqAxis, kHeadAxis),
    keyMask: perKey('keyMask', options.keyMask),
    seqIds: perKey('seqIds', options.seqIds),
  };
}
