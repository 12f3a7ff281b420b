/**
 * The model as a `DecodeStepPlan` for the native CPU backend's whole-step decode kernel
 * (`NativeDecodeStep`: one native call per token instead of the blocks' separate ops). Only where it
 * applies: a `cpu:native` device, one sequence, Mamba / attention / MLP / MoE layers (MoE without
 * latent projections: they would need two more phases), no active adapter; anything else keeps the
 * per-op path (which is also what the kernel is tested against).
 * `NEMOTRON_FUSED_DECODE=0` turns it off (to compare the two paths).
 */
import { NativeDecodeStep, type DecodeLayerPlan, type DecodeProjection } from '@nemotron-ts/kernels';
import type { Linear } from '../nn/linear';
import type { AttentionLayerCache, MambaLayerCache, NemotronHybridCache } from './cache';
import type { NemotronHForCausalLM } from './causal-lm';

function projection(linear: Linear): DecodeProjection | null {
  return linear.adapter?.active ? null : { weight: linear.weight, bias: linear.bias };
}

/** The whole-step native decode for `lm` with `cache`, or null when it does not apply. */
export function nativeDecodeStep(lm: NemotronHForCausalLM, cache: NemotronHybridCache): NativeDecodeStep | null {
  const device = lm.device;
  if (device.kind !== 'cpu' || !device.native || cache.batch !== 1 || process.env.NEMOTRON_FUSED_DECODE === '0') return null;
  const { model, config } = lm;
  const layers: DecodeLayerPlan[] = [];
  for (const [i, block] of [...model.layers].entries()) {
    const mixer = block.mixer;
    const norm = { weight: block.norm.weight, eps: block.norm.eps };
    const entry = cache.layer(i);
    if (mixer.kind === 'mamba') {
      const inProj = projection(mixer.inProj);
      const outProj = projection(mixer.outProj);
      if (!inProj || !outProj || entry?.kind !== 'mamba' || mixer.norm.size / mixer.norm.groupSize !== config.nGroups) return null;
      layers.push({
        kind: 'mamba',
        norm,
        inProj,
        outProj,
        convWeight: mixer.conv1d.weight,
        convBias: mixer.conv1d.bias,
        dtBias: mixer.dtBias,
        aLog: mixer.aLog,
        D: mixer.d,
        gatedNorm: { weight: mixer.norm.weight, eps: mixer.norm.eps },
        groups: config.nGroups,
        dtLimit: config.clampsDt ? config.timeStepLimit : null,
        state: entry as MambaLayerCache,
      });
    } else if (mixer.kind === 'attention') {
      const [q, k, v, o] = [mixer.qProj, mixer.kProj, mixer.vProj, mixer.oProj].map(projection);
      if (!q || !k || !v || !o || entry?.kind !== 'attention') return null;
      layers.push({
        kind: 'attention',
        norm,
        q,
        k,
        v,
        o,
        heads: config.numAttentionHeads,
        kvHeads: config.numKeyValueHeads,
        headDim: config.headDim,
        scale: config.headDim ** -0.5,
        state: entry as AttentionLayerCache,
      });
    } else if (mixer.kind === 'mlp') {
      const up = projection(mixer.upProj);
      const down = projection(mixer.downProj);
      if (!up || !down) return null;
      layers.push({ kind: 'mlp', norm, up, down });
    } else if (mixer.kind === 'moe') {
      const up = projection(mixer.sharedExperts.upProj);
      const down = projection(mixer.sharedExperts.downProj);
      if (!up || !down || mixer.fc1LatentProj || mixer.fc2LatentProj) return null;
      layers.push({
        kind: 'moe',
        norm,
        router: mixer.gate.weight,
        correctionBias: mixer.gate.eScoreCorrectionBias,
        routing: {
          topK: config.numExpertsPerTok,
          nGroup: config.nGroup,
          topkGroup: config.topkGroup,
          normTopkProb: config.normTopkProb,
          routedScalingFactor: config.routedScalingFactor,
        },
        experts: { up: mixer.experts.upProj, down: mixer.experts.downProj },
        shared: { up, down },
      });
    } else {
      return null;
    }
  }
  const lmHead = projection(lm.lmHead);
  if (!lmHead || lm.lmHead.outFeatures !== config.vocabSize) return null;
  const step = NativeDecodeStep.create(device.native, {
    embedding: model.embeddings.weight,
    layers,
    normF: { weight: model.normF.weight, eps: model.normF.eps },
    lmHead,
  });
  return typeof step === 'string' ? null : step;
}
