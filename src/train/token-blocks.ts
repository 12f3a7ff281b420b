/**
 * Documents → fixed-length rows of token ids. Each document is encoded with the checkpoint's
 * tokenizer (BOS/EOS as its config says) and ends in EOS, so documents are EOS-separated in one
 * stream; the stream is cut into blocks of `seqLen` tokens that overlap by one token (block k starts
 * at k·(seqLen − 1)), so every adjacent token pair of the stream is a training target exactly once:
 * a block's targets are its own tokens 1 … seqLen − 1 (the causal-LM shift).
 *
 * Plain blocks rather than packed rows with cuSeqlens: every row then has exactly seqLen − 1
 * targets, so micro-batch mean losses average exactly into the full-batch loss (gradient
 * accumulation is exact), and B rows run as one [B, seqLen] forward (packed rows are one document
 * set per row, B = 1). Documents attend across the EOS that separates them, as in Megatron/NeMo
 * pretraining datasets.
 */
import type { HfTokenizer } from '@nemotron-ts/hub';
import { DataError } from './documents';

/** The EOS-separated token stream of `documents`. */
export function tokenizeDocuments(documents: readonly string[], tokenizer: HfTokenizer): number[] {
  const eos = tokenizer.eosToken?.id ?? null;
  const stream: number[] = [];
  for (const doc of documents) {
    const ids = tokenizer.encode(doc);
    for (const id of ids) stream.push(id);
    if (eos !== null && ids[ids.length - 1] !== eos) stream.push(eos);
  }
  return stream;
}

/** Blocks of `seqLen` tokens overlapping by one; `source` names the data in errors. */
export function cutBlocks(stream: readonly number[], seqLen: number, source: string): Int32Array[] {
  if (!Number.isInteger(seqLen) || seqLen < 2) throw new DataError(`seq-len must be an integer ≥ 2, got ${seqLen}`);
  if (stream.length < seqLen) throw new DataError(`${source}: ${stream.length} tokens, fewer than one row of seq-len ${seqLen}`);
  const count = Math.floor((stream.length - 1) / (seqLen - 1));
  return Array.from({ length: count }, (_, k) => Int32Array.from(stream.slice(k * (seqLen - 1), k * (seqLen - 1) + seqLen)));
}

/** Checks that every id fits the model's vocabulary (a tokenizer larger than the embedding table). */
export function checkVocab(blocks: readonly Int32Array[], vocabSize: number, source: string): void {
  for (const block of blocks) {
    for (const id of block) if (id < 0 || id >= vocabSize) throw new DataError(`${source}: token id ${id} is outside the model's vocabulary (${vocabSize})`);
  }
}
