/**
 * The trainer's data: training rows (shuffled by seed) and held-out evaluation rows, either from a
 * separate file or the tail of the training rows (the last `evalFraction` of them, at least one,
 * cut before shuffling so no evaluation token is trained on).
 *
 * Three kinds of rows, by file and `pack`:
 * - text (.txt, or .jsonl of {"text"}): overlapping blocks of the EOS-separated stream
 *   (token-blocks.ts), every token a target; with `pack`, whole documents packed into rows with
 *   cu_seqlens instead (packing.ts), so no document sees another;
 * - chat (.jsonl of {"messages"}): one conversation per row, rendered with the chat template, the
 *   loss on the assistant's tokens only (conversations.ts); with `pack`, conversations packed as
 *   documents are.
 */
import type { HfTokenizer } from '@nemotron-ts/hub';
import { BlockSampler } from './block-sampler';
import { encodeConversation, isChatJsonl, parseConversations } from './conversations';
import { DataError, documentsOf, readUtf8 } from './documents';
import { packRows, padRows, type LabelledExample } from './packing';
import type { RowTargets } from './row-batch';
import { checkVocab, cutBlocks, tokenizeDocuments } from './token-blocks';

export interface TrainingDataOptions {
  /** .txt or .jsonl training file. */
  dataPath: string;
  /** Evaluation file; without it and with `holdOut`, the tail of the training data is held out. */
  evalDataPath?: string;
  /** Hold out evaluation blocks from the training data when there is no eval file. */
  holdOut: boolean;
  seqLen: number;
  seed: number;
  vocabSize: number;
  /** Share of the training blocks held out (default 0.05). */
  evalFraction?: number;
  /** Pack whole documents (or conversations) into rows with cu_seqlens (default false). */
  pack?: boolean;
}

export type TrainingDataKind = 'text' | 'chat';

export interface TrainingData {
  readonly train: BlockSampler;
  /** Evaluation rows, or null when evaluation is off. */
  readonly eval: readonly Int32Array[] | null;
  /** Per evaluation row its labels and documents (chat and packed rows), else null. */
  readonly evalTargets?: readonly RowTargets[] | null;
  readonly seqLen: number;
  /** What the rows hold (default 'text'). */
  readonly kind?: TrainingDataKind;
  /** Rows are packed documents with cu_seqlens. */
  readonly packed?: boolean;
}

interface RowSet {
  rows: Int32Array[];
  targets: RowTargets[] | null;
  kind: TrainingDataKind;
}

export async function loadTrainingData(tokenizer: HfTokenizer, options: TrainingDataOptions): Promise<TrainingData> {
  const pack = options.pack ?? false;
  const rowsOf = async (path: string): Promise<RowSet> => {
    const set = await readRows(path, tokenizer, options.seqLen, pack);
    checkVocab(set.rows, options.vocabSize, path);
    return set;
  };
  const train = await rowsOf(options.dataPath);
  let trainRows = train.rows;
  let trainTargets = train.targets;
  let evalRows: Int32Array[] | null = null;
  let evalTargets: RowTargets[] | null = null;
  if (options.evalDataPath !== undefined) {
    const held = await rowsOf(options.evalDataPath);
    if (held.kind !== train.kind) throw new DataError(`${options.evalDataPath}: holds ${held.kind} data, ${options.dataPath} ${train.kind} data`);
    evalRows = held.rows;
    evalTargets = held.targets;
  } else if (options.holdOut) {
    if (trainRows.length < 2)
      throw new DataError(
        `${options.dataPath}: ${trainRows.length} row of seq-len ${options.seqLen}, too few to hold out evaluation rows (give --eval-data or more text)`,
      );
    const held = Math.max(1, Math.round(trainRows.length * (options.evalFraction ?? 0.05)));
    const cut = trainRows.length - held;
    evalRows = trainRows.slice(cut);
    trainRows = trainRows.slice(0, cut);
    if (trainTargets) {
      evalTargets = trainTargets.slice(cut);
      trainTargets = trainTargets.slice(0, cut);
    }
  }
  return {
    train: new BlockSampler(trainRows, options.seed, trainTargets),
    eval: evalRows,
    evalTargets,
    seqLen: options.seqLen,
    kind: train.kind,
    packed: pack,
  };
}

async function readRows(path: string, tokenizer: HfTokenizer, seqLen: number, pack: boolean): Promise<RowSet> {
  if (!Number.isInteger(seqLen) || seqLen < 2) throw new DataError(`seq-len must be an integer ≥ 2, got ${seqLen}`);
  const text = await readUtf8(path);
  const padId = tokenizer.padToken?.id ?? tokenizer.eosToken?.id ?? 0;
  if (path.endsWith('.jsonl') && isChatJsonl(text)) {
    if (!tokenizer.chatTemplates) throw new DataError(`${path}: chat data needs a chat template, and the checkpoint's tokenizer has none`);
    const examples = parseConversations(text, path).map(({ messages, where }) => encodeConversation(messages, tokenizer, where));
    const { rows, targets } = pack ? packRows(examples, seqLen, padId) : padRows(examples, seqLen, padId);
    const kept = rows.map((_, i) => i).filter((i) => targets[i]!.labels.slice(1).some((v) => v !== -100));
    if (kept.length === 0) throw new DataError(`${path}: no row has an assistant token within seq-len ${seqLen}`);
    return { rows: kept.map((i) => rows[i]!), targets: kept.map((i) => targets[i]!), kind: 'chat' };
  }
  const documents = documentsOf(text, path);
  if (!pack) return { rows: cutBlocks(tokenizeDocuments(documents, tokenizer), seqLen, path), targets: null, kind: 'text' };
  const eos = tokenizer.eosToken?.id ?? null;
  const examples: LabelledExample[] = documents.map((doc) => {
    const ids = tokenizer.encode(doc);
    if (eos !== null && ids.at(-1) !== eos) ids.push(eos);
    return { ids, labels: ids };
  });
  return { ...packRows(examples, seqLen, padId), kind: 'text' };
}

/** The training rows a run saw, in a form a checkpoint keeps: their count and an FNV-1a hash of their tokens. */
export interface DataFingerprint {
  rows: number;
  fnv1a: string;
}

/** Identifies the training rows (in their unshuffled order), so a resumed run can tell it trains on the same ones. */
export function dataFingerprint(data: TrainingData): DataFingerprint {
  let hash = 0x811c9dc5;
  for (const block of data.train.blocks) {
    for (const token of block) {
      hash = Math.imul(hash ^ (token & 0xffff), 0x01000193);
      hash = Math.imul(hash ^ (token >>> 16), 0x01000193);
    }
  }
  return { rows: data.train.blocks.length, fnv1a: (hash >>> 0).toString(16).padStart(8, '0') };
}
