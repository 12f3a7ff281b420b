/**
 * The trainer's chat and packed data modes: assistant-only labels found through the chat template,
 * documents packed into rows with cu_seqlens (no target across a boundary), and the trainer's loss
 * on packed rows equal to the documents trained alone.
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTokenizer } from '@nemotron-ts/hub';
import { getCpuDevice, noGrad } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../src/pretrained';
import { ensureTinyModel } from './support/tiny-model';
import { encodeConversation, loadTrainingData, packRows, padRows, parseConversations, rowBatch, Trainer } from '../src/train';

const scratch = await mkdtemp(join(tmpdir(), 'nemotron-train-modes-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));
const modelDir = await ensureTinyModel(join(scratch, 'tiny'));
const tokenizer = await loadTokenizer(modelDir);
const EOS = 258;

const chat = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'Hi?' },
  { role: 'assistant', content: 'Hello.' },
  { role: 'user', content: 'Name?' },
  { role: 'assistant', content: 'Tiny.' },
];

describe('chat data', () => {
  test('labels are the assistant turns (content and end of turn) and nothing else', () => {
    const { ids, labels } = encodeConversation(chat, tokenizer, 'x');
    expect(tokenizer.decode(ids)).toBe(tokenizer.applyChatTemplate(chat));
    expect(ids).toEqual(tokenizer.encodeChat(chat));
    // The targets, read as runs of consecutive labelled tokens.
    const runs: number[][] = [];
    labels.forEach((v, i) => {
      if (v === -100) return;
      expect(v).toBe(ids[i]!);
      if (i > 0 && labels[i - 1] !== -100) runs.at(-1)!.push(v);
      else runs.push([v]);
    });
    expect(runs.map((r) => tokenizer.decode(r))).toEqual(['Hello.<|im_end|>\n', 'Tiny.<|im_end|>\n']);
  });

  test('a template that rewrites earlier turns, bad lines and conversations without an answer fail naming the line', () => {
    expect(() => parseConversations('{"messages": []}', 'c.jsonl')).toThrow('c.jsonl:1: expected {"messages"');
    expect(() => parseConversations('\n{"messages": [{"role": "user", "content": "a"}]}', 'c.jsonl')).toThrow('c.jsonl:2: no assistant message');
    expect(() => parseConversations('{"messages": [{"content": "a"}]}', 'c.jsonl')).toThrow('c.jsonl:1: messages[0] needs a string "role"');
    const rewriting = Object.create(tokenizer) as typeof tokenizer;
    rewriting.applyChatTemplate = (messages, options) => (messages.length > 2 ? 'REWRITTEN ' : '') + tokenizer.applyChatTemplate(messages, options);
    expect(() => encodeConversation(chat, rewriting, 'c.jsonl:4')).toThrow('c.jsonl:4: the chat template renders message 2 differently');
  });

  test('rows: one conversation per row, right-padded with no targets, or packed with cu_seqlens', async () => {
    const path = join(scratch, 'chat.jsonl');
    const lines = [
      chat,
      [
        { role: 'user', content: 'Why?' },
        { role: 'assistant', content: 'Because.' },
      ],
    ].map((messages) => JSON.stringify({ messages }));
    await writeFile(path, lines.join('\n'));
    const options = { dataPath: path, seqLen: 256, seed: 0, vocabSize: 264, holdOut: false };
    const plain = await loadTrainingData(tokenizer, options);
    expect(plain.kind).toBe('chat');
    expect(plain.train.blocks.length).toBe(2);
    const encoded = encodeConversation(chat, tokenizer, 'x');
    const first = plain.train.blocks.findIndex((b) => b[1] === encoded.ids[1] && b[encoded.ids.length - 1] === encoded.ids.at(-1));
    const row = plain.train.targets![first]!;
    expect(Array.from(row.labels.slice(0, encoded.ids.length))).toEqual(encoded.labels);
    expect(Array.from(row.labels.slice(encoded.ids.length)).every((v) => v === -100)).toBe(true);
    expect(row.cuSeqlens).toBeNull();

    const packed = await loadTrainingData(tokenizer, { ...options, pack: true });
    expect(packed.train.blocks.length).toBe(1);
    const cu = packed.train.targets![0]!.cuSeqlens!;
    expect(cu.length).toBe(4); // two conversations and the padding after them
    const batch = packed.train.batch(0, 1);
    expect(batch.cuSeqlens).toEqual([[...cu]]);
    for (const start of cu.slice(0, -1)) expect(batch.labels[0]![start]).toBe(-100);
  });
});

describe('packed rows', () => {
  test('documents fill rows in order; long ones are split; the rest of a row is padding', () => {
    const doc = (n: number, base: number) => ({ ids: Array.from({ length: n }, (_, i) => base + i), labels: Array.from({ length: n }, (_, i) => base + i) });
    const { rows, targets } = packRows([doc(3, 10), doc(4, 20), doc(9, 30), doc(2, 50)], 8, 0);
    expect(rows.map((r) => [...r])).toEqual([
      [10, 11, 12, 20, 21, 22, 23, 0],
      [30, 31, 32, 33, 34, 35, 36, 37],
      [38, 50, 51, 0, 0, 0, 0, 0],
    ]);
    expect(targets.map((t) => t.cuSeqlens)).toEqual([
      [0, 3, 7, 8],
      [0, 8],
      [0, 1, 3, 8],
    ]);
    expect([...targets[0]!.labels]).toEqual([-100, 11, 12, -100, 21, 22, 23, -100]);
    expect([...targets[2]!.labels]).toEqual([-100, -100, 51, -100, -100, -100, -100, -100]);
    const padded = padRows([doc(3, 10), doc(10, 30)], 5, 7);
    expect(padded.rows.map((r) => [...r])).toEqual([
      [10, 11, 12, 7, 7],
      [30, 31, 32, 33, 34],
    ]);
    expect(rowBatch(padded.rows, padded.targets).targetCount).toBe(2 + 4);
  });

  test('the trainer loss on packed rows is the documents trained alone (no state crosses a boundary)', async () => {
    const path = join(scratch, 'docs.jsonl');
    const texts = ['the cat sat.', 'a dog ran far away.', 'birds sing.', 'fish swim deep down.'];
    await writeFile(path, texts.map((text) => JSON.stringify({ text })).join('\n'));
    const data = await loadTrainingData(tokenizer, { dataPath: path, seqLen: 48, seed: 0, vocabSize: 264, holdOut: false, pack: true });
    expect(data.packed).toBe(true);
    const model = await NemotronHForCausalLM.fromPretrained(modelDir, { device: getCpuDevice() });
    const trainer = new Trainer(model, data, { steps: 1, batchSize: data.train.blocks.length, lr: 1e-3, outDir: null });
    // Every document alone: Σ CE over its own next-token pairs.
    let sum = 0;
    let count = 0;
    for (const text of texts) {
      const ids = [...tokenizer.encode(text), EOS];
      const out = noGrad(() => model.eval().forward({ inputIds: [ids], labels: [ids] }));
      sum += (await out.loss!.item()) * (ids.length - 1);
      count += ids.length - 1;
      out.dispose();
    }
    model.train();
    const [log] = [await trainer.trainStep()];
    expect(log!.loss).toBeCloseTo(sum / count, 5);
    expect(log!.peak_bytes).toBeGreaterThan(0);
    trainer.dispose();
    model.dispose();
  });
});
