/**
 * Incremental detokenization for streaming: decodes a row's generated ids as they grow and hands out
 * only the text not given before. Text that ends in an incomplete UTF-8 sequence (decoded as
 * U+FFFD) is held back until the next token completes it.
 */

/** What generation needs of a tokenizer: ids → text. */
export interface TokenDecoder {
  decode(ids: readonly number[], options?: { skipSpecialTokens?: boolean }): string;
}

export class TextStream {
  private readonly ids: number[] = [];
  private emitted = '';

  constructor(
    private readonly tokenizer: TokenDecoder,
    private readonly skipSpecialTokens = true,
  ) {}

  /** The whole text so far (including a held-back tail). */
  get text(): string {
    return this.tokenizer.decode(this.ids, { skipSpecialTokens: this.skipSpecialTokens });
  }

  /** Appends `id` and returns the new text it completes ('' while a character is incomplete). */
  push(id: number): string {
    this.ids.push(id);
    const text = this.text;
    if (text.endsWith('\uFFFD') || !text.startsWith(this.emitted)) return '';
    const delta = text.slice(this.emitted.length);
    this.emitted = text;
    return delta;
  }

  /** Text still held back (an incomplete character at the end), given out at the end of a stream. */
  flush(): string {
    const text = this.text;
    const delta = text.startsWith(this.emitted) ? text.slice(this.emitted.length) : '';
    this.emitted = text;
    return delta;
  }
}
