/**
 * JSON as Hugging Face's Python tools write it: standard JSON plus the bare literals `Infinity`,
 * `-Infinity` and `NaN` (Python's json module emits them, e.g. `"time_step_limit": [0.0, Infinity]`).
 * `{"__float__": "Infinity"}` is accepted as the same number. Errors give the line and column.
 */
import { CheckpointFormatError } from './errors';
import { compareCodePoints } from './code-point-order';

import type { JsonObject, JsonValue } from '@nemotron-ts/kernels';

export type { JsonObject, JsonValue };

const MAX_DEPTH = 512;
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
/** Values a `{"__float__": ...}` object may name (Python's repr spellings included). */
const SPECIAL_FLOATS: Record<string, number> = { Infinity: Infinity, '-Infinity': -Infinity, NaN: NaN, inf: Infinity, '-inf': -Infinity, nan: NaN };

/** Parses HF-style JSON; `file` names the source in errors. */
export function parseHfJson(text: string, file: string): JsonValue {
  return new Parser(text, file).document();
}

class Parser {
  private at = 0;

  constructor(
    private readonly text: string,
    private readonly file: string,
  ) {}

  document(): JsonValue {
    if (this.text.charCodeAt(0) === 0xfeff) this.at = 1;
    const value = this.value(0);
    this.space();
    if (this.at < this.text.length) this.fail('unexpected text after the JSON value');
    return value;
  }

  private value(depth: number): JsonValue {
    if (depth > MAX_DEPTH) this.fail(`nesting deeper than ${MAX_DEPTH} levels`);
    this.space();
    const c = this.text[this.at];
    if (c === '{') return this.object(depth);
    if (c === '[') return this.array(depth);
    if (c === '"') return this.string();
    for (const [word, value] of [
      ['true', true],
      ['false', false],
      ['null', null],
      ['Infinity', Infinity],
      ['-Infinity', -Infinity],
      ['NaN', NaN],
    ] as const) {
      if (this.text.startsWith(word, this.at)) {
        this.at += word.length;
        return value;
      }
    }
    NUMBER.lastIndex = this.at;
    const m = NUMBER.exec(this.text);
    if (m) {
      this.at += m[0].length;
      return Number(m[0]);
    }
    return this.fail(c === undefined ? 'unexpected end of input' : `unexpected character ${JSON.stringify(c)}`);
  }

  private object(depth: number): JsonValue {
    this.at++;
    const out: JsonObject = {};
    this.space();
    if (this.text[this.at] === '}') {
      this.at++;
      return out;
    }
    for (;;) {
      this.space();
      if (this.text[this.at] !== '"') this.fail('expected a string key');
      const key = this.string();
      this.space();
      if (this.text[this.at] !== ':') this.fail(`expected ':' after key ${JSON.stringify(key)}`);
      this.at++;
      // defineProperty: a key named "__proto__" must stay data, not change the prototype.
      Object.defineProperty(out, key, { value: this.value(depth + 1), enumerable: true, writable: true, configurable: true });
      this.space();
      const c = this.text[this.at++];
      if (c === '}') break;
      if (c !== ',') this.fail("expected ',' or '}' in an object", this.at - 1);
    }
    const keys = Object.keys(out);
    const tagged = out.__float__;
    if (keys.length === 1 && typeof tagged === 'string' && Object.hasOwn(SPECIAL_FLOATS, tagged)) return SPECIAL_FLOATS[tagged]!;
    return out;
  }

  private array(depth: number): JsonValue {
    this.at++;
    const out: JsonValue[] = [];
    this.space();
    if (this.text[this.at] === ']') {
      this.at++;
      return out;
    }
    for (;;) {
      out.push(this.value(depth + 1));
      this.space();
      const c = this.text[this.at++];
      if (c === ']') return out;
      if (c !== ',') this.fail("expected ',' or ']' in an array", this.at - 1);
    }
  }

  private string(): string {
    const start = this.at++;
    for (;;) {
      const c = this.text.charCodeAt(this.at);
      if (Number.isNaN(c)) this.fail('unterminated string', start);
      if (c === 0x5c) this.at += 2;
      else if (c === 0x22) break;
      else if (c < 0x20) this.fail('control character in a string');
      else this.at++;
    }
    this.at++;
    try {
      return JSON.parse(this.text.slice(start, this.at)) as string;
    } catch {
      return this.fail('invalid escape in a string', start);
    }
  }

  private space(): void {
    while (this.at < this.text.length) {
      const c = this.text.charCodeAt(this.at);
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return;
      this.at++;
    }
  }

  private fail(message: string, at = this.at): never {
    const before = this.text.slice(0, at);
    const line = before.split('\n').length;
    const column = at - before.lastIndexOf('\n');
    throw new CheckpointFormatError(this.file, `line ${line} column ${column}`, `invalid JSON: ${message}`);
  }
}

/**
 * Serializes as Python's `json.dumps(value, indent=2, sort_keys=True)` does (HF's format for
 * config.json and index files), with non-finite numbers as bare `Infinity` / `-Infinity` / `NaN`,
 * and a final newline.
 */
export function stringifyHfJson(value: JsonValue): string {
  return `${write(value, '')}\n`;
}

function write(value: JsonValue, indent: string): string {
  if (value === null) return 'null';
  if (typeof value === 'boolean') return String(value);
  if (typeof value === 'number') return Number.isFinite(value) ? JSON.stringify(value) : Number.isNaN(value) ? 'NaN' : value > 0 ? 'Infinity' : '-Infinity';
  if (typeof value === 'string') return JSON.stringify(value);
  const inner = `${indent}  `;
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    return `[\n${value.map((v) => inner + write(v, inner)).join(',\n')}\n${indent}]`;
  }
  const keys = Object.keys(value).sort(compareCodePoints);
  if (keys.length === 0) return '{}';
  return `{\n${keys.map((k) => `${inner}${JSON.stringify(k)}: ${write(value[k]!, inner)}`).join(',\n')}\n${indent}}`;
}
