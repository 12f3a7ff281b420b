/** config.json / generation_config.json: HF's non-standard float literals, file errors, HF's output format. */
import { describe, expect, test } from 'bun:test';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CheckpointFormatError,
  parseConfigJson,
  parseHfJson,
  readConfigJson,
  readGenerationConfigJson,
  stringifyHfJson,
  writeConfigJson,
  type JsonObject,
} from '../src';
import { fixtureCases, fixturePath } from './support/fixtures';
import { tempDir } from './support/temp-dir';

describe('HF JSON', () => {
  test('bare Infinity, -Infinity and NaN, and {"__float__": ...}', () => {
    const v = parseHfJson(
      '{"time_step_limit": [0.0, Infinity], "lo": -Infinity, "n": NaN, "t": {"__float__": "Infinity"}, "u": {"__float__": "-inf"}, "s": "Infinity"}',
      'c.json',
    ) as JsonObject;
    expect(v.time_step_limit).toEqual([0, Infinity]);
    expect(v.lo).toBe(-Infinity);
    expect(Number.isNaN(v.n)).toBe(true);
    expect(v.t).toBe(Infinity);
    expect(v.u).toBe(-Infinity);
    expect(v.s).toBe('Infinity');
  });

  test('strings, escapes, nesting, and "__proto__" kept as data', () => {
    const text = '{"a": "x\\n\\u00e9\\ud83d\\ude00", "b": [1, -2.5e-3, true, false, null, {}], "__proto__": {"x": 1}}';
    const v = parseHfJson(text, 'c.json') as JsonObject;
    expect(v).toEqual(JSON.parse(text));
    expect(Object.getPrototypeOf(v)).toBe(Object.prototype);
    expect(Object.keys(v)).toContain('__proto__');
  });

  test('errors give the file, line and column', () => {
    const e = (() => {
      try {
        parseHfJson('{\n  "a": 1,\n  "b": tru\n}', 'config.json');
      } catch (err) {
        return err as CheckpointFormatError;
      }
      throw new Error('expected an error');
    })();
    expect(e).toBeInstanceOf(CheckpointFormatError);
    expect(e.message).toBe('config.json: line 3 column 8: invalid JSON: unexpected character "t"');
    expect(() => parseHfJson('{"a": 1} x', 'f.json')).toThrow('f.json: line 1 column 10: invalid JSON: unexpected text after the JSON value');
    expect(() => parseHfJson('{"a": "b', 'f.json')).toThrow('unterminated string');
    expect(() => parseHfJson('['.repeat(10000), 'f.json')).toThrow('nesting deeper than');
  });

  test("stringify matches Python's json.dumps(indent=2, sort_keys=True)", () => {
    const text = stringifyHfJson({ z: [0, Infinity], a: { c: null, b: [] }, m: {}, n: -Infinity, q: NaN, s: 'é"' });
    expect(text).toBe(
      '{\n  "a": {\n    "b": [],\n    "c": null\n  },\n  "m": {},\n  "n": -Infinity,\n  "q": NaN,\n  "s": "é\\"",\n  "z": [\n    0,\n    Infinity\n  ]\n}\n',
    );
    expect(parseHfJson(text, 'x')).toEqual({ z: [0, Infinity], a: { c: null, b: [] }, m: {}, n: -Infinity, q: NaN, s: 'é"' });
  });
});

describe('config files', () => {
  test('every fixture config reads, writes and reads back equal', async () => {
    const dir = tempDir('config');
    for (const testCase of fixtureCases()) {
      const config = await readConfigJson(fixturePath(testCase, 'config.json'));
      expect(config.model_type).toBe('nemotron_h');
      await writeConfigJson(join(dir, 'config.json'), config);
      expect(await readConfigJson(join(dir, 'config.json'))).toEqual(config);
    }
  });

  test('a time_step_limit with Infinity survives a round trip in HF form', async () => {
    const dir = tempDir('config');
    const path = join(dir, 'config.json');
    writeFileSync(path, '{"model_type": "nemotron_h", "time_step_limit": [0.0, Infinity]}');
    const config = await readConfigJson(path);
    expect(config.time_step_limit).toEqual([0, Infinity]);
    await writeConfigJson(path, config);
    expect(readFileSync(path, 'utf8')).toBe('{\n  "model_type": "nemotron_h",\n  "time_step_limit": [\n    0,\n    Infinity\n  ]\n}\n');
  });

  test("a file that does not hold an object names the file; field kinds are the model package's job", () => {
    const file = '/x/config.json';
    expect(() => parseConfigJson('[1]', file)).toThrow(`${file}: must hold a JSON object`);
    expect(parseConfigJson('{"hidden_size": "128", "rms_norm_eps": -1}', file)).toEqual({ hidden_size: '128', rms_norm_eps: -1 });
  });

  test('generation_config.json reads as an object, and a missing file is named', async () => {
    const dir = tempDir('config');
    const path = join(dir, 'generation_config.json');
    writeFileSync(path, '{"eos_token_id": [2, 11], "do_sample": false, "temperature": 0.6}');
    expect((await readGenerationConfigJson(path)).eos_token_id).toEqual([2, 11]);
    await expect(readConfigJson(join(dir, 'nope.json'))).rejects.toThrow('nope.json: does not exist');
  });
});
