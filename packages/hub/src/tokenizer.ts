/**
 * HF tokenizers from a checkpoint folder: tokenizer.json run by `@huggingface/tokenizers`, with
 * tokenizer_config.json's special tokens, BOS/EOS rules and chat template.
 *
 * BOS/EOS follow transformers: when tokenizer_config.json sets `add_bos_token` or `add_eos_token`,
 * those flags alone decide which of BOS and EOS wrap an encoding; otherwise tokenizer.json's
 * post-processor does.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Tokenizer } from '@huggingface/tokenizers';
import { ChatTemplates, type ChatMessage, type ChatTemplateOptions, type TemplateSpecialTokens } from './chat';
import { CheckpointFormatError } from './errors';
import { parseHfJson, type JsonObject } from './hf-json';
import { tokenizersLibrary } from './libraries';

/** The tokenizer itself (vocabulary, merges, pre-/post-processing), run by `@huggingface/tokenizers`. */
export const TOKENIZER_FILE = 'tokenizer.json';
/** Special tokens, BOS/EOS flags and the chat template. */
export const TOKENIZER_CONFIG_FILE = 'tokenizer_config.json';
/** Older home of the special tokens; tokenizer_config.json wins. */
export const SPECIAL_TOKENS_MAP_FILE = 'special_tokens_map.json';
/** The chat template as its own file (newer transformers); wins over tokenizer_config.json. */
export const CHAT_TEMPLATE_FILE = 'chat_template.jinja';

const SPECIAL_ROLES = ['bos_token', 'eos_token', 'unk_token', 'pad_token'] as const;
type SpecialRole = (typeof SPECIAL_ROLES)[number];

/** A special token's text and id. */
export interface SpecialToken {
  readonly content: string;
  readonly id: number;
}

/** Options of {@link HfTokenizer.encode}. */
export interface EncodeOptions {
  /** Add BOS/EOS (or the post-processor's tokens) as the tokenizer config says (default true). */
  addSpecialTokens?: boolean;
}

/** Options of {@link HfTokenizer.decode}. */
export interface DecodeOptions {
  /** Leave out special tokens (default false). */
  skipSpecialTokens?: boolean;
}

/** A loaded HF tokenizer: encode, decode, special tokens and chat templates. */
export class HfTokenizer {
  private readonly tokenizer: Tokenizer;
  private readonly special: Readonly<Record<SpecialRole, SpecialToken | null>>;
  private readonly addBos: boolean | undefined;
  private readonly addEos: boolean | undefined;
  private vocabSizeCache: number | undefined;

  /**
   * Builds a tokenizer from parsed files. `folder` names the source in errors. Prefer
   * {@link loadTokenizer}.
   */
  constructor(
    tokenizerJson: JsonObject,
    config: JsonObject,
    readonly chatTemplates: ChatTemplates | null,
    readonly folder: string,
  ) {
    const configFile = join(folder, TOKENIZER_CONFIG_FILE);
    const tokens: Partial<Record<SpecialRole, string>> = {};
    for (const role of SPECIAL_ROLES) {
      const content = specialTokenContent(config[role], configFile, role);
      if (content !== null) tokens[role] = content;
    }
    try {
      this.tokenizer = new (tokenizersLibrary().Tokenizer)(tokenizerJson, {
        ...config,
        ...tokens,
        // transformers no longer cleans up spaces by default; byte-level round trips need it off.
        clean_up_tokenization_spaces: config.clean_up_tokenization_spaces === true,
      });
    } catch (e) {
      throw new CheckpointFormatError(join(folder, TOKENIZER_FILE), undefined, `is not a tokenizer this library can run: ${(e as Error).message}`);
    }
    const special = {} as Record<SpecialRole, SpecialToken | null>;
    for (const role of SPECIAL_ROLES) {
      const content = tokens[role];
      if (content === undefined) {
        special[role] = null;
        continue;
      }
      const id = this.tokenizer.token_to_id(content);
      if (id === undefined) throw new CheckpointFormatError(configFile, role, `${JSON.stringify(content)} is not in the vocabulary of ${TOKENIZER_FILE}`);
      special[role] = { content, id };
    }
    this.special = special;
    this.addBos = flag(config.add_bos_token, configFile, 'add_bos_token');
    this.addEos = flag(config.add_eos_token, configFile, 'add_eos_token');
    if (this.addBos && !special.bos_token) throw new CheckpointFormatError(configFile, 'add_bos_token', 'is true but no bos_token is set');
    if (this.addEos && !special.eos_token) throw new CheckpointFormatError(configFile, 'add_eos_token', 'is true but no eos_token is set');
  }

  get bosToken(): SpecialToken | null {
    return this.special.bos_token;
  }

  get eosToken(): SpecialToken | null {
    return this.special.eos_token;
  }

  get padToken(): SpecialToken | null {
    return this.special.pad_token;
  }

  get unkToken(): SpecialToken | null {
    return this.special.unk_token;
  }

  /** Every token marked special in tokenizer.json's added tokens, by content. */
  get specialTokens(): ReadonlyMap<string, number> {
    const out = new Map<string, number>();
    for (const [id, token] of this.tokenizer.get_added_tokens_decoder()) if (token.special) out.set(token.content, id);
    return out;
  }

  /** One more than the largest token id (vocabulary plus added tokens). */
  get vocabSize(): number {
    if (this.vocabSizeCache === undefined) {
      let max = -1;
      for (const id of this.tokenizer.get_vocab(true).values()) max = Math.max(max, id);
      this.vocabSizeCache = max + 1;
    }
    return this.vocabSizeCache;
  }

  tokenToId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  /** Text → token ids. */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const addSpecial = options.addSpecialTokens ?? true;
    if (this.addBos === undefined && this.addEos === undefined) return this.tokenizer.encode(text, { add_special_tokens: addSpecial }).ids;
    const ids = this.tokenizer.encode(text, { add_special_tokens: false }).ids;
    if (!addSpecial) return ids;
    return [...(this.addBos ? [this.special.bos_token!.id] : []), ...ids, ...(this.addEos ? [this.special.eos_token!.id] : [])];
  }

  /**
   * Token ids → text. An id the tokenizer does not know (a model's vocab_size is often padded past
   * the tokenizer's) decodes to the visible placeholder `<unk:ID>`, never an error: the known runs
   * around it are decoded as usual. Ids that are not non-negative integers are an error.
   */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    if (ids.length === 0) return '';
    for (const id of ids) if (!Number.isInteger(id) || id < 0) throw new RangeError(`decode(): token id ${id} is not a non-negative integer`);
    const skip = options.skipSpecialTokens ?? false;
    const known = (id: number) => this.tokenizer.id_to_token(id) !== undefined;
    if (ids.every(known)) return this.tokenizer.decode([...ids], { skip_special_tokens: skip });
    let text = '';
    let run: number[] = [];
    const flush = () => {
      if (run.length) text += this.tokenizer.decode(run, { skip_special_tokens: skip });
      run = [];
    };
    for (const id of ids) {
      if (known(id)) run.push(id);
      else {
        flush();
        text += unknownTokenText(id);
      }
    }
    flush();
    return text;
  }

  /** Renders a conversation with the tokenizer's chat template. */
  applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    if (!this.chatTemplates) throw new Error(`${this.folder} has no chat template (no chat_template in ${TOKENIZER_CONFIG_FILE}, no ${CHAT_TEMPLATE_FILE})`);
    const tokens: Partial<Record<SpecialRole, string>> = {};
    for (const role of SPECIAL_ROLES) if (this.special[role]) tokens[role] = this.special[role]!.content;
    return this.chatTemplates.render(messages, options, tokens as TemplateSpecialTokens);
  }

  /** Renders a conversation and encodes it; the template supplies any BOS, so none is added. */
  encodeChat(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): number[] {
    return this.encode(this.applyChatTemplate(messages, options), { addSpecialTokens: false });
  }
}

function specialTokenContent(value: unknown, file: string, field: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') return (value as { content: string }).content;
  throw new CheckpointFormatError(file, field, 'must be a string or an object with a "content" string');
}

function flag(value: unknown, file: string, field: string): boolean | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'boolean') throw new CheckpointFormatError(file, field, `must be true or false, got ${JSON.stringify(value)}`);
  return value;
}

async function readJsonObject(path: string): Promise<JsonObject | null> {
  if (
    !(await stat(path).then(
      (s) => s.isFile(),
      () => false,
    ))
  )
    return null;
  const value = parseHfJson(await Bun.file(path).text(), path);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new CheckpointFormatError(path, undefined, 'must hold a JSON object');
  return value;
}

/**
 * Loads the tokenizer in `folder`: tokenizer.json (required), tokenizer_config.json and
 * special_tokens_map.json (optional; the config's tokens win), and the chat template
 * (chat_template.jinja if present, else the config's `chat_template`).
 */
export async function loadTokenizer(folder: string): Promise<HfTokenizer> {
  const tokenizerPath = join(folder, TOKENIZER_FILE);
  const tokenizerJson = await readJsonObject(tokenizerPath);
  if (!tokenizerJson) throw new CheckpointFormatError(tokenizerPath, undefined, 'does not exist: the folder has no tokenizer');
  const config = (await readJsonObject(join(folder, TOKENIZER_CONFIG_FILE))) ?? {};
  const specialMap = (await readJsonObject(join(folder, SPECIAL_TOKENS_MAP_FILE))) ?? {};
  for (const role of SPECIAL_ROLES) if (config[role] === undefined && specialMap[role] !== undefined) config[role] = specialMap[role]!;
  const jinjaPath = join(folder, CHAT_TEMPLATE_FILE);
  const jinja = await stat(jinjaPath).then(
    (s) => s.isFile(),
    () => false,
  );
  const templates = jinja
    ? new ChatTemplates(new Map([['default', await Bun.file(jinjaPath).text()]]), jinjaPath)
    : ChatTemplates.fromConfigValue(config.chat_template, join(folder, TOKENIZER_CONFIG_FILE));
  return new HfTokenizer(tokenizerJson, config, templates, folder);
}

/** What {@link HfTokenizer.decode} writes for an id outside the tokenizer's vocabulary. */
export function unknownTokenText(id: number): string {
  return `<unk:${id}>`;
}
