/**
 * The trainer's data path without a model: EOS-separated tokenization, overlapping blocks, the
 * seeded per-epoch order, the held-out split, and the weight-decay rule.
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTokenizer } from '@nemotron-ts/hub';
import { ensureTinyModel } from './support/tiny-model';
import { BlockSampler, cutBlocks, loadTrainingData, readDocuments, skipsWeightDecay, tokenizeDocuments } from '../src/train';

const scratch = await mkdtemp(join(tmpdir(), 'nemotron-train-data-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));
const tokenizer = await loadTokenizer(await ensureTinyModel(join(scratch, 'tiny')));
const BOS = 257;
const EOS = 258;

describe('training data', () => {
  test('documents are tokenized with BOS (as the config says) and separated by EOS', () => {
    expect(tokenizeDocuments(['ab', 'c'], tokenizer)).toEqual([BOS, 97, 98, EOS, BOS, 99, EOS]);
  });

  test('blocks overlap by one token, so every adjacent pair is a target once', () => {
    const stream = Array.from({ length: 11 }, (_, i) => i);
    expect(cutBlocks(stream, 4, 'x').map((b) => [...b])).toEqual([
      [0, 1, 2, 3],
      [3, 4, 5, 6],
      [6, 7, 8, 9],
    ]);
    expect(() => cutBlocks(stream, 1, 'x')).toThrow('seq-len must be an integer ≥ 2, got 1');
    expect(() => cutBlocks([1, 2], 4, 'data.txt')).toThrow('data.txt: 2 tokens, fewer than one row of seq-len 4');
  });

  test('the order is a permutation per epoch, fixed by the seed, different across epochs and seeds', () => {
    const blocks = Array.from({ length: 9 }, (_, i) => Int32Array.of(i));
    const order = (seed: number, from: number, n: number) => new BlockSampler(blocks, seed).rows(from, n).map((r) => r[0]!);
    const first = order(1, 0, 9);
    expect([...first].sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    expect(order(1, 0, 9)).toEqual(first);
    expect(order(1, 9, 9)).not.toEqual(first);
    expect(order(2, 0, 9)).not.toEqual(first);
    // Any position can be read directly: that is what resuming relies on.
    const sampler = new BlockSampler(blocks, 1);
    const straight = sampler.rows(0, 20).map((r) => r[0]);
    expect(new BlockSampler(blocks, 1).rows(13, 7).map((r) => r[0])).toEqual(straight.slice(13));
  });

  test('the held-out split is the tail of the stream; an eval file replaces it', async () => {
    const path = join(scratch, 'text.txt');
    await writeFile(path, 'abcdefghij'.repeat(8));
    const options = { dataPath: path, seqLen: 9, seed: 0, vocabSize: 264 };
    const all = await loadTrainingData(tokenizer, { ...options, holdOut: false });
    expect(all.eval).toBeNull();
    const split = await loadTrainingData(tokenizer, { ...options, holdOut: true, evalFraction: 0.2 });
    expect(split.train.blocks.length + split.eval!.length).toBe(all.train.blocks.length);
    expect(split.eval!.map((b) => [...b])).toEqual(all.train.blocks.slice(split.train.blocks.length).map((b) => [...b]));
    const evalPath = join(scratch, 'eval.jsonl');
    await writeFile(evalPath, JSON.stringify({ text: 'zyxwvutsrq' }));
    const withFile = await loadTrainingData(tokenizer, { ...options, holdOut: true, evalDataPath: evalPath });
    expect(withFile.train.blocks.length).toBe(all.train.blocks.length);
    expect(withFile.eval!.length).toBe(1);
    await expect(loadTrainingData(tokenizer, { ...options, seqLen: 60, holdOut: true })).rejects.toThrow(
      '1 row of seq-len 60, too few to hold out evaluation rows',
    );
    await expect(loadTrainingData(tokenizer, { ...options, holdOut: false, vocabSize: 100 })).rejects.toThrow(
      `${path}: token id ${BOS} is outside the model's vocabulary (100)`,
    );
  });

  test('bad files name the file (and line)', async () => {
    const empty = join(scratch, 'empty.jsonl');
    await writeFile(empty, '\n{"text": ""}\n');
    await expect(readDocuments(empty)).rejects.toThrow(`${empty}: no documents`);
    const list = join(scratch, 'list.jsonl');
    await writeFile(list, '["text"]\n');
    await expect(readDocuments(list)).rejects.toThrow(`${list}:1: expected an object {"text": "…"}`);
    const binary = join(scratch, 'binary.txt');
    await writeFile(binary, Uint8Array.of(0xff, 0xfe, 0x41));
    await expect(readDocuments(binary)).rejects.toThrow(`${binary}: not valid UTF-8`);
    const csv = join(scratch, 'data.csv');
    await writeFile(csv, 'a,b');
    await expect(readDocuments(csv)).rejects.toThrow(`${csv}: expected a .txt or .jsonl file`);
  });

  test('weight decay skips norms, biases, A_log, D and dt_bias', () => {
    expect(skipsWeightDecay('model.layers.0.mixer.in_proj.weight', 2)).toBe(false);
    expect(skipsWeightDecay('model.layers.5.mixer.experts.up_proj', 3)).toBe(false);
    expect(skipsWeightDecay('model.embeddings.weight', 2)).toBe(false);
    for (const name of [
      'model.norm_f.weight',
      'model.layers.0.mixer.conv1d.bias',
      'model.layers.0.mixer.A_log',
      'model.layers.0.mixer.D',
      'model.layers.0.mixer.dt_bias',
    ]) {
      expect(skipsWeightDecay(name, 1)).toBe(true);
    }
    // By name, whatever the rank.
    expect(skipsWeightDecay('model.layers.0.mixer.A_log', 2)).toBe(true);
    expect(skipsWeightDecay('x.bias', 2)).toBe(true);
  });
});
