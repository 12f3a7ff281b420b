/**
 * `NativeDecodeStep`: a whole decode step of a hybrid Mamba2 / attention / MLP / MoE model (one sequence)
 * as one call into the native library (native/decode.c) — embedding row, every block's pre-norm,
 * mixer and residual, norm_f and lm_head — instead of ~60 separate ops, each with its TS glue,
 * temporaries and thread wake-up. The model describes itself as a {@link DecodeStepPlan} once; the
 * pointer table is built then, and each {@link NativeDecodeStep.run} refreshes only what moves (the
 * token, the position, cache buffers that grew). The same math as the separate ops (fusedLinear,
 * mambaDecodeStep, attention), which it is tested against; inference only.
 */
import { nativeDTypeCode } from '../../native/dtype-codes';
import type { NativeKernels } from '../../native/library';
import { formatShape } from '../../shape';
import type { Tensor } from '../../tensor';
import type { MoeRouteOptions } from '../moe/moe-route';

/** An RMSNorm's weight [n] and eps. */
export interface DecodeNorm {
  weight: Tensor;
  eps: number;
}

/** A linear layer: weight [out, in], bias [out] or null. */
export interface DecodeProjection {
  weight: Tensor;
  bias: Tensor | null;
}

/** A Mamba layer's cache entry: conv f32 [1, conv_dim, K], ssm f32 [1, H, P, N] (read on every run: they may be replaced). */
export interface MambaDecodeState {
  readonly conv: Tensor;
  readonly ssm: Tensor;
}

/** An attention layer's cache entry: K and V f32 [1, nkv, capacity, d] (read on every run: they grow). */
export interface AttentionDecodeState {
  readonly k: Tensor;
  readonly v: Tensor;
}

export type DecodeLayerPlan =
  | {
      kind: 'mamba';
      norm: DecodeNorm;
      inProj: DecodeProjection;
      outProj: DecodeProjection;
      convWeight: Tensor;
      convBias: Tensor | null;
      dtBias: Tensor;
      aLog: Tensor;
      D: Tensor | null;
      /** The gated group norm (groups = the B/C groups). */
      gatedNorm: DecodeNorm;
      groups: number;
      dtLimit: readonly [number, number] | null;
      state: MambaDecodeState;
    }
  | {
      kind: 'attention';
      norm: DecodeNorm;
      q: DecodeProjection;
      k: DecodeProjection;
      v: DecodeProjection;
      o: DecodeProjection;
      heads: number;
      kvHeads: number;
      headDim: number;
      scale: number;
      state: AttentionDecodeState;
    }
  | { kind: 'mlp'; norm: DecodeNorm; up: DecodeProjection; down: DecodeProjection }
  | {
      kind: 'moe';
      norm: DecodeNorm;
      /** [E, H] (no bias) */
      router: Tensor;
      /** [E], added to the sigmoid scores for the selection only, or null. */
      correctionBias: Tensor | null;
      routing: MoeRouteOptions;
      /** The routed experts stacked: up [E, I, H], down [E, H, I] (no biases). */
      experts: { up: Tensor; down: Tensor };
      shared: { up: DecodeProjection; down: DecodeProjection };
    };

export interface DecodeStepPlan {
  /** [V, H] */
  embedding: Tensor;
  layers: readonly DecodeLayerPlan[];
  normF: DecodeNorm;
  lmHead: DecodeProjection;
}

// Must match native/decode.c.
const HEADER_SLOTS = 32;
const LAYER_SLOTS = 48;
const KIND = { mamba: 0, attention: 1, mlp: 2, moe: 3 } as const;
/** The most projections one phase of decode.c computes (its MAX_SEGMENTS): a token's experts, or q and each KV head's k and v. */
const MAX_PHASE_PROJECTIONS = 64;

/** The first tensor whose shape does not fit the plan's sizes, described; null when all fit. */
function shapeMismatch(plan: DecodeStepPlan): string | null {
  const H = plan.embedding.shape[1] ?? -1;
  const checks: [string, Tensor | null, number[]][] = [
    ['embedding', plan.embedding, [plan.embedding.shape[0] ?? -1, H]],
    ['norm_f', plan.normF.weight, [H]],
    ['lm_head', plan.lmHead.weight, [plan.lmHead.weight.shape[0] ?? -1, H]],
    ['lm_head bias', plan.lmHead.bias, [plan.lmHead.weight.shape[0] ?? -1]],
  ];
  const proj = (name: string, p: DecodeProjection, out: number, inp: number) => checks.push([name, p.weight, [out, inp]], [`${name} bias`, p.bias, [out]]);
  for (const [i, l] of plan.layers.entries()) {
    const at = `layer ${i}`;
    checks.push([`${at} norm`, l.norm.weight, [H]]);
    if (l.kind === 'mamba') {
      const [, heads = -1, P = -1, N = -1] = l.state.ssm.shape;
      const K = l.state.conv.shape[2] ?? -1;
      if (l.state.ssm.rank !== 4 || l.state.conv.rank !== 3 || heads % l.groups !== 0) return `${at}: the Mamba states or groups do not fit`;
      const dInner = heads * P;
      const convDim = dInner + 2 * l.groups * N;
      proj(`${at} in_proj`, l.inProj, dInner + convDim + heads, H);
      proj(`${at} out_proj`, l.outProj, H, dInner);
      checks.push(
        [`${at} conv state`, l.state.conv, [1, convDim, K]],
        [`${at} conv weight`, l.convWeight, [convDim, K]],
        [`${at} conv bias`, l.convBias, [convDim]],
        [`${at} dt_bias`, l.dtBias, [heads]],
        [`${at} A_log`, l.aLog, [heads]],
        [`${at} D`, l.D, [heads]],
        [`${at} norm weight`, l.gatedNorm.weight, [dInner]],
      );
    } else if (l.kind === 'attention') {
      if (l.heads % l.kvHeads !== 0) return `${at}: ${l.heads} heads are not a multiple of ${l.kvHeads} KV heads`;
      // q plus every KV head's k and v rows are one phase's projections (decode.c's MAX_SEGMENTS).
      if (1 + 2 * l.kvHeads > MAX_PHASE_PROJECTIONS) return `${at}: ${l.kvHeads} KV heads are more than the native step takes in one phase`;
      proj(`${at} q_proj`, l.q, l.heads * l.headDim, H);
      proj(`${at} k_proj`, l.k, l.kvHeads * l.headDim, H);
      proj(`${at} v_proj`, l.v, l.kvHeads * l.headDim, H);
      proj(`${at} o_proj`, l.o, H, l.heads * l.headDim);
    } else if (l.kind === 'moe') {
      const E = l.router.shape[0] ?? -1;
      const I = l.experts.up.shape[1] ?? -1;
      const Is = l.shared.up.weight.shape[0] ?? -1;
      const { topK, nGroup, topkGroup } = l.routing;
      if (!Number.isInteger(topK) || topK < 1 || topK > Math.min(E, MAX_PHASE_PROJECTIONS))
        return `${at}: ${topK} experts per token do not fit (1..${Math.min(E, MAX_PHASE_PROJECTIONS)})`;
      if (
        !Number.isInteger(nGroup) ||
        nGroup < 1 ||
        E % nGroup !== 0 ||
        topkGroup < 1 ||
        topkGroup > nGroup ||
        topkGroup * (E / nGroup) < topK ||
        (nGroup > 1 && E / nGroup < 2)
      )
        return `${at}: ${nGroup} groups (top ${topkGroup}) do not fit ${E} experts choosing ${topK}`;
      checks.push(
        [`${at} router`, l.router, [E, H]],
        [`${at} correction bias`, l.correctionBias, [E]],
        [`${at} experts up_proj`, l.experts.up, [E, I, H]],
        [`${at} experts down_proj`, l.experts.down, [E, H, I]],
      );
      proj(`${at} shared up_proj`, l.shared.up, Is, H);
      proj(`${at} shared down_proj`, l.shared.down, H, Is);
    } else {
      const inter = l.up.weight.shape[0] ?? -1;
      proj(`${at} up_proj`, l.up, inter, H);
      proj(`${at} down_proj`, l.down, H, inter);
    }
  }
  for (const [name, t, shape] of checks)
    if (t && (t.rank !== shape.length || t.shape.some((d, j) => d !== shape[j]))) return `${name} is ${formatShape(t.shape)}, expected ${formatShape(shape)}`;
  return null;
}

/** Why `plan` cannot run natively, or null when it can. */
function unsupported(plan: DecodeStepPlan): string | null {
  if (plan.embedding.rank !== 2) return `the embedding must be [vocab, hidden], got ${formatShape(plan.embedding.shape)}`;
  const shapes = shapeMismatch(plan);
  if (shapes) return shapes;
  const tensors: [string, Tensor | null][] = [
    ['embedding', plan.embedding],
    ['norm_f', plan.normF.weight],
    ['lm_head', plan.lmHead.weight],
    ['lm_head bias', plan.lmHead.bias],
  ];
  const proj = (name: string, p: DecodeProjection) => tensors.push([name, p.weight], [`${name} bias`, p.bias]);
  for (const [i, l] of plan.layers.entries()) {
    tensors.push([`layer ${i} norm`, l.norm.weight]);
    if (l.kind === 'mamba') {
      proj(`layer ${i} in_proj`, l.inProj);
      proj(`layer ${i} out_proj`, l.outProj);
      tensors.push(
        ['conv weight', l.convWeight],
        ['conv bias', l.convBias],
        ['dt_bias', l.dtBias],
        ['A_log', l.aLog],
        ['D', l.D],
        ['norm', l.gatedNorm.weight],
      );
    } else if (l.kind === 'attention') {
      for (const [n, p] of [
        ['q', l.q],
        ['k', l.k],
        ['v', l.v],
        ['o', l.o],
      ] as const)
        proj(`layer ${i} ${n}_proj`, p);
    } else if (l.kind === 'moe') {
      tensors.push(
        [`layer ${i} router`, l.router],
        [`layer ${i} correction bias`, l.correctionBias],
        [`layer ${i} experts up_proj`, l.experts.up],
        [`layer ${i} experts down_proj`, l.experts.down],
      );
      proj(`layer ${i} shared up_proj`, l.shared.up);
      proj(`layer ${i} shared down_proj`, l.shared.down);
    } else {
      proj(`layer ${i} up_proj`, l.up);
      proj(`layer ${i} down_proj`, l.down);
    }
  }
  for (const [name, t] of tensors) {
    if (!t) continue;
    if (t.dtype !== 'f32' && t.dtype !== 'bf16') return `${name} is ${t.dtype}`;
    if (!t.isContiguous) return `${name} is not contiguous`;
    if (!t.storage.cpu) return `${name} is not on the host`;
  }
  return null;
}

function stateUnsupported(t: Tensor, name: string): string | null {
  if (t.dtype !== 'f32' || !t.isContiguous || !t.storage.cpu || t.shape[0] !== 1)
    return `${name} must be a dense f32 host tensor with batch 1, got ${t.dtype} ${formatShape(t.shape)}`;
  return null;
}

export class NativeDecodeStep {
  private readonly table: Float64Array;
  private scratch = new Float32Array(0);

  private constructor(
    private readonly lib: NativeKernels,
    private readonly plan: DecodeStepPlan,
  ) {
    this.table = new Float64Array(HEADER_SLOTS + LAYER_SLOTS * plan.layers.length);
    this.fillStatic();
  }

  /** The step for `plan`, or why it cannot run natively (a tensor that is not a dense f32/bf16 host tensor, or a shape that does not fit). */
  static create(lib: NativeKernels, plan: DecodeStepPlan): NativeDecodeStep | string {
    const why = unsupported(plan);
    return why ?? new NativeDecodeStep(lib, plan);
  }

  /** Byte address of a tensor's first element (0 for null). */
  private address(t: Tensor | null): number {
    if (!t) return 0;
    const size = t.dtype === 'bf16' ? 2 : 4;
    return this.lib.addressOf(t.storage.cpu!) + t.offset * size;
  }

  private putTensor(at: number, t: Tensor | null): void {
    this.table[at] = this.address(t);
    this.table[at + 1] = t ? (nativeDTypeCode(t.dtype) ?? 0) : 0;
  }

  private fillStatic(): void {
    const { plan, table } = this;
    const [rows, hidden] = plan.embedding.shape as [number, number];
    table[0] = plan.layers.length;
    table[1] = hidden;
    table[2] = plan.lmHead.weight.shape[0]!;
    table[16] = rows;
    this.putTensor(4, plan.embedding);
    this.putTensor(6, plan.normF.weight);
    table[8] = plan.normF.eps;
    this.putTensor(9, plan.lmHead.weight);
    this.putTensor(11, plan.lmHead.bias);
    for (const [i, l] of plan.layers.entries()) {
      const b = HEADER_SLOTS + i * LAYER_SLOTS;
      table[b] = KIND[l.kind];
      this.putTensor(b + 1, l.norm.weight);
      table[b + 3] = l.norm.eps;
      if (l.kind === 'mamba') {
        this.putTensor(b + 4, l.inProj.weight);
        this.putTensor(b + 6, l.outProj.weight);
        this.putTensor(b + 8, l.convWeight);
        this.putTensor(b + 10, l.convBias);
        this.putTensor(b + 12, l.dtBias);
        this.putTensor(b + 14, l.aLog);
        this.putTensor(b + 16, l.D);
        this.putTensor(b + 18, l.gatedNorm.weight);
        table[b + 20] = l.gatedNorm.eps;
        const [, heads, headDim, stateDim] = l.state.ssm.shape as [number, number, number, number];
        table[b + 23] = heads;
        table[b + 24] = headDim;
        table[b + 25] = l.groups;
        table[b + 26] = stateDim;
        table[b + 27] = l.state.conv.shape[2]!;
        table[b + 28] = l.dtLimit ? 1 : 0;
        table[b + 29] = l.dtLimit?.[0] ?? 0;
        table[b + 30] = l.dtLimit?.[1] ?? 0;
        this.putTensor(b + 31, l.inProj.bias);
        this.putTensor(b + 33, l.outProj.bias);
      } else if (l.kind === 'attention') {
        this.putTensor(b + 4, l.q.weight);
        this.putTensor(b + 6, l.k.weight);
        this.putTensor(b + 8, l.v.weight);
        this.putTensor(b + 10, l.o.weight);
        table[b + 14] = l.heads;
        table[b + 15] = l.kvHeads;
        table[b + 16] = l.headDim;
        table[b + 19] = l.scale;
        this.putTensor(b + 21, l.q.bias);
        this.putTensor(b + 23, l.k.bias);
        this.putTensor(b + 25, l.v.bias);
        this.putTensor(b + 27, l.o.bias);
      } else if (l.kind === 'moe') {
        this.putTensor(b + 4, l.router);
        this.putTensor(b + 6, l.correctionBias);
        table[b + 8] = l.router.shape[0]!;
        table[b + 9] = l.routing.topK;
        table[b + 10] = l.routing.nGroup;
        table[b + 11] = l.routing.topkGroup;
        table[b + 12] = l.routing.normTopkProb ? 1 : 0;
        table[b + 13] = l.routing.routedScalingFactor;
        this.putTensor(b + 14, l.experts.up);
        this.putTensor(b + 16, l.experts.down);
        table[b + 18] = l.experts.up.shape[1]!;
        this.putTensor(b + 19, l.shared.up.weight);
        this.putTensor(b + 21, l.shared.down.weight);
        table[b + 23] = l.shared.up.weight.shape[0]!;
        this.putTensor(b + 24, l.shared.up.bias);
        this.putTensor(b + 26, l.shared.down.bias);
      } else {
        this.putTensor(b + 4, l.up.weight);
        this.putTensor(b + 6, l.down.weight);
        table[b + 8] = l.up.weight.shape[0]!;
        this.putTensor(b + 9, l.up.bias);
        this.putTensor(b + 11, l.down.bias);
      }
    }
  }

  /**
   * Runs the step for token `tokenId` with `keys` cached positions including it (its K/V slot is
   * keys − 1), writing f32 logits [V] into `logits` (dense f32 host tensor). `keyMask` f32 [1, capacity]
   * (1 = token) or null. Updates the caches in place.
   */
  run(tokenId: number, keys: number, keyMask: Tensor | null, logits: Tensor): void {
    const { table, plan } = this;
    const vocab = table[2]!;
    const rows = table[16]!;
    if (!Number.isInteger(tokenId) || tokenId < 0 || tokenId >= rows)
      throw new Error(`NativeDecodeStep: token id ${tokenId} is outside the vocabulary (0..${rows - 1})`);
    if (logits.dtype !== 'f32' || !logits.isContiguous || logits.size !== vocab || !logits.storage.cpu)
      throw new Error(`NativeDecodeStep: logits must be a dense f32 host tensor of ${vocab} elements, got ${logits.dtype} ${formatShape(logits.shape)}`);
    table[3] = tokenId;
    table[13] = this.address(logits);
    for (const [i, l] of plan.layers.entries()) {
      const b = HEADER_SLOTS + i * LAYER_SLOTS;
      if (l.kind === 'mamba') {
        const why = stateUnsupported(l.state.conv, 'conv state') ?? stateUnsupported(l.state.ssm, 'ssm state');
        if (why) throw new Error(`NativeDecodeStep: layer ${i}: ${why}`);
        table[b + 21] = this.address(l.state.conv);
        table[b + 22] = this.address(l.state.ssm);
      } else if (l.kind === 'attention') {
        const { k, v } = l.state;
        const why = stateUnsupported(k, 'K cache') ?? stateUnsupported(v, 'V cache');
        if (why) throw new Error(`NativeDecodeStep: layer ${i}: ${why}`);
        const capacity = k.shape[2]!;
        const kvShape = [1, l.kvHeads, capacity, l.headDim];
        if ([k, v].some((t) => t.rank !== 4 || t.shape.some((d, j) => d !== kvShape[j])))
          throw new Error(
            `NativeDecodeStep: layer ${i}: the K/V caches must be ${formatShape(kvShape)}, got ${formatShape(k.shape)} and ${formatShape(v.shape)}`,
          );
        if (keys < 1 || keys > capacity) throw new Error(`NativeDecodeStep: ${keys} positions do not fit the cache's ${capacity}`);
        if (keyMask && (keyMask.dtype !== 'f32' || !keyMask.isContiguous || keyMask.size !== capacity))
          throw new Error(`NativeDecodeStep: the key mask must be dense f32 [1, ${capacity}], got ${keyMask.dtype} ${formatShape(keyMask.shape)}`);
        table[b + 12] = this.address(k);
        table[b + 13] = this.address(v);
        table[b + 17] = capacity;
        table[b + 18] = keys;
        table[b + 20] = this.address(keyMask);
      }
    }
    const lib = this.lib;
    const needed = lib.symbols.nt_decode_scratch_floats(table, lib.threads);
    // The need grows with the cached keys, one more every step: doubling keeps it to a few
    // allocations per generation instead of a fresh buffer (garbage until the GC) per step.
    if (this.scratch.length < needed) this.scratch = new Float32Array(Math.max(needed, 2 * this.scratch.length));
    table[14] = lib.addressOf(this.scratch.buffer as ArrayBuffer);
    table[15] = this.scratch.length;
    const rc = lib.symbols.nt_decode_step(table);
    if (rc === -3) throw new Error('NativeDecodeStep: a MoE layer ran short of experts to choose (its groups hold fewer than top_k)');
    if (rc !== 0) throw new Error(`NativeDecodeStep: the native step failed (code ${rc})`);
  }
}
