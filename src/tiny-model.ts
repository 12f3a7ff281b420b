/**
 * The tiny demo model: where the trained one ships (`models/tiny-nemotron`, built by
 * `bun run make-tiny`) and its byte-level tokenizer (byte tokens 0–255, then the special tokens,
 * with a ChatML template). Tests build an untrained model of the same shape with
 * test/support/tiny-model.ts.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** The trained demo model shipped in the repository (built by `bun run make-tiny`, scripts/make-tiny.ts). */
export const TINY_TRAINED_DIR = join(import.meta.dir, '..', 'models', 'tiny-nemotron');

/** Byte tokens 0–255 (GPT-2's printable map), then the special tokens. */
const SPECIAL = ['<pad>', '<s>', '</s>', '<|im_start|>', '<|im_end|>'] as const;
export const specialId = (token: (typeof SPECIAL)[number]): number => 256 + SPECIAL.indexOf(token);

const CHAT_TEMPLATE =
  '{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}' +
  '{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}';

/** GPT-2's reversible byte → printable character map. */
function byteSymbols(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let extra = 0;
  return Array.from({ length: 256 }, (_, b) => String.fromCodePoint(printable(b) ? b : 256 + extra++));
}

function tokenizerJson(): Record<string, unknown> {
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
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(byteSymbols().map((s, i) => [s, i])),
      merges: [],
    },
  };
}

/** Writes the byte-level tokenizer (tokenizer.json, tokenizer_config.json with the chat template) into `dir`. */
export async function writeTokenizerFiles(dir: string): Promise<void> {
  await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(tokenizerJson()));
  await writeFile(
    join(dir, 'tokenizer_config.json'),
    JSON.stringify({ bos_token: '<s>', eos_token: '</s>', pad_token: '<pad>', add_bos_token: true, chat_template: CHAT_TEMPLATE }, null, 2),
  );
}
