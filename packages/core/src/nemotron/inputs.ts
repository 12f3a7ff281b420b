/**
 * Forward inputs: token ids, embeddings, the padding mask, packed-sequence boundaries and labels,
 * given as tensors or as plain number arrays. Arrays are checked on the host (ragged rows, ids
 * outside the vocabulary, masks that are not 0/1 or whose padding is not where it can be honoured,
 * bad boundaries: errors name the field, row and column) and converted once, on the model's device.
 * Tensors are checked by shape, dtype and device only: their values are never read back.
 */
import { arange, cast, formatShape, ge, isFloat, narrow, reshape, sum, Tensor, tensor, type Device } from '@nemotron-ts/kernels';
import type { NemotronHConfig } from '../config';
import type { SequenceInfo } from './sequence';

/** Per-row values as nested arrays: one inner array per batch row. */
export type Rows = readonly (readonly number[])[];

export interface ModelInputs {
  /** i32 [B, L] token ids, or rows of ids. Exactly one of `inputIds` and `inputsEmbeds`. */
  inputIds?: Tensor | Rows;
  /** f32 or bf16 [B, L, H]: embeddings used instead of looking up `inputIds`. */
  inputsEmbeds?: Tensor;
  /** [B, L] (any dtype, or rows of 0/1): 1 = token, 0 = padding (HF's attention_mask). */
  attentionMask?: Tensor | Rows;
  /**
   * Boundaries of the documents packed into a single row (B = 1): i32 [S + 1], or an array,
   * starting at 0, non-decreasing, ending at L. Document k is positions [cu[k], cu[k+1]).
   */
  cuSeqlens?: Tensor | readonly number[];
  /** Also return every hidden state (HF's `output_hidden_states`). */
  outputHiddenStates?: boolean;
}

/** Labels value used for positions that do not count in the loss. */
export const IGNORE_INDEX = -100;

/** The inputs as tensors on the model's device (owned by the enclosing `tidy` scope). */
export interface PreparedInputs {
  readonly batch: number;
  readonly length: number;
  /** i32 [B, L], or null when embeddings were given. */
  readonly inputIds: Tensor | null;
  /** [B, L, H] given by the caller, or null. */
  readonly inputsEmbeds: Tensor | null;
  readonly sequences: SequenceInfo;
}

/**
 * Where a mask row's padding may be, so that each row's tokens give what they would alone:
 * - `'edges'`: before and/or after the tokens (left or right padding; a whole forward pass is causal,
 *   so right padding changes nothing before it). Not between tokens: Mamba's conv window and state
 *   would carry across the gap.
 * - `'left'`: only before them (a prompt that a cache continues: new tokens follow the last position).
 * - `'none'`: no padding (a later piece of a cached prompt: the padding belongs in the first).
 */
export type PaddingLayout = 'edges' | 'left' | 'none';

/** Checks and converts `inputs` for a model of `config` on `device` (array masks: padding at the row's edges only). */
export function prepareInputs(config: NemotronHConfig, device: Device, inputs: ModelInputs): PreparedInputs {
  const { inputIds, inputsEmbeds } = inputs;
  if ((inputIds === undefined) === (inputsEmbeds === undefined)) throw new Error('forward: give exactly one of inputIds and inputsEmbeds');
  let ids: Tensor | null = null;
  let batch: number;
  let length: number;
  if (inputIds !== undefined) {
    if (inputIds instanceof Tensor) {
      expectTensor('inputIds', inputIds, device, 2, 'i32');
      [batch, length] = inputIds.shape as [number, number];
      ids = inputIds;
    } else {
      const rows = checkTokenIds(inputIds, 'inputIds', config.vocabSize);
      [batch, length] = rowsShape(rows);
      ids = tensor(Int32Array.from(rows.flat()), [batch, length], { device });
    }
  } else {
    const embeds = inputsEmbeds!;
    expectTensor('inputsEmbeds', embeds, device, 3);
    if (!isFloat(embeds.dtype)) throw new Error(`forward: inputsEmbeds must be f32 or bf16, got ${embeds.dtype}`);
    [batch, length] = embeds.shape as [number, number, number];
    if (embeds.shape[2] !== config.hiddenSize) throw new Error(`forward: inputsEmbeds ${formatShape(embeds.shape)} must end in hidden_size ${config.hiddenSize}`);
  }
  if (batch < 1 || length < 1) throw new Error(`forward: the batch [${batch}, ${length}] is empty`);
  return {
    batch,
    length,
    inputIds: ids,
    inputsEmbeds: inputsEmbeds ?? null,
    sequences: {
      paddingMask: inputs.attentionMask === undefined ? null : paddingMask(inputs.attentionMask, batch, length, device),
      seqIdx: inputs.cuSeqlens === undefined ? null : seqIdxOf(inputs.cuSeqlens, batch, length, device),
    },
  };
}

/** Labels as i32 [B, L] on `device`, checked against the batch shape (-100 = ignored). */
export function prepareLabels(labels: Tensor | Rows, config: NemotronHConfig, batch: number, length: number, device: Device): Tensor {
  if (labels instanceof Tensor) {
    expectTensor('labels', labels, device, 2, 'i32');
    expectShape('labels', labels.shape, [batch, length]);
    return labels;
  }
  const rows = checkLabels(labels, 'labels', config.vocabSize);
  expectShape('labels', rowsShape(rows), [batch, length]);
  return tensor(Int32Array.from(rows.flat()), [batch, length], { device });
}

/** The mask as f32 [B, L], or null when array rows say every position is a token. */
function paddingMask(mask: Tensor | Rows, batch: number, length: number, device: Device): Tensor | null {
  if (mask instanceof Tensor) {
    expectTensor('attentionMask', mask, device, 2);
    expectShape('attentionMask', mask.shape, [batch, length]);
    return mask.dtype === 'f32' ? mask : cast(mask, 'f32');
  }
  const rows = checkAttentionMask(mask, 'attentionMask');
  expectShape('attentionMask', rowsShape(rows), [batch, length]);
  checkPaddingLayout(rows, 'forward: attentionMask', 'edges');
  if (rows.every((row) => row.every((v) => v === 1))) return null;
  return tensor(Float32Array.from(rows.flat()), [batch, length], { device });
}

/**
 * seq_idx [1, L] from cu_seqlens: `searchsorted(cu[1:], t, right=True)`, i.e. the number of
 * boundaries at or before t, so the first token of document k maps to k (spec §4).
 */
function seqIdxOf(cuSeqlens: Tensor | readonly number[], batch: number, length: number, device: Device): Tensor {
  if (batch !== 1) throw new Error(`forward: cuSeqlens describes one packed row, but the batch has ${batch} rows`);
  if (cuSeqlens instanceof Tensor) {
    expectTensor('cuSeqlens', cuSeqlens, device, 1, 'i32');
    const bounds = cuSeqlens.shape[0]!;
    if (bounds < 2) throw new Error(`forward: cuSeqlens ${formatShape(cuSeqlens.shape)} needs at least two boundaries`);
    // On the device (no readback): count, for each position, the end boundaries cu[1:] ≤ t.
    const ends = reshape(cast(narrow(cuSeqlens, 0, 1, bounds - 1), 'f32'), [1, bounds - 1]);
    const positions = reshape(arange(0, length, 1, { dtype: 'f32', device }), [length, 1]);
    return reshape(cast(sum(ge(positions, ends), -1), 'i32'), [1, length]);
  }
  const cu = checkCuSeqlens(cuSeqlens, 'cuSeqlens', length);
  const idx = new Int32Array(length);
  for (let doc = 0; doc + 1 < cu.length; doc++) idx.fill(doc, cu[doc]!, cu[doc + 1]!);
  return tensor(idx, [1, length], { device });
}

// ---------------------------------------------------------------------------------------------
// Host checks, shared with the CLI (which passes its file and JSON field as `name`).

/** Token id rows: rectangular, integers in [0, vocabSize). */
export function checkTokenIds(value: unknown, name: string, vocabSize: number): Rows {
  return checkIntegerRows(value, name, (v) => (v >= 0 && v < vocabSize ? null : `is outside the vocabulary [0, ${vocabSize})`));
}

/** Label rows: rectangular, integers in [0, vocabSize) or -100 (ignored). */
export function checkLabels(value: unknown, name: string, vocabSize: number): Rows {
  return checkIntegerRows(value, name, (v) => (v === IGNORE_INDEX || (v >= 0 && v < vocabSize) ? null : `is neither ${IGNORE_INDEX} nor in the vocabulary [0, ${vocabSize})`));
}

/** Attention mask rows: rectangular, 0 or 1. */
export function checkAttentionMask(value: unknown, name: string): Rows {
  return checkIntegerRows(value, name, (v) => (v === 0 || v === 1 ? null : 'must be 0 or 1'));
}

/** Fails naming the row and position when a mask row's padding is not where `layout` allows (see `PaddingLayout`). */
export function checkPaddingLayout(rows: Rows, name: string, layout: PaddingLayout): void {
  rows.forEach((row, b) => {
    const first = row.indexOf(1);
    if (first < 0) {
      if (layout === 'none' && row.length > 0) throw new Error(`${name}[${b}] is all padding: padding belongs in the first piece of a cached prompt`);
      return;
    }
    const last = row.lastIndexOf(1);
    const gap = row.indexOf(0, first);
    if (gap >= 0 && gap < last) throw new Error(`${name}[${b}] has padding between tokens (position ${gap}): pad only before the tokens (left padding)${layout === 'edges' ? ' or after them' : ''}, so the row gives what its tokens alone would`);
    if (layout === 'edges') return;
    if (last < row.length - 1) throw new Error(`${name}[${b}] is right-padded (position ${last + 1} is padding after the last token): generation and cached prompts need left padding (HF's padding_side='left')`);
    if (layout === 'none' && first > 0) throw new Error(`${name}[${b}] has padding (position 0) after cached positions: padding belongs in the first piece of a cached prompt`);
  });
}

/** cu_seqlens of a packed row of `length` positions: integers from 0, non-decreasing, to `length`. */
export function checkCuSeqlens(value: unknown, name: string, length: number): readonly number[] {
  if (!Array.isArray(value) || value.length < 2) throw new Error(`${name}: expected a list of at least two boundaries, got ${describe(value)}`);
  value.forEach((v, i) => {
    if (!Number.isSafeInteger(v)) throw new Error(`${name}[${i}]: expected an integer, got ${describe(v)}`);
    if (i > 0 && v < value[i - 1]) throw new Error(`${name}[${i}] = ${v} is below the previous boundary ${value[i - 1]}`);
  });
  if (value[0] !== 0) throw new Error(`${name}[0] must be 0, got ${value[0]}`);
  if (value.at(-1) !== length) throw new Error(`${name} must end at the row length ${length}, got ${value.at(-1)}`);
  return value as number[];
}

/** [rows, columns] of checked rows. */
export function rowsShape(rows: Rows): [number, number] {
  return [rows.length, rows[0]?.length ?? 0];
}

function checkIntegerRows(value: unknown, name: string, problem: (v: number) => string | null): Rows {
  if (!Array.isArray(value) || value.length === 0) throw new Error(`${name}: expected a non-empty list of rows, got ${describe(value)}`);
  let width = -1;
  value.forEach((row: unknown, b) => {
    if (!Array.isArray(row)) throw new Error(`${name}[${b}]: expected a list of integers, got ${describe(row)}`);
    if (width < 0) width = row.length;
    else if (row.length !== width) throw new Error(`${name}: row ${b} has ${row.length} entries, row 0 has ${width} (rows must have equal lengths)`);
    row.forEach((v: unknown, t) => {
      if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw new Error(`${name}[${b}][${t}]: expected an integer, got ${describe(v)}`);
      const why = problem(v);
      if (why) throw new Error(`${name}[${b}][${t}] = ${v} ${why}`);
    });
  });
  if (width === 0) throw new Error(`${name}: rows are empty`);
  return value as number[][];
}

function expectTensor(name: string, t: Tensor, device: Device, rank: number, dtype?: string): void {
  t.assertAlive(`forward: ${name}`);
  if (t.rank !== rank) throw new Error(`forward: ${name} must have ${rank} dimensions, got ${formatShape(t.shape)}`);
  if (dtype && t.dtype !== dtype) throw new Error(`forward: ${name} must be ${dtype}, got ${t.dtype}`);
  if (t.device !== device) throw new Error(`forward: ${name} is on ${t.device.kind}, the model on ${device.kind}`);
}

function expectShape(name: string, shape: readonly number[], want: readonly number[]): void {
  if (shape.length !== want.length || shape.some((d, i) => d !== want[i])) {
    throw new Error(`forward: ${name} ${formatShape(shape)} does not match the batch ${formatShape(want)}`);
  }
}

function describe(value: unknown): string {
  const text = JSON.stringify(value);
  if (text === undefined) return String(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}
