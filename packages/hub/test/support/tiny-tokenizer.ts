/**
 * A small byte-level BPE tokenizer written as HF tokenizer files: the 256 byte symbols (GPT-2's
 * byte→unicode map) as ids 0–255, a few merges, and special tokens added after them.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** GPT-2's reversible byte → printable character map. */
function byteSymbols(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let extra = 0;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : 256 + extra++));
}

export const MERGES: [string, string][] = [
  ['h', 'e'],
  ['Ġ', 't'],
  ['Ġt', 'he'],
  ['t', 'he'],
  ['l', 'l'],
  ['e', 'll'],
];

export const SPECIAL = ['<s>', '</s>', '<|im_start|>', '<|im_end|>', '<pad>'] as const;

export function tinyVocab(): Map<string, number> {
  const vocab = new Map<string, number>();
  byteSymbols().forEach((s, i) => vocab.set(s, i));
  for (const [a, b] of MERGES) vocab.set(a + b, vocab.size);
  return vocab;
}

export function specialId(token: (typeof SPECIAL)[number]): number {
  return 256 + MERGES.length + SPECIAL.indexOf(token);
}

export function tinyTokenizerJson(): Record<string, unknown> {
  const vocab = tinyVocab();
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: SPECIAL.map((content) => ({
      id: specialId(content),
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [specialId('<s>')], tokens: ['<s>'] } },
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(vocab),
      merges: MERGES.map(([a, b]) => `${a} ${b}`),
    },
  };
}

export const CHATML_TEMPLATE =
  '{{ bos_token }}{% if tools %}<|im_start|>system\nTools: {{ tools | tojson }}<|im_end|>\n{% endif %}' +
  "{% for m in messages %}{% if m.role not in ['system', 'user', 'assistant'] %}{{ raise_exception('unknown role ' + m.role) }}{% endif %}" +
  '<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}';

/** Writes tokenizer.json and tokenizer_config.json (plus `extra` config fields) into `dir`. */
export function writeTinyTokenizer(dir: string, config: Record<string, unknown> = {}): void {
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(tinyTokenizerJson()));
  writeFileSync(
    join(dir, 'tokenizer_config.json'),
    JSON.stringify({ bos_token: '<s>', eos_token: { content: '</s>', __type: 'AddedToken' }, pad_token: '<pad>', chat_template: CHATML_TEMPLATE, ...config }),
  );
}
