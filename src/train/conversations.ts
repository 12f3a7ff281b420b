/**
 * Chat fine-tuning data: a `.jsonl` file of `{"messages": [{"role": …, "content": …}, …]}` lines,
 * rendered through the checkpoint's chat template. Only the assistant's tokens are targets (TRL's
 * assistant-only loss): each assistant turn's span is what rendering the conversation up to and
 * including that turn adds to rendering it up to the turn's generation prompt. Spans are encoded
 * piece by piece, so every token belongs wholly to one side.
 */
import type { ChatMessage, HfTokenizer } from '@nemotron-ts/hub';
import { DataError, jsonlLines } from './documents';

/** One encoded conversation: ids and HF labels (the id on assistant tokens, -100 elsewhere). */
export interface EncodedConversation {
  readonly ids: number[];
  readonly labels: number[];
}

/** True when the first non-blank line of a .jsonl text holds "messages" (a chat file). */
export function isChatJsonl(text: string): boolean {
  const first = text.split('\n').find((l) => l.trim() !== '');
  if (first === undefined) return false;
  try {
    const value = JSON.parse(first) as unknown;
    return typeof value === 'object' && value !== null && 'messages' in value;
  } catch {
    return false;
  }
}

/** The conversations of a chat .jsonl text; errors name `path` and the line. */
export function parseConversations(text: string, path: string): { messages: ChatMessage[]; where: string }[] {
  const out: { messages: ChatMessage[]; where: string }[] = [];
  for (const { value, where } of jsonlLines(text, path)) {
    const messages = (value as { messages?: unknown } | null)?.messages;
    if (!Array.isArray(messages) || messages.length === 0)
      throw new DataError(`${where}: expected {"messages": [{"role": …, "content": …}, …]} with at least one message`);
    messages.forEach((m: unknown, j) => {
      const role = (m as { role?: unknown } | null)?.role;
      if (typeof m !== 'object' || m === null || typeof role !== 'string') throw new DataError(`${where}: messages[${j}] needs a string "role"`);
    });
    if (!messages.some((m: ChatMessage) => m.role === 'assistant')) throw new DataError(`${where}: no assistant message, so nothing to train on`);
    out.push({ messages: messages as ChatMessage[], where });
  }
  if (out.length === 0) throw new DataError(`${path}: no conversations (every line is blank)`);
  return out;
}

/** Renders and encodes one conversation, marking the assistant's tokens as targets. */
export function encodeConversation(messages: readonly ChatMessage[], tokenizer: HfTokenizer, where: string): EncodedConversation {
  let full: string;
  try {
    full = tokenizer.applyChatTemplate(messages);
  } catch (e) {
    throw new DataError(`${where}: the chat template failed (${(e as Error).message})`);
  }
  // Spans [start, end) of the rendered text that are the assistant's.
  const spans: [number, number][] = [];
  messages.forEach((m, i) => {
    if (m.role !== 'assistant') return;
    const prompt = tokenizer.applyChatTemplate(messages.slice(0, i), { addGenerationPrompt: true });
    const turn = tokenizer.applyChatTemplate(messages.slice(0, i + 1));
    if (!turn.startsWith(prompt) || !full.startsWith(turn)) {
      throw new DataError(
        `${where}: the chat template renders message ${i} differently inside the whole conversation than after its prefix (it rewrites earlier turns), so the assistant's tokens cannot be located`,
      );
    }
    spans.push([prompt.length, turn.length]);
  });
  const ids: number[] = [];
  const labels: number[] = [];
  const push = (text: string, target: boolean) => {
    if (text === '') return;
    for (const id of tokenizer.encode(text, { addSpecialTokens: false })) {
      ids.push(id);
      labels.push(target ? id : -100);
    }
  };
  let at = 0;
  for (const [start, end] of spans) {
    push(full.slice(at, start), false);
    push(full.slice(start, end), true);
    at = end;
  }
  push(full.slice(at), false);
  return { ids, labels };
}
