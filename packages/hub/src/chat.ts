/**
 * Chat templates: the Jinja templates HF tokenizers carry (`chat_template` in tokenizer_config.json,
 * or chat_template.jinja), rendered with `@huggingface/jinja` and the variables transformers passes.
 */
import type { Template } from '@huggingface/jinja';
import { CheckpointFormatError } from './errors';
import { jinjaLibrary } from './libraries';

/** One chat message. `content` is usually a string; templates may also read tool calls and more. */
export interface ChatMessage {
  role: string;
  content?: string | null | readonly Record<string, unknown>[];
  [key: string]: unknown;
}

/** Options of {@link ChatTemplates.render} and `HfTokenizer.applyChatTemplate`. */
export interface ChatTemplateOptions {
  /** Ends the prompt with the opening of an assistant turn (default false). */
  addGenerationPrompt?: boolean;
  /** Tool (function) definitions, as JSON schemas, for templates that support tools. */
  tools?: readonly Record<string, unknown>[];
  /** Retrieved documents, for templates that support them. */
  documents?: readonly Record<string, unknown>[];
  /** Which named template (default: "tool_use" when tools are given and it exists, else "default"). */
  templateName?: string;
  /** More template variables (e.g. `enable_thinking`). */
  variables?: Readonly<Record<string, unknown>>;
}

/** The special tokens a template may print, as strings. */
export type TemplateSpecialTokens = Readonly<Partial<Record<'bos_token' | 'eos_token' | 'unk_token' | 'pad_token', string>>>;

/** A tokenizer's chat templates by name ("default" for a single template). */
export class ChatTemplates {
  private readonly compiled = new Map<string, Template>();

  constructor(
    private readonly sources: ReadonlyMap<string, string>,
    /** The file the templates came from, for errors. */
    readonly file: string,
  ) {}

  /**
   * Reads templates from tokenizer_config.json's `chat_template` (a string, or a list of
   * `{name, template}`); returns null when there is none.
   */
  static fromConfigValue(value: unknown, file: string): ChatTemplates | null {
    if (value === undefined || value === null) return null;
    if (typeof value === 'string') return new ChatTemplates(new Map([['default', value]]), file);
    if (Array.isArray(value)) {
      const sources = new Map<string, string>();
      value.forEach((item: unknown, i) => {
        const { name, template } = (item ?? {}) as { name?: unknown; template?: unknown };
        if (typeof name !== 'string' || typeof template !== 'string') {
          throw new CheckpointFormatError(file, `chat_template[${i}]`, 'must be {"name": string, "template": string}');
        }
        sources.set(name, template);
      });
      return new ChatTemplates(sources, file);
    }
    throw new CheckpointFormatError(file, 'chat_template', 'must be a string or a list of named templates');
  }

  get names(): string[] {
    return [...this.sources.keys()];
  }

  /** Renders `messages` to the prompt text. */
  render(messages: readonly ChatMessage[], options: ChatTemplateOptions, specialTokens: TemplateSpecialTokens): string {
    const name = options.templateName ?? (options.tools && this.sources.has('tool_use') ? 'tool_use' : 'default');
    const template = this.template(name);
    try {
      return template.render({
        ...specialTokens,
        ...options.variables,
        messages,
        add_generation_prompt: options.addGenerationPrompt ?? false,
        ...(options.tools ? { tools: options.tools } : {}),
        ...(options.documents ? { documents: options.documents } : {}),
      });
    } catch (e) {
      throw new Error(`chat template '${name}' of ${this.file} failed: ${(e as Error).message}`);
    }
  }

  private template(name: string): Template {
    let t = this.compiled.get(name);
    if (t) return t;
    const source = this.sources.get(name);
    if (source === undefined) throw new Error(`${this.file} has no chat template named '${name}' (it has: ${this.names.join(', ')})`);
    try {
      t = new (jinjaLibrary().Template)(source);
    } catch (e) {
      // The parser reads past its last token on an unclosed block or expression and fails with an
      // internal TypeError (e.g. "tokens[current].type"): say what that means instead.
      const reason = e instanceof TypeError ? 'unexpected end of the template (an unclosed {% … %} block or {{ … }} expression?)' : (e as Error).message;
      throw new CheckpointFormatError(this.file, name === 'default' ? 'chat_template' : `chat_template '${name}'`, `does not parse: ${reason}`);
    }
    this.compiled.set(name, t);
    return t;
  }
}
