/**
 * The Mamba2 mixer (spec §2.3). Names and shapes follow HF's `NemotronHMamba2Mixer`, except
 * that the depthwise conv weight is [conv_dim, K] (HF: [conv_dim, 1, K]).
 *
 * `A_log`, `dt_bias` and `D` are kept in f32 whatever dtype the model is cast to: NeMo / Megatron /
 * mamba_ssm semantics (spec §2.3, §10 item 4). HF rounds them to bf16 when it loads in bf16; we do not.
 */
import {
  add,
  causalConv1d,
  clamp,
  copyInto,
  exp,
  dispose,
  mambaDecodeStep,
  mul,
  narrow,
  neg,
  reshape,
  softplus,
  ssdScan,
  tidy,
  type Tensor,
} from '@nemotron-ts/kernels';
import type { NemotronHConfig } from '../config';
import { DepthwiseConv1d } from '../nn/conv1d';
import { Linear } from '../nn/linear';
import { Module, type Placement } from '../nn/module';
import type { CachedDecode, CachedPrefill, MambaLayerCache } from './cache';
import { GatedRMSNorm, type RMSNorm } from './rms-norm';
import { PLAIN_SEQUENCES, type SequenceInfo } from './sequence';

export class Mamba2Mixer extends Module {
  readonly kind = 'mamba' as const;
  /** in_proj: hidden → z | x | B | C | dt (d_in_proj). */
  readonly inProj: Linear;
  /** Depthwise causal conv over x | B | C (conv_dim channels). */
  readonly conv1d: DepthwiseConv1d;
  /** Gated RMSNorm over d_inner in n_groups groups. */
  readonly norm: GatedRMSNorm;
  /** out_proj: d_inner → hidden. */
  readonly outProj: Linear;

  constructor(
    readonly config: NemotronHConfig,
    placement: Placement = {},
  ) {
    super();
    const { hiddenSize: H, dInner, convDim, dInProj, mambaNumHeads: nh } = config;
    this.inProj = this.registerModule('in_proj', new Linear(H, dInProj, { ...placement, bias: config.useBias }));
    this.conv1d = this.registerModule('conv1d', new DepthwiseConv1d(convDim, config.convKernel, { ...placement, bias: config.useConvBias }));
    this.createParameter('dt_bias', [nh], placement, { keepF32: true });
    this.createParameter('A_log', [nh], placement, { keepF32: true });
    this.createParameter('D', [nh], placement, { keepF32: true });
    this.norm = this.registerModule('norm', new GatedRMSNorm(dInner, config.groupSize, config.layerNormEpsilon, placement));
    this.outProj = this.registerModule('out_proj', new Linear(dInner, H, { ...placement, bias: config.useBias }));
  }

  /** [nh] f32: added to the raw time step before softplus. */
  get dtBias(): Tensor {
    return this.slotTensor('dt_bias');
  }

  /** [nh] f32: A = -exp(A_log). */
  get aLog(): Tensor {
    return this.slotTensor('A_log');
  }

  /** [nh] f32: per-head skip coefficient. */
  get d(): Tensor {
    return this.slotTensor('D');
  }

  /**
   * x [B, L, H] → f32 [B, L, H]. in_proj splits into z | xBC | dt; the depthwise causal conv + SiLU
   * runs over x | B | C; dt = softplus(dt_raw + dt_bias), clamped only when time_step_limit is not
   * (0, ∞); A = −exp(A_log); the SSD scan adds D·x; the gated norm gates first, then normalises per
   * group; out_proj.
   *
   * in_proj and the conv run per part (z, x, B, C, dt) on row slices of their weights: the same
   * math as one projection split afterwards (the conv is depthwise), but every part comes out dense,
   * so no strided copy is needed before the conv, the scan or the gated norm.
   *
   * With a cache, the conv and the scan continue from the cached window and state (when positions
   * are cached already) and leave theirs in it, so a prompt prefilled in pieces gives the result of
   * one call.
   */
  forward(x: Tensor, sequences: SequenceInfo = PLAIN_SEQUENCES, cached?: CachedPrefill): Tensor {
    return tidy(() => {
      const { dInner, convDim, mambaNumHeads: nh, mambaHeadDim: p, nGroups: g, ssmStateSize: n, chunkSize, clampsDt, timeStepLimit } = this.config;
      const [batch, length] = x.shape as [number, number, number];
      const mask = sequences.paddingMask ? reshape(sequences.paddingMask, [batch, length, 1]) : null;
      // Padding, before in_proj: HF and NeMo agree.
      const u = mask ? mul(x, mask) : x;
      const project = this.inProj.rows(u);
      const { weight: convW, bias: convB } = this.conv1d;
      const entry = cached?.entry as MambaLayerCache | undefined;
      // A fresh cache holds zeros: equal to no initial state, which the kernels take for free.
      const continues = entry !== undefined && cached!.past > 0;
      // Each intermediate is freed once its last consumer has run, not when the scope ends: a
      // 512-position piece of bench-small held ~22 MiB of them at once, ~10 MiB this way. (A node
      // the autograd records keeps its own reference to what its backward needs.)
      const convolve = (start: number, size: number) => {
        const input = project(dInner + start, size);
        const { y, finalState } = causalConv1d(input, narrow(convW, 0, start, size), convB ? narrow(convB, 0, start, size) : null, {
          activation: 'silu',
          seqIdx: sequences.seqIdx ?? undefined,
          initialState: continues ? narrow(entry.conv, 1, start, size) : undefined,
        });
        input.dispose();
        if (entry) copyInto(narrow(entry.conv, 1, start, size), finalState);
        finalState.dispose();
        // Padding, after the conv + SiLU: HF only (NeMo masks before in_proj alone). The fixtures
        // follow HF, so a pad adds nothing to the SSM state although silu(conv bias) ≠ 0 there.
        if (!mask) return y;
        const masked = mul(y, mask);
        y.dispose();
        return masked;
      };
      const parts = [convolve(0, dInner), convolve(dInner, g * n), convolve(dInner + g * n, g * n)];
      const xs = reshape(parts[0]!, [batch, length, nh, p]);
      const B = reshape(parts[1]!, [batch, length, g, n]);
      const C = reshape(parts[2]!, [batch, length, g, n]);

      const dtSoft = softplus(add(project(dInner + convDim, nh), this.dtBias));
      const dt = clampsDt ? clamp(dtSoft, timeStepLimit[0], timeStepLimit[1]) : dtSoft;
      const A = neg(exp(this.aLog));
      const scan = ssdScan(xs, dt, A, B, C, { chunkSize, D: this.d, seqIdx: sequences.seqIdx, initialState: continues ? entry.ssm : null });
      dispose([parts, xs, B, C]);
      if (entry) copyInto(entry.ssm, scan.finalState);
      scan.finalState.dispose();
      const y = reshape(scan.y, [batch, length, dInner]);
      scan.y.dispose();
      // z is projected last, after the scan's inputs are gone: it is live only until the gated norm.
      const z = project(0, dInner);
      const normed = this.norm.forward(y, z);
      dispose([y, z]);
      return this.outProj.forward(normed);
    });
  }

  /**
   * One decode step with the enclosing block's norm and residual fused in (the block asks for it,
   * see `NemotronHBlock.decode`; spec §3.3): h [B, 1, H] → f32 `h + mamba(norm(h))`, in three
   * kernels: in_proj with the block's norm fused in; the mixer's
   * core (`mambaDecodeStep`: conv update, dt_bias + softplus + time_step_limit clamp,
   * A = −exp(A_log), state update, gate, grouped norm); out_proj adding the residual. NeMo's decode
   * kernel (selective_state_update) never clamps dt; we clamp exactly as the prefill does, so
   * decoding equals recomputing (the two differ only for a finite time_step_limit).
   */
  decodeWithResidual(h: Tensor, norm: RMSNorm, cached: CachedDecode): Tensor {
    return tidy(() => {
      const { hiddenSize: H, nGroups: g, clampsDt, timeStepLimit } = this.config;
      const batch = h.shape[0]!;
      const entry = cached.entry as MambaLayerCache;
      const hs = reshape(h, [batch, H]);
      const zxbcdt = this.inProj.fused(hs, { norm: { weight: norm.weight, eps: norm.eps } });
      const gated = mambaDecodeStep(zxbcdt, entry.conv, entry.ssm, {
        convWeight: this.conv1d.weight,
        convBias: this.conv1d.bias,
        dtBias: this.dtBias,
        aLog: this.aLog,
        D: this.d,
        normWeight: this.norm.weight,
        groups: g,
        eps: this.norm.eps,
        dtLimit: clampsDt ? timeStepLimit : null,
      });
      return reshape(this.outProj.fused(gated, { residual: hs }), [batch, 1, H]);
    });
  }
}
