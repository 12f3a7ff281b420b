/**
 * Names what a failed weight allocation was for: a config with a size typed too large fails on
 * one tensor (above WebGPU's maxBufferSize, or beyond host memory), and the error should point at
 * the config fields that sized it, not only at the tensor's element count.
 */
import { OutOfMemoryError } from '@nemotron-ts/kernels';
import type { LayerKind, NemotronHConfig } from '../config';

/** Runs `build`; an out-of-memory error is rethrown prefixed with `what`. */
export function allocating<T>(what: string, build: () => T): T {
  try {
    return build();
  } catch (e) {
    if (e instanceof OutOfMemoryError) throw new OutOfMemoryError(`${what}: ${e.message}`, { cause: e });
    throw e;
  }
}

/** The config fields that size a mixer's weights, with their values. */
export function mixerSizes(kind: LayerKind, c: NemotronHConfig): string {
  switch (kind) {
    case 'mamba':
      return `mamba_num_heads ${c.mambaNumHeads} × mamba_head_dim ${c.mambaHeadDim}, n_groups ${c.nGroups} × ssm_state_size ${c.ssmStateSize}, hidden_size ${c.hiddenSize}`;
    case 'attention':
      return `num_attention_heads ${c.numAttentionHeads} × head_dim ${c.headDim}, hidden_size ${c.hiddenSize}`;
    case 'mlp':
      return `intermediate_size ${c.intermediateSize} × hidden_size ${c.hiddenSize}`;
    case 'moe':
      return `n_routed_experts ${c.nRoutedExperts} × moe_intermediate_size ${c.moeIntermediateSize} × hidden_size ${c.hiddenSize}`;
  }
}
