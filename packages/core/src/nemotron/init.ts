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
import { bytesPerElement, f32ToBf16Bits, Generator, tensor, toBf16, type Tensor } from '@nemotron-ts/kernels';
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

/** Writes `out.length` values of a tensor from element `start` on (called in order, one generator per tensor). */
type Fill = (g: Generator, out: Float32Array, start: number) => void;

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
    if (target.isContiguous && target.storage.length === target.size && target.dtype !== 'i32' && target.dtype !== 'u32') {
      // Written in place a chunk at a time, in the slot's dtype: no whole-tensor host array and no
      // second device tensor (f32, then cast), garbage that set the peak memory of a model build.
      target.storage.invalidateDerived();
      for (let start = 0; start < target.size; start += INIT_CHUNK) {
        const chunk = (scratch ??= new Float32Array(INIT_CHUNK)).subarray(0, Math.min(INIT_CHUNK, target.size - start));
        fill(g, chunk, start);
        writeChunk(target, start, chunk);
      }
    } else {
      const values = new Float32Array(target.size);
      fill(g, values, 0);
      const t = tensor(values, target.shape, { dtype: 'f32', device: target.device });
      model.setTensor(path, t);
      t.dispose();
    }
    done.add(path);
  };
  let scratch: Float32Array | undefined;
  const normal = (scale = 1): Fill => values((g) => g.normal() * std * scale);
  const uniform = (bound: number, scale = 1): Fill => values((g) => (2 * g.uniform() - 1) * bound * scale);
  const constant =
    (value: number): Fill =>
    (_g, out) =>
      out.fill(value);
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
      set(
        at(path, 'A_log'),
        values((_g, i) => Math.log(i + 1)),
      );
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
  return values((g) => {
    const dt = Math.max(Math.exp(g.uniform() * (hi - lo) + lo), config.timeStepFloor);
    return dt + Math.log(-Math.expm1(-dt));
  });
}

/** Elements written per step: bounds the host scratch of initialisation (4 MiB). */
const INIT_CHUNK = 1 << 20;

/** A fill from a per-element rule (element `i` of the whole tensor), drawing from `g` in element order. */
function values(f: (g: Generator, i: number) => number): Fill {
  return (g, out, start) => {
    for (let j = 0; j < out.length; j++) out[j] = f(g, start + j);
  };
}

/** Writes f32 values into elements [start, start + n) of a dense, unshared tensor, converted to its dtype. */
function writeChunk(t: Tensor, start: number, chunk: Float32Array): void {
  const device = t.device;
  if (device.kind === 'webgpu') {
    device.write(t.storage, start * bytesPerElement(t.dtype), t.dtype === 'bf16' ? toBf16(chunk) : chunk);
  } else if (t.dtype === 'bf16') {
    const words = new Uint16Array(t.storage.cpu!, start * 2, chunk.length);
    for (let j = 0; j < chunk.length; j++) words[j] = f32ToBf16Bits(chunk[j]!);
  } else {
    new Float32Array(t.storage.cpu!, start * 4, chunk.length).set(chunk);
  }
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
