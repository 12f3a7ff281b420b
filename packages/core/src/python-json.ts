/**
 * JSON as Hugging Face writes it. Python's `json.dump` emits the bare tokens `Infinity`, `-Infinity`
 * and `NaN` (e.g. `"time_step_limit": [0.0, Infinity]`), which `JSON.parse` rejects; some tools
 * instead encode them as `{"__float__": "Infinity"}`. Both forms decode to JS numbers here.
 */

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

const NON_FINITE: Readonly<Record<string, number>> = {
  Infinity: Infinity,
  '-Infinity': -Infinity,
  inf: Infinity,
  '-inf': -Infinity,
  NaN: NaN,
  nan: NaN,
};

/** The number a `{"__float__": "Infinity"}` object encodes, or undefined when `value` is not one. */
export function decodeTaggedFloat(value: unknown): number | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const keys = Object.keys(value);
  if (keys.length !== 1 || keys[0] !== '__float__') return undefined;
  const tag = (value as { __float__: unknown }).__float__;
  if (typeof tag === 'string' && tag in NON_FINITE) return NON_FINITE[tag];
  if (typeof tag === 'number') return tag;
  return undefined;
}

/**
 * Parses JSON text that may contain Python's bare `Infinity`, `-Infinity` and `NaN` tokens (outside
 * strings). They become `{"__float__": ...}` objects, which the config reader decodes.
 */
export function parsePythonJson(text: string, source = 'JSON'): JsonValue {
  let out = '';
  let i = 0;
  let copiedUpTo = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '"') {
      // Skip the string, honouring escapes.
      i++;
      while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
      i++;
      continue;
    }
    const token = ['-Infinity', 'Infinity', 'NaN'].find((t) => text.startsWith(t, i));
    if (token) {
      out += text.slice(copiedUpTo, i) + `{"__float__":"${token}"}`;
      i += token.length;
      copiedUpTo = i;
      continue;
    }
    i++;
  }
  out += text.slice(copiedUpTo);
  try {
    return JSON.parse(out) as JsonValue;
  } catch (e) {
    throw new Error(`${source}: invalid JSON (${(e as Error).message})`);
  }
}

/**
 * Serialises like Python's `json.dumps(obj, indent=2)`: non-finite numbers are written as the bare
 * tokens `Infinity` / `-Infinity` / `NaN` (which `JSON.stringify` would silently turn into `null`).
 */
export function stringifyPythonJson(value: unknown, indent = 2): string {
  const marker = '__nemotron_ts_non_finite__:';
  const text = JSON.stringify(
    value,
    (_key, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? `${marker}${String(v)}` : v),
    indent,
  );
  return text.replace(new RegExp(`"${marker}(-?Infinity|NaN)"`, 'g'), '$1');
}
