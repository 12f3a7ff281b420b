/**
 * What the parallel trainer (`nemotron train --pipeline-stages|--data-parallel|--expert-parallel`)
 * hands the workers so that its updates are the one-device {@link Trainer}'s: micro-batches in
 * the workers' form and the same weight-decay groups.
 */
import type { NemotronHForCausalLM } from '@nemotron-ts/core';
import type { ParallelBatch } from '@nemotron-ts/parallel';
import { skipsWeightDecay } from './param-groups';
import type { RowBatch } from './row-batch';

/** A trainer micro-batch for the workers: HF labels, or NeMo's pre-shifted ones with MTP (as the Trainer's loss). Packed rows: one per batch. */
export function parallelBatch(batch: RowBatch, mtp: boolean): ParallelBatch {
  if (batch.cuSeqlens && batch.inputIds.length !== 1) throw new Error(`parallelBatch: packed rows go one per micro-batch, got ${batch.inputIds.length}`);
  const cuSeqlens = batch.cuSeqlens?.[0];
  if (mtp) return { inputIds: batch.inputIds, mtpLabels: batch.labels.map((r) => [...r.slice(1), -100]), cuSeqlens };
  return { inputIds: batch.inputIds, labels: batch.labels, cuSeqlens };
}

/** The parameters the Trainer's AdamW does not decay (norms, biases, A_log, D, dt_bias), by name. */
export function noWeightDecayNames(model: NemotronHForCausalLM): string[] {
  return model
    .namedParameters()
    .filter(([name, p]) => skipsWeightDecay(name, p.rank))
    .map(([name]) => name);
}
