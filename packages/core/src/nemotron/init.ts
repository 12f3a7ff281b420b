/**
 * Weight initialisation for training from scratch: NeMo's `initialize_weights` (spec §7).
 *
 * - embeddings, lm_head, MTP eh_proj, MLP / shared-expert / routed-expert up and down, router weight:
 *   N(0, initializer_range);
 * - every RMSNorm weight: 1; Mamba `A_log` = log(1..nh), `D` = 1, `dt_bias` = softplus⁻¹(dt) with
 *   dt log-uniform in [time_step_min, time_step_max], floored at time_step_floor;
 * - Mamba in_proj / conv1d and attention q/k/v/o: PyTorch's default (kaiming-uniform, a = √5, i.e.
 *   U(±1/√fan_in); the depthwise conv's fan_in is K, and its bias is U(±1/√K) too);
 * - every other bias and the router's correction bias: 0;
 * - with `rescale_prenorm_residual`, the layers writing into the residual stream — Mamba out_proj,
 *   attention o_proj, MLP / shared / routed down_proj — are divided by √num_hidden_layers (backbone
 *   count, MTP sublayers included). HF rescales only the Mamba out_proj; we follow NeMo.
 * - MoE latent projections (spec silent; NeMo's generic linear rule): N(0, initializer_range), not rescaled.
 *
 * Each tensor draws from its own generator, seeded by (seed, tensor name): the same seed gives the
 * same weights on every device, and one tensor's values do not depend on which others exist.
 */
import { Generator, tensor } from '@nemotron-ts/kernels';
import type { NemotronHConfig } from '../config';
import type { DepthwiseConv1d } from '../nn/conv1d';
import { Embedding } from '../nn/embedding';
import type { Linear } from '../nn/linear';
import { Attention } from './attention';
import type { Module } from '../nn/module';
import { Mamba2Mixer } from './mamba2';
import { MLP } from './mlp';
import { MoE, RoutedExperts, TopkRouter } from './moe';
import { MtpSublayer } from './mtp';
import { GatedRMSNorm, RMSNorm } from './rms-norm';

export interface InitOptions {
  seed: number;
}

type Fill = (g: Generator, n: number) => Float32Array;

/**
 * What {@link initializeWeights} fills: a causal LM, or a part of one under the same tensor names
 * (a pipeline stage, whose lm_head is null when it is not the last).
 */
export interface InitTarget extends Module {
  readonly config: NemotronHConfig;
  readonly lmHead: Linear | null;
}

export function initializeWeights(model: InitTarget, options: InitOptions): void {
  const { config } = model;
  const std = config.initializerRange;
  const residualScale = config.rescalePrenormResidual ? 1 / Math.sqrt(config.numHiddenLayers) : 1;
  const done = new Set<string>();

  const set = (path: string, fill: Fill) => {
    if (done.has(path)) throw new Error(`initializeWeights: '${path}' would be initialised twice`);
    const target = model.getTensor(path);
    const g = new Generator(seedFor(options.seed, path));
    const values = fill(g, target.size);
    const t = tensor(values, target.shape, { dtype: 'f32', device: target.device });
    model.setTensor(path, t);
    t.dispose();
    done.add(path);
  };
  const normal =
    (scale = 1): Fill =>
    (g, n) =>
      generate(n, () => g.normal() * std * scale);
  const uniform =
    (bound: number, scale = 1): Fill =>
    (g, n) =>
      generate(n, () => (2 * g.uniform() - 1) * bound * scale);
  const constant =
    (value: number): Fill =>
    (_g, n) =>
      new Float32Array(n).fill(value);
  const linear = (path: string, layer: Linear, weight: Fill) => {
    set(`${path}.weight`, weight);
    if (layer.hasBias) set(`${path}.bias`, constant(0));
  };
  const defaultLinear = (path: string, layer: Linear, scale = 1) => linear(path, layer, uniform(1 / Math.sqrt(layer.inFeatures), scale));
  const at = (path: string, name: string) => (path ? `${path}.${name}` : name);

  for (const [path, m] of model.namedModules()) {
    if (m instanceof Embedding) set(at(path, 'weight'), normal());
    else if (m instanceof RMSNorm || m instanceof GatedRMSNorm) set(at(path, 'weight'), constant(1));
    else if (m instanceof Mamba2Mixer) {
      defaultLinear(at(path, 'in_proj'), m.inProj);
      initConv(at(path, 'conv1d'), m.conv1d, set, uniform);
      set(at(path, 'dt_bias'), dtBiasFill(config));
      set(at(path, 'A_log'), (_g, n) => generate(n, (i) => Math.log(i + 1)));
      set(at(path, 'D'), constant(1));
      defaultLinear(at(path, 'out_proj'), m.outProj, residualScale);
    } else if (m instanceof Attention) {
      defaultLinear(at(path, 'q_proj'), m.qProj);
      defaultLinear(at(path, 'k_proj'), m.kProj);
      defaultLinear(at(path, 'v_proj'), m.vProj);
      defaultLinear(at(path, 'o_proj'), m.oProj, residualScale);
    } else if (m instanceof MLP) {
      linear(at(path, 'up_proj'), m.upProj, normal());
      linear(at(path, 'down_proj'), m.downProj, normal(residualScale));
    } else if (m instanceof TopkRouter) {
      set(at(path, 'weight'), normal());
      set(at(path, 'e_score_correction_bias'), constant(0));
    } else if (m instanceof RoutedExperts) {
      set(at(path, 'up_proj'), normal());
      set(at(path, 'down_proj'), normal(residualScale));
    } else if (m instanceof MoE) {
      if (m.fc1LatentProj) linear(at(path, 'fc1_latent_proj'), m.fc1LatentProj, normal());
      if (m.fc2LatentProj) linear(at(path, 'fc2_latent_proj'), m.fc2LatentProj, normal());
    } else if (m instanceof MtpSublayer && m.ehProj) linear(at(path, 'eh_proj'), m.ehProj, normal());
  }
  if (model.lmHead) linear('lm_head', model.lmHead, normal());

  const left = model.namedTensors().filter((t) => !done.has(t.name));
  if (left.length) throw new Error(`initializeWeights: no rule for ${left.map((t) => t.name).join(', ')}`);
}

function initConv(path: string, conv: DepthwiseConv1d, set: (path: string, fill: Fill) => void, uniform: (bound: number) => Fill): void {
  // PyTorch Conv1d default: fan_in = in_channels / groups · K = K for a depthwise conv.
  const bound = 1 / Math.sqrt(conv.kernelSize);
  set(`${path}.weight`, uniform(bound));
  if (conv.hasBias) set(`${path}.bias`, uniform(bound));
}

/** dt log-uniform in [t_min, t_max], floored, then inverted through softplus: dt + log(-expm1(-dt)). */
function dtBiasFill(config: NemotronHConfig): Fill {
  const lo = Math.log(config.timeStepMin);
  const hi = Math.log(config.timeStepMax);
  return (g, n) =>
    generate(n, () => {
      const dt = Math.max(Math.exp(g.uniform() * (hi - lo) + lo), config.timeStepFloor);
      return dt + Math.log(-Math.expm1(-dt));
    });
}

function generate(n: number, f: (i: number) => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = f(i);
  return out;
}

/** A 32-bit seed from the user seed and a tensor name (FNV-1a). */
export function seedFor(seed: number, name: string): number {
  let h = 0x811c9dc5;
  for (const c of `${seed}:${name}`) {
    h ^= c.charCodeAt(0);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}
