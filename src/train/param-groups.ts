/**
 * AdamW parameter groups for Nemotron-H. Weight decay applies to the projection and embedding
 * matrices only; it is off for every norm weight, every bias, and the Mamba parameters A_log, D and
 * dt_bias — as Megatron/NeMo do (1-D parameters and biases skip decay; the Mamba mixer marks
 * A_log, D and dt_bias `_no_weight_decay`). The spec (§7) lists the same three as the parameters
 * kept in f32. Groups are built in `namedParameters()` order so an optimizer state dict matches
 * across runs.
 */
import type { NemotronHForCausalLM } from '@nemotron-ts/core';
import type { Tensor } from '@nemotron-ts/kernels';

const NO_DECAY_NAMES = ['A_log', 'D', 'dt_bias'];

/** Whether the parameter called `name` (of rank `rank`) skips weight decay. */
export function skipsWeightDecay(name: string, rank: number): boolean {
  const last = name.slice(name.lastIndexOf('.') + 1);
  return rank < 2 || last === 'bias' || NO_DECAY_NAMES.includes(last);
}

export interface NamedGroup {
  names: string[];
  params: Tensor[];
  weightDecay: number;
}

/** [decayed matrices, everything else without decay]; `include` filters parameters (e.g. no MTP head). */
export function weightDecayGroups(model: NemotronHForCausalLM, weightDecay: number, include: (name: string) => boolean = () => true): NamedGroup[] {
  const decay: NamedGroup = { names: [], params: [], weightDecay };
  const noDecay: NamedGroup = { names: [], params: [], weightDecay: 0 };
  for (const [name, p] of model.namedParameters()) {
    if (!include(name)) continue;
    const group = skipsWeightDecay(name, p.rank) ? noDecay : decay;
    group.names.push(name);
    group.params.push(p);
  }
  return [decay, noDecay];
}
