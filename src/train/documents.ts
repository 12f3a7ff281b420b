/**
 * Training text from a file: a UTF-8 `.txt` file is one document; a `.jsonl` file holds one
 * `{"text": "…"}` object per line (blank lines skipped). Errors name the file and the line.
 */
import { readFile, stat } from 'node:fs/promises';

export class DataError extends Error {
  override name = 'DataError';
}

/** The documents of `path` (.txt: the whole file; .jsonl: each line's "text"). */
export async function readDocuments(path: string): Promise<string[]> {
  return documentsOf(await readUtf8(path), path);
}

/** The text of a data file (errors name it). */
export async function readUtf8(path: string): Promise<string> {
  const info = await stat(path).catch(() => null);
  if (!info?.isFile()) throw new DataError(`${path}: no such file`);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(await readFile(path));
  } catch {
    throw new DataError(`${path}: not valid UTF-8`);
  }
}

/** The documents of a data file's text (see {@link readDocuments}). */
export function documentsOf(text: string, path: string): string[] {
  if (path.endsWith('.jsonl')) return jsonlDocuments(text, path);
  if (path.endsWith('.txt')) {
    if (text.trim() === '') throw new DataError(`${path}: the file is empty`);
    return [text];
  }
  throw new DataError(`${path}: expected a .txt or .jsonl file`);
}

/**
 * The non-blank lines of a .jsonl text, parsed one at a time as they are taken (so a caller's check
 * of one line fails before a later line is parsed), each with its `path:line` for errors.
 */
export function* jsonlLines(text: string, path: string): Generator<{ value: unknown; where: string }> {
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '') continue;
    const where = `${path}:${i + 1}`;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      throw new DataError(`${where}: not valid JSON (${(e as Error).message})`);
    }
    yield { value, where };
  }
}

function jsonlDocuments(text: string, path: string): string[] {
  const docs: string[] = [];
  for (const { value, where } of jsonlLines(text, path)) {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new DataError(`${where}: expected an object {"text": "…"}`);
    const doc = (value as Record<string, unknown>).text;
    if (typeof doc !== 'string') throw new DataError(`${where}: "text" must be a string, got ${doc === undefined ? 'nothing' : typeof doc}`);
    if (doc !== '') docs.push(doc);
  }
  if (docs.length === 0) throw new DataError(`${path}: no documents (every line is blank or has empty "text")`);
  return docs;
}
