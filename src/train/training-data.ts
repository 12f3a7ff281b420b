/**
 * The trainer's data: training blocks (shuffled by seed) and held-out evaluation blocks, either
 * from a separate file or the tail of the training stream (the last `evalFraction` of its blocks,
 * at least one, cut before shuffling so no evaluation token is trained on).
 */
import type { HfTokenizer } from '@nemotron-ts/hub';
import { BlockSampler } from './block-sampler';
import { DataError, readDocuments } from './documents';
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
}

export interface TrainingData {
  readonly train: BlockSampler;
  /** Evaluation rows, or null when evaluation is off. */
  readonly eval: readonly Int32Array[] | null;
  readonly seqLen: number;
}

export async function loadTrainingData(tokenizer: HfTokenizer, options: TrainingDataOptions): Promise<TrainingData> {
  const blocksOf = async (path: string) => {
    const blocks = cutBlocks(tokenizeDocuments(await readDocuments(path), tokenizer), options.seqLen, path);
    checkVocab(blocks, options.vocabSize, path);
    return blocks;
  };
  let trainBlocks = await blocksOf(options.dataPath);
  let evalBlocks: Int32Array[] | null = null;
  if (options.evalDataPath !== undefined) evalBlocks = await blocksOf(options.evalDataPath);
  else if (options.holdOut) {
    if (trainBlocks.length < 2) throw new DataError(`${options.dataPath}: ${trainBlocks.length} row of seq-len ${options.seqLen}, too few to hold out evaluation rows (give --eval-data or more text)`);
    const held = Math.max(1, Math.round(trainBlocks.length * (options.evalFraction ?? 0.05)));
    evalBlocks = trainBlocks.slice(trainBlocks.length - held);
    trainBlocks = trainBlocks.slice(0, trainBlocks.length - held);
  }
  return { train: new BlockSampler(trainBlocks, options.seed), eval: evalBlocks, seqLen: options.seqLen };
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
