/**
 * The JSON inputs of `nemotron forward` (the top level of a fixture's inputs.json has this form):
 * `{ "input_ids": [[...]], "labels"?: [[...]], "attention_mask"?: [[...]], "cu_seqlens"?: [...],
 * "mtp"?: { "input_ids", "labels", "cu_seqlens"? } }`. A flat list stands for one row. `labels` are
 * HF's (unshifted); the `mtp` block's are NeMo's pre-shifted ones (read only when asked, for the
 * MTP total loss of `--grads`). Other top-level fields are ignored. Errors name the file and field.
 */
import { stat } from 'node:fs/promises';
import { checkAttentionMask, checkCuSeqlens, checkLabels, checkPaddingLayout, checkTokenIds, rowsShape, type Rows } from '@nemotron-ts/core';
import { parseHfJson } from '@nemotron-ts/hub';

export interface ForwardFileInputs {
  readonly inputIds: Rows;
  readonly labels?: Rows;
  readonly attentionMask?: Rows;
  readonly cuSeqlens?: readonly number[];
  /** The MTP loss's inputs: pre-shifted labels (labels[t] is the target of position t). */
  readonly mtp?: { readonly inputIds: Rows; readonly labels: Rows; readonly cuSeqlens?: readonly number[] };
}

export interface ReadForwardInputsOptions {
  /** Read the `mtp` block too (default false: ignored). */
  mtp?: boolean;
}

export async function readForwardInputs(path: string, vocabSize: number, options: ReadForwardInputsOptions = {}): Promise<ForwardFileInputs> {
  const info = await stat(path).catch(() => null);
  if (!info?.isFile()) throw new Error(`${path}: no such file`);
  const json = parseHfJson(await Bun.file(path).text(), path);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${path}: expected a JSON object with "input_ids"`);
  const field = (name: string) => `${path}: ${name}`;
  if (json.input_ids === undefined) throw new Error(`${field('input_ids')}: missing`);
  const inputIds = checkTokenIds(asRows(json.input_ids), field('input_ids'), vocabSize);
  const [batch, length] = rowsShape(inputIds);
  const sameShape = (name: string, rows: Rows): Rows => {
    const [b, l] = rowsShape(rows);
    if (b !== batch || l !== length) throw new Error(`${field(name)}: shape [${b}, ${l}] does not match input_ids [${batch}, ${length}]`);
    return rows;
  };
  const out: { -readonly [K in keyof ForwardFileInputs]: ForwardFileInputs[K] } = { inputIds };
  if (json.labels !== undefined && json.labels !== null) out.labels = sameShape('labels', checkLabels(asRows(json.labels), field('labels'), vocabSize));
  if (json.attention_mask !== undefined && json.attention_mask !== null) {
    out.attentionMask = sameShape('attention_mask', checkAttentionMask(asRows(json.attention_mask), field('attention_mask')));
    checkPaddingLayout(out.attentionMask, field('attention_mask'), 'edges');
  }
  if (json.cu_seqlens !== undefined && json.cu_seqlens !== null) {
    if (batch !== 1) throw new Error(`${field('cu_seqlens')}: describes one packed row, but input_ids has ${batch} rows`);
    out.cuSeqlens = checkCuSeqlens(json.cu_seqlens, field('cu_seqlens'), length);
  }
  const mtp = json.mtp;
  if (options.mtp && mtp !== undefined && mtp !== null) {
    if (typeof mtp !== 'object' || Array.isArray(mtp)) throw new Error(`${field('mtp')}: expected an object with "input_ids" and "labels"`);
    const block = mtp as Record<string, unknown>;
    if (block.input_ids === undefined) throw new Error(`${field('mtp.input_ids')}: missing`);
    if (block.labels === undefined) throw new Error(`${field('mtp.labels')}: missing (pre-shifted: labels[t] is the target of position t)`);
    const ids = checkTokenIds(asRows(block.input_ids), field('mtp.input_ids'), vocabSize);
    const [b, l] = rowsShape(ids);
    const labels = checkLabels(asRows(block.labels), field('mtp.labels'), vocabSize);
    const [lb, ll] = rowsShape(labels);
    if (lb !== b || ll !== l) throw new Error(`${field('mtp.labels')}: shape [${lb}, ${ll}] does not match mtp.input_ids [${b}, ${l}]`);
    let cuSeqlens: readonly number[] | undefined;
    if (block.cu_seqlens !== undefined && block.cu_seqlens !== null) {
      if (b !== 1) throw new Error(`${field('mtp.cu_seqlens')}: describes one packed row, but mtp.input_ids has ${b} rows`);
      cuSeqlens = checkCuSeqlens(block.cu_seqlens, field('mtp.cu_seqlens'), l);
    }
    out.mtp = { inputIds: ids, labels, ...(cuSeqlens ? { cuSeqlens } : {}) };
  }
  return out;
}

/** A flat list of numbers is one row. */
function asRows(value: unknown): unknown {
  return Array.isArray(value) && value.length > 0 && value.every((v) => typeof v === 'number') ? [value] : value;
}
