/** Host-side batches: rows of ids, masks and labels, cut into microbatches and shards. */
import { checkAttentionMask, checkLabels, checkTokenIds, IGNORE_INDEX, rowsShape, type NemotronHConfig, type Rows } from '@nemotron-ts/core';
import { HostTensor } from './host-tensor';

export interface ParallelBatch {
  /** Token id rows [B][L]. */
  readonly inputIds: Rows;
  /** Left-padding mask rows (1 = token). */
  readonly attentionMask?: Rows;
  /** Packed-row boundaries (B = 1). */
  readonly cuSeqlens?: readonly number[];
  /** HF labels (unshifted; shifted inside the loss), -100 = ignored. */
  readonly labels?: Rows;
  /** NeMo's pre-shifted labels: trains the main and MTP losses (forwardMtp's convention). */
  readonly mtpLabels?: Rows;
}

/** Checks a batch against the config; returns [B, L]. */
export function checkBatch(config: NemotronHConfig, batch: ParallelBatch): [number, number] {
  const ids = checkTokenIds(batch.inputIds, 'inputIds', config.vocabSize);
  const [rows, length] = rowsShape(ids);
  const same = (name: string, r: Rows) => {
    const [b, l] = rowsShape(r);
    if (b !== rows || l !== length) throw new Error(`${name} [${b}, ${l}] does not match inputIds [${rows}, ${length}]`);
  };
  if (batch.attentionMask) same('attentionMask', checkAttentionMask(batch.attentionMask, 'attentionMask'));
  if (batch.labels) same('labels', checkLabels(batch.labels, 'labels', config.vocabSize));
  if (batch.mtpLabels) same('mtpLabels', checkLabels(batch.mtpLabels, 'mtpLabels', config.vocabSize));
  if (batch.labels && batch.mtpLabels) throw new Error('give labels (HF) or mtpLabels (NeMo, pre-shifted), not both');
  if (batch.cuSeqlens && rows !== 1) throw new Error(`cuSeqlens describes one packed row, but the batch has ${rows} rows`);
  return [rows, length];
}

/** The number of targets the batch loss averages over (HF: labels[t ≥ 1]; MTP: every label). */
export function targetCount(batch: ParallelBatch): number {
  if (batch.mtpLabels) return batch.mtpLabels.reduce((n, row) => n + row.filter((v) => v !== IGNORE_INDEX).length, 0);
  if (batch.labels) return batch.labels.reduce((n, row) => n + row.slice(1).filter((v) => v !== IGNORE_INDEX).length, 0);
  return 0;
}

/** Rows [start, start + count) of the batch. */
export function sliceBatch(batch: ParallelBatch, start: number, count: number): ParallelBatch {
  const cut = (r: Rows | undefined) => r?.slice(start, start + count);
  return {
    inputIds: cut(batch.inputIds)!,
    attentionMask: cut(batch.attentionMask),
    cuSeqlens: batch.cuSeqlens,
    labels: cut(batch.labels),
    mtpLabels: cut(batch.mtpLabels),
  };
}

/** Rows as an i32 host tensor [B, L]. */
export function rowsTensor(rows: Rows): HostTensor {
  const [b, l] = rowsShape(rows);
  return HostTensor.fromI32(Int32Array.from(rows.flat()), [b, l]);
}

/** Concatenates f32 host tensors along axis 0. */
export function concatRows(parts: readonly HostTensor[]): HostTensor {
  const total = parts.reduce((n, p) => n + p.data.length, 0);
  const out = new Float32Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p.toFloat32(), at);
    at += p.data.length;
  }
  const rows = parts.reduce((n, p) => n + p.shape[0]!, 0);
  return HostTensor.fromF32(out, [rows, ...parts[0]!.shape.slice(1)]);
}
