/** Tokenizer from HF files (byte-level BPE made here), BOS/EOS rules, decoding, chat templates. */
import { describe, expect, test } from 'bun:test';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointFormatError, loadTokenizer } from '../src';
import { tempDir } from './support/temp-dir';
import { MERGES, specialId, tinyVocab, writeTinyTokenizer } from './support/tiny-tokenizer';

const vocab = tinyVocab();
const id = (token: string) => vocab.get(token)!;
const BOS = specialId('<s>');
const EOS = specialId('</s>');

async function tokenizerWith(config: Record<string, unknown> = {}) {
  const dir = tempDir('tok');
  writeTinyTokenizer(dir, config);
  return loadTokenizer(dir);
}

describe('encode / decode', () => {
  test('merges apply, and the post-processor adds BOS by default', async () => {
    const tok = await tokenizerWith();
    expect(tok.encode('the theme', { addSpecialTokens: false })).toEqual([id('the'), id('Ġthe'), id('m'), id('e')]);
    expect(tok.encode('the')).toEqual([BOS, id('the')]);
    expect(tok.vocabSize).toBe(256 + MERGES.length + 5);
    expect(tok.bosToken).toEqual({ content: '<s>', id: BOS });
    expect(tok.eosToken).toEqual({ content: '</s>', id: EOS });
    expect(tok.padToken?.id).toBe(specialId('<pad>'));
    expect(tok.unkToken).toBeNull();
    expect(tok.specialTokens.get('<|im_end|>')).toBe(specialId('<|im_end|>'));
  });

  test('unicode text round trips byte for byte', async () => {
    const tok = await tokenizerWith();
    for (const text of [
      'héllo wörld',
      'emoji 🤖🧪 and 日本語のテキスト',
      ' leading  and trailing \n\t',
      'a , b . c',
      '',
      `Ω≈ç√∫˜µ≤≥÷ ${String.fromCodePoint(0x1f600)}`,
    ]) {
      const ids = tok.encode(text, { addSpecialTokens: false });
      expect(tok.decode(ids)).toBe(text);
    }
  });

  test('special tokens in text are single tokens; decode can skip them', async () => {
    const tok = await tokenizerWith();
    const ids = tok.encode('<|im_start|>hello<|im_end|>', { addSpecialTokens: false });
    expect(ids[0]).toBe(specialId('<|im_start|>'));
    expect(ids.at(-1)).toBe(specialId('<|im_end|>'));
    expect(tok.decode(ids)).toBe('<|im_start|>hello<|im_end|>');
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('hello');
    // Ids past the tokenizer (a padded vocab_size) decode to a placeholder, between decoded runs.
    expect(tok.decode([...ids, 99999, ...ids])).toBe(`<|im_start|>hello<|im_end|><unk:99999><|im_start|>hello<|im_end|>`);
    expect(tok.decode([99999], { skipSpecialTokens: true })).toBe('<unk:99999>');
    expect(() => tok.decode([1, -1])).toThrow('token id -1 is not a non-negative integer');
    expect(() => tok.decode([1.5])).toThrow('token id 1.5 is not a non-negative integer');
  });

  test('add_bos_token / add_eos_token in tokenizer_config.json decide BOS and EOS', async () => {
    const noBos = await tokenizerWith({ add_bos_token: false });
    expect(noBos.encode('the')).toEqual([id('the')]);
    const both = await tokenizerWith({ add_bos_token: true, add_eos_token: true });
    expect(both.encode('the')).toEqual([BOS, id('the'), EOS]);
    expect(both.encode('the', { addSpecialTokens: false })).toEqual([id('the')]);
    const eosOnly = await tokenizerWith({ add_bos_token: false, add_eos_token: true });
    expect(eosOnly.encode('the')).toEqual([id('the'), EOS]);
  });

  test('bad tokenizer files name the file and field', async () => {
    await expect(tokenizerWith({ bos_token: '<nope>' })).rejects.toThrow(
      'tokenizer_config.json: bos_token: "<nope>" is not in the vocabulary of tokenizer.json',
    );
    await expect(tokenizerWith({ add_bos_token: 'yes' })).rejects.toThrow('tokenizer_config.json: add_bos_token: must be true or false');
    await expect(tokenizerWith({ eos_token: 5 })).rejects.toThrow(CheckpointFormatError);
    await expect(loadTokenizer(tempDir('empty'))).rejects.toThrow('tokenizer.json: does not exist');
  });
});

describe('chat templates', () => {
  const messages = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hi ✓' },
  ];

  test('renders the expected prompt, with and without the generation prompt', async () => {
    const tok = await tokenizerWith();
    expect(tok.applyChatTemplate(messages)).toBe('<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi ✓<|im_end|>\n');
    expect(tok.applyChatTemplate(messages, { addGenerationPrompt: true })).toBe(
      '<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi ✓<|im_end|>\n<|im_start|>assistant\n',
    );
  });

  test('tools reach the template; encodeChat adds no second BOS', async () => {
    const tok = await tokenizerWith();
    const tools = [{ type: 'function', function: { name: 'add', parameters: { type: 'object' } } }];
    const text = tok.applyChatTemplate([{ role: 'user', content: 'x' }], { tools });
    expect(text).toStartWith('<s><|im_start|>system\nTools: [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]<|im_end|>\n');
    const ids = tok.encodeChat([{ role: 'user', content: 'x' }], { addGenerationPrompt: true });
    expect(ids.filter((i) => i === BOS)).toEqual([BOS]);
    expect(ids[0]).toBe(BOS);
    expect(tok.decode(ids)).toBe(tok.applyChatTemplate([{ role: 'user', content: 'x' }], { addGenerationPrompt: true }));
  });

  test('raise_exception in a template becomes a clear error', async () => {
    const tok = await tokenizerWith();
    expect(() => tok.applyChatTemplate([{ role: 'robot', content: 'x' }])).toThrow(
      /chat template 'default' of .*tokenizer_config\.json failed: .*unknown role robot/,
    );
  });

  test('chat_template.jinja wins over the config; named templates; no template', async () => {
    const dir = tempDir('tok');
    writeTinyTokenizer(dir, {
      chat_template: [
        { name: 'default', template: 'D{{ messages | length }}' },
        { name: 'tool_use', template: 'T{{ tools | length }}' },
      ],
    });
    const named = await loadTokenizer(dir);
    expect(named.applyChatTemplate(messages)).toBe('D2');
    expect(named.applyChatTemplate(messages, { tools: [{}, {}, {}] })).toBe('T3');
    expect(named.applyChatTemplate(messages, { templateName: 'default', tools: [{}] })).toBe('D2');
    expect(() => named.applyChatTemplate(messages, { templateName: 'rag' })).toThrow("has no chat template named 'rag' (it has: default, tool_use)");
    writeFileSync(join(dir, 'chat_template.jinja'), '{{ eos_token }}|{{ messages[1].content }}|{{ enable_thinking }}');
    expect((await loadTokenizer(dir)).applyChatTemplate(messages, { variables: { enable_thinking: false } })).toBe('</s>|Hi ✓|false');
    const none = await tokenizerWith({ chat_template: null });
    expect(() => none.applyChatTemplate(messages)).toThrow('has no chat template');
    const broken = await tokenizerWith({ chat_template: '{% for %}' });
    expect(() => broken.applyChatTemplate(messages)).toThrow('tokenizer_config.json: chat_template: does not parse');
    // An unclosed block makes the parser fail internally ("tokens[current].type"): the error says what happened.
    writeFileSync(join(dir, 'chat_template.jinja'), '{% if messages %}hi');
    const unclosed = await loadTokenizer(dir);
    expect(() => unclosed.applyChatTemplate(messages)).toThrow(
      `${join(dir, 'chat_template.jinja')}: chat_template: does not parse: unexpected end of the template (an unclosed {% … %} block or {{ … }} expression?)`,
    );
  });
});
