/**
 * Rows of `seqLen` tokens from whole examples (documents or conversations).
 *
 * `packRows` (--pack): examples are laid one after another into rows, each example its own document
 * (cu_seqlens): no attention, conv tap or SSM state crosses a boundary, and a document's first
 * token is never a target of the previous one. An example longer than a row is split into pieces
 * of `seqLen`; an example that does not fit in what is left of a row starts the next row, and the
 * rest of the row is padding (its own document, no targets).
 *
 * `padRows`: one example per row, truncated to `seqLen` or right-padded (padding is never a target
 * and, being after every token, changes nothing before it).
 */
import type { RowTargets } from './row-batch';

export interface LabelledExample {
  readonly ids: readonly number[];
  /** HF labels: the id where the token is a target, -100 elsewhere. */
  readonly labels: readonly number[];
}

export interface Rows {
  readonly rows: Int32Array[];
  readonly targets: RowTargets[];
}

export function packRows(examples: readonly LabelledExample[], seqLen: number, padId: number): Rows {
  const rows: Int32Array[] = [];
  const targets: RowTargets[] = [];
  let ids: number[] = [];
  let labels: number[] = [];
  let cu = [0];
  const flush = () => {
    if (ids.length === 0) return;
    const used = ids.length;
    if (used < seqLen) {
      ids.push(...new Array<number>(seqLen - used).fill(padId));
      labels.push(...new Array<number>(seqLen - used).fill(-100));
      cu.push(seqLen);
    }
    rows.push(Int32Array.from(ids));
    targets.push({ labels: Int32Array.from(labels), cuSeqlens: cu });
    ids = [];
    labels = [];
    cu = [0];
  };
  for (const example of examples) {
    for (let start = 0; start < example.ids.length; start += seqLen) {
      const pieceIds = example.ids.slice(start, start + seqLen);
      const pieceLabels = example.labels.slice(start, start + seqLen);
      if (ids.length + pieceIds.length > seqLen) flush();
      ids.push(...pieceIds);
      // The first token of a document is what the previous document's last position would predict.
      labels.push(-100, ...pieceLabels.slice(1));
      cu.push(ids.length);
    }
  }
  flush();
  return { rows, targets };
}

export function padRows(examples: readonly LabelledExample[], seqLen: number, padId: number): Rows {
  const rows: Int32Array[] = [];
  const targets: RowTargets[] = [];
  for (const example of examples) {
    const ids = example.ids.slice(0, seqLen);
    const labels = example.labels.slice(0, seqLen);
    const pad = seqLen - ids.length;
    rows.push(Int32Array.from([...ids, ...new Array<number>(pad).fill(padId)]));
    targets.push({ labels: Int32Array.from([...labels, ...new Array<number>(pad).fill(-100)]), cuSeqlens: null });
  }
  return { rows, targets };
}
