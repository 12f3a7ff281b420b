/**
 * Forward inputs: token ids, embeddings, the padding mask, packed-sequence boundaries and labels,
 * given as tensors or as plain number arrays. Arrays are checked on the host (ragged rows, ids
 * outside the vocabulary, masks that are not 0/1 or whose padding is not where it can be honoured,
 * bad boundaries: errors name the field, row and column) and converted once, on the model's device.
 * Tensors are checked by shape, dtype and device only: their values are never read back.
 */
import { arange, cast, formatShape, ge, isFloat, mul, narrow, reshape, sum, Tensor, tensor, type Device } from '@nemotron-ts/kernels';
import type { NemotronHConfig } from '../config';
import type { SequenceInfo } from './sequence';

/** Per-row values as nested arrays: one inner array per batch row. */
export type Rows = readonly (readonly number[])[];

export interface ModelInputs {
  /**
   * i32 [B, L] token ids, or rows of ids. Exactly one of `inputIds` and `inputsEmbeds`. THD layout
   * (NeMo's packed `[T]` tokens): an i32 [T] tensor or a flat list of ids is one packed row; the
   * outputs then drop the batch dimension too ([T, V] logits, [T, H] hidden states).
   */
  inputIds?: Tensor | Rows | readonly number[];
  /** f32 or bf16 [B, L, H]: embeddings used instead of looking up `inputIds`. */
  inputsEmbeds?: Tensor;
  /** [B, L] (any dtype, or rows of 0/1): 1 = token, 0 = padding (HF's attention_mask). */
  attentionMask?: Tensor | Rows;
  /**
   * Boundaries of the documents packed into each row (NeMo's cu_seqlens, spec §4): for one row an
   * i32 [S + 1] tensor or a list; for a batch one list per row (rows may hold different numbers of
   * documents) or an i32 [B, K] tensor. Each row's list starts at 0, does not decrease and ends at
   * L; trailing entries equal to NeMo's collator padding sentinel (-1000) are dropped. Document k
   * is positions [cu[k], cu[k+1]) of its row: no attention, conv tap or SSM state crosses a boundary.
   */
  cuSeqlens?: Tensor | readonly number[] | Rows;
  /**
   * NeMo's cu_seqlens_padded (lists only, as `cuSeqlens`): where each document sits when every
   * document is padded (e.g. to a multiple for TE/CP). Document k then occupies [cup[k], cup[k+1])
   * and its cu[k+1] − cu[k] real tokens come first; the rest are padding (masked like
   * `attentionMask` zeros), and `cuSeqlens` ends at the real token count.
   */
  cuSeqlensPadded?: readonly number[] | Rows;
  /**
   * The document id of every position instead of cuSeqlens (NeMo's seq_idx): i32 [B, L] or rows; a
   * document is a maximal run of equal ids.
   */
  seqIdx?: Tensor | Rows;
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
  /** The inputs came in the THD layout ([T] ids): the outputs drop the batch dimension. */
  readonly thd: boolean;
}

/** NeMo's collators right-pad cu_seqlens vectors with this value; it is not a boundary. */
export const CU_SEQLENS_SENTINEL = -1000;

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
  let thd = false;
  if (inputIds !== undefined) {
    if (inputIds instanceof Tensor && inputIds.rank === 1) {
      expectTensor('inputIds', inputIds, device, 1, 'i32');
      thd = true;
      [batch, length] = [1, inputIds.shape[0]!];
      ids = reshape(inputIds, [1, length]);
    } else if (isFlatList(inputIds)) {
      const rows = checkTokenIds([inputIds], 'inputIds', config.vocabSize);
      thd = true;
      [batch, length] = rowsShape(rows);
      ids = tensor(Int32Array.from(rows[0]!), [1, length], { device });
    } else if (inputIds instanceof Tensor) {
      expectTensor('inputIds', inputIds, device, 2, 'i32');
      [batch, length] = inputIds.shape as [number, number];
      ids = inputIds;
    } else {
      const rows = checkTokenIds(inputIds as Rows, 'inputIds', config.vocabSize);
      [batch, length] = rowsShape(rows);
      ids = tensor(Int32Array.from(rows.flat()), [batch, length], { device });
    }
  } else {
    const embeds = inputsEmbeds!;
    expectTensor('inputsEmbeds', embeds, device, 3);
    if (!isFloat(embeds.dtype)) throw new Error(`forward: inputsEmbeds must be f32 or bf16, got ${embeds.dtype}`);
    [batch, length] = embeds.shape as [number, number, number];
    if (embeds.shape[2] !== config.hiddenSize)
      throw new Error(`forward: inputsEmbeds ${formatShape(embeds.shape)} must end in hidden_size ${config.hiddenSize}`);
  }
  if (batch < 1 || length < 1) throw new Error(`forward: the batch [${batch}, ${length}] is empty`);
  const given = [inputs.cuSeqlens, inputs.seqIdx].filter((v) => v !== undefined).length;
  if (given > 1) throw new Error('forward: give cuSeqlens or seqIdx, not both');
  if (inputs.cuSeqlensPadded !== undefined && inputs.cuSeqlens === undefined) throw new Error('forward: cuSeqlensPadded needs cuSeqlens (the real lengths)');
  let mask = inputs.attentionMask === undefined ? null : paddingMask(inputs.attentionMask, batch, length, device);
  let seqIdx: Tensor | null = null;
  if (inputs.seqIdx !== undefined) seqIdx = seqIdxTensor(inputs.seqIdx, batch, length, device);
  else if (inputs.cuSeqlens instanceof Tensor) seqIdx = seqIdxOnDevice(inputs.cuSeqlens, batch, length, device);
  else if (inputs.cuSeqlens !== undefined) {
    const layout = packedLayout(inputs.cuSeqlens, inputs.cuSeqlensPadded, batch, length);
    seqIdx = tensor(layout.seqIdx, [batch, length], { device });
    if (layout.pads) {
      const real = tensor(layout.pads, [batch, length], { device });
      mask = mask ? mul(mask, real) : real;
    }
  }
  return { batch, length, inputIds: ids, inputsEmbeds: inputsEmbeds ?? null, sequences: { paddingMask: mask, seqIdx }, thd };
}

/** Labels as i32 [B, L] on `device`, checked against the batch shape (-100 = ignored). */
export function prepareLabels(labels: Tensor | Rows | readonly number[], config: NemotronHConfig, batch: number, length: number, device: Device): Tensor {
  if (labels instanceof Tensor && labels.rank === 1) {
    expectTensor('labels', labels, device, 1, 'i32');
    expectShape('labels', [1, ...labels.shape], [batch, length]);
    return reshape(labels, [1, length]);
  }
  if (isFlatList(labels)) return prepareLabels([labels], config, batch, length, device);
  if (labels instanceof Tensor) {
    expectTensor('labels', labels, device, 2, 'i32');
    expectShape('labels', labels.shape, [batch, length]);
    return labels;
  }
  const rows = checkLabels(labels as Rows, 'labels', config.vocabSize);
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
 * seq_idx [B, L] from a cu_seqlens tensor ([K] for one row, [B, K] per row), on the device (no
 * readback): `searchsorted(cu[1:], t, right=True)`, the number of end boundaries ≤ t, so the first
 * token of document k maps to k (spec §4). Sentinel entries (negative) add the same 1 to every
 * position of their row, which changes no document boundary.
 */
function seqIdxOnDevice(cuSeqlens: Tensor, batch: number, length: number, device: Device): Tensor {
  cuSeqlens.assertAlive('forward: cuSeqlens');
  if (cuSeqlens.device !== device) throw new Error(`forward: cuSeqlens is on ${cuSeqlens.device.kind}, the model on ${device.kind}`);
  if (cuSeqlens.dtype !== 'i32') throw new Error(`forward: cuSeqlens must be i32, got ${cuSeqlens.dtype}`);
  if (cuSeqlens.rank === 1 && batch !== 1)
    throw new Error(
      `forward: cuSeqlens ${formatShape(cuSeqlens.shape)} describes one packed row, but the batch has ${batch} rows (give [B, K], one row of boundaries per batch row)`,
    );
  if (cuSeqlens.rank !== 1 && (cuSeqlens.rank !== 2 || cuSeqlens.shape[0] !== batch))
    throw new Error(`forward: cuSeqlens ${formatShape(cuSeqlens.shape)} must be [K] (one row) or [${batch}, K]`);
  const bounds = cuSeqlens.shape.at(-1)!;
  if (bounds < 2) throw new Error(`forward: cuSeqlens ${formatShape(cuSeqlens.shape)} needs at least two boundaries`);
  const ends = reshape(cast(narrow(reshape(cuSeqlens, [batch, bounds]), 1, 1, bounds - 1), 'f32'), [batch, 1, bounds - 1]);
  const positions = reshape(arange(0, length, 1, { dtype: 'f32', device }), [1, length, 1]);
  return cast(sum(ge(positions, ends), -1), 'i32');
}

/** A caller's seq_idx, checked: i32 [B, L] tensor or integer rows. */
function seqIdxTensor(value: Tensor | Rows, batch: number, length: number, device: Device): Tensor {
  if (value instanceof Tensor) {
    expectTensor('seqIdx', value, device, 2, 'i32');
    expectShape('seqIdx', value.shape, [batch, length]);
    return value;
  }
  const rows = checkIntegerRows(value, 'seqIdx', () => null);
  expectShape('seqIdx', rowsShape(rows), [batch, length]);
  return tensor(Int32Array.from(rows.flat()), [batch, length], { device });
}

/**
 * Host seq_idx (and, with cu_seqlens_padded, which positions are real tokens: 1, or padding: 0)
 * from per-row boundaries.
 */
export function packedLayout(
  cuSeqlens: readonly number[] | Rows,
  padded: readonly number[] | Rows | undefined,
  batch: number,
  length: number,
): { seqIdx: Int32Array; pads: Float32Array | null } {
  const perRow = (value: readonly number[] | Rows, name: string): Rows => {
    if (!Array.isArray(value) || value.length === 0) throw new Error(`${name}: expected a list of boundaries (or one list per row), got ${describe(value)}`);
    if (!Array.isArray(value[0])) {
      if (batch !== 1) throw new Error(`${name} describes one packed row, but the batch has ${batch} rows (give one list of boundaries per row)`);
      return [value as readonly number[]];
    }
    if (value.length !== batch) throw new Error(`${name} has ${value.length} rows of boundaries, the batch ${batch} rows`);
    return value as Rows;
  };
  const cuRows = perRow(cuSeqlens, 'cuSeqlens');
  const paddedRows = padded === undefined ? null : perRow(padded, 'cuSeqlensPadded');
  const seqIdx = new Int32Array(batch * length);
  const pads = paddedRows ? new Float32Array(batch * length) : null;
  cuRows.forEach((raw, b) => {
    const where = batch === 1 && !Array.isArray((cuSeqlens as unknown[])[0]) ? '' : `[${b}]`;
    if (!paddedRows) {
      const cu = checkCuSeqlens(stripSentinel(raw), `cuSeqlens${where}`, length);
      for (let doc = 0; doc + 1 < cu.length; doc++) seqIdx.fill(doc, b * length + cu[doc]!, b * length + cu[doc + 1]!);
      return;
    }
    const cup = checkCuSeqlens(stripSentinel(paddedRows[b]!), `cuSeqlensPadded${where}`, length);
    const cu = stripSentinel(raw);
    if (cu.length !== cup.length)
      throw new Error(`cuSeqlens${where} has ${cu.length} boundaries, cuSeqlensPadded${where} ${cup.length} (one per document, plus 0)`);
    checkCuSeqlens(cu, `cuSeqlens${where}`, cu.at(-1) as number);
    for (let doc = 0; doc + 1 < cup.length; doc++) {
      const real = cu[doc + 1]! - cu[doc]!;
      const room = cup[doc + 1]! - cup[doc]!;
      if (real > room) throw new Error(`cuSeqlens${where}: document ${doc} has ${real} tokens, more than its ${room} padded positions in cuSeqlensPadded`);
      seqIdx.fill(doc, b * length + cup[doc]!, b * length + cup[doc + 1]!);
      pads!.fill(1, b * length + cup[doc]!, b * length + cup[doc]! + real);
    }
  });
  return { seqIdx, pads };
}

/** The boundaries without NeMo's trailing sentinel entries. */
function stripSentinel(cu: readonly number[]): readonly number[] {
  let end = cu.length;
  while (end > 0 && cu[end - 1] === CU_SEQLENS_SENTINEL) end--;
  return cu.slice(0, end);
}

/** A flat list of numbers (the THD layout), as opposed to rows. */
function isFlatList(value: unknown): value is readonly number[] {
  return Array.isArray(value) && value.length > 0 && typeof value[0] === 'number';
}

// ---------------------------------------------------------------------------------------------
// Host checks, shared with the CLI (which passes its file and JSON field as `name`).

/** Token id rows: rectangular, integers in [0, vocabSize). */
export function checkTokenIds(value: unknown, name: string, vocabSize: number): Rows {
  return checkIntegerRows(value, name, (v) => (v >= 0 && v < vocabSize ? null : `is outside the vocabulary [0, ${vocabSize})`));
}

/** Label rows: rectangular, integers in [0, vocabSize) or -100 (ignored). */
export function checkLabels(value: unknown, name: string, vocabSize: number): Rows {
  return checkIntegerRows(value, name, (v) =>
    v === IGNORE_INDEX || (v >= 0 && v < vocabSize) ? null : `is neither ${IGNORE_INDEX} nor in the vocabulary [0, ${vocabSize})`,
  );
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
    if (gap >= 0 && gap < last)
      throw new Error(
        `${name}[${b}] has padding between tokens (position ${gap}): pad only before the tokens (left padding)${layout === 'edges' ? ' or after them' : ''}, so the row gives what its tokens alone would`,
      );
    if (layout === 'edges') return;
    if (last < row.length - 1)
      throw new Error(
        `${name}[${b}] is right-padded (position ${last + 1} is padding after the last token): generation and cached prompts need left padding (HF's padding_side='left')`,
      );
    if (layout === 'none' && first > 0)
      throw new Error(`${name}[${b}] has padding (position 0) after cached positions: padding belongs in the first piece of a cached prompt`);
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
