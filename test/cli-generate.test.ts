/**
 * `nemotron generate` / `nemotron chat` end to end (spawned): greedy ids of the padded-generation
 * fixture through --json and --input (padded with a mask, and ragged rows the CLI left-pads),
 * streamed text from the project's tiny model with a tokenizer (plain and --chat), a stdin chat,
 * and clear errors with exit code 2 for usage and 1 otherwise.
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testGpu } from '@nemotron-ts/kernels/testing';
import { ensureTinyModel } from './support/tiny-model';
import { expectedInts, FIXTURES_DIR, openFixture } from './support/fixtures';

const ROOT = join(import.meta.dir, '..');
const scratch = await mkdtemp(join(tmpdir(), 'nemotron-cli-generate-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));
const gpu = await testGpu();
const tiny = await ensureTinyModel(join(scratch, 'tiny'));

function nemotron(args: string[], stdin?: string): { code: number; stdout: string; stderr: string } {
  const r = Bun.spawnSync([process.execPath, join(ROOT, 'src/cli/main.ts'), ...args], {
    cwd: ROOT,
    stdout: 'pipe',
    stderr: 'pipe',
    stdin: stdin === undefined ? 'ignore' : Buffer.from(stdin),
  });
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

describe('nemotron generate', () => {
  for (const device of gpu ? ['cpu', 'webgpu'] : ['cpu']) {
    test(`--json --input: the padded fixture batch, and the same prompts as ragged rows, on ${device}`, async () => {
      const fixture = await openFixture('padded_generation');
      const padded = fixture.inputs.padded_generate!;
      const want = Array.from(await expectedInts(fixture, 'padded/gen_tokens'));
      const rows = padded.input_ids.length;
      const expected = Array.from({ length: rows }, (_, b) => want.slice(b * 16, (b + 1) * 16));
      const flags = ['--model', fixture.dir, '--max-new-tokens', '16', '--greedy', '--ignore-eos', '--json', '--device', device];
      const paddedFile = join(scratch, 'padded.json');
      await Bun.write(paddedFile, JSON.stringify({ input_ids: padded.input_ids, attention_mask: padded.attention_mask }));
      const raggedFile = join(scratch, 'ragged.json');
      await Bun.write(raggedFile, JSON.stringify({ input_ids: padded.input_ids.map((row, b) => row.filter((_, t) => padded.attention_mask[b]![t] === 1)) }));
      for (const file of [paddedFile, raggedFile]) {
        const r = nemotron(['generate', ...flags, '--input', file]);
        expect({ file, code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ file, code: 0, stderr: '' });
        const out = JSON.parse(r.stdout.trim()) as { ids: number[][]; prompt_tokens_per_s: number; decode_tokens_per_s: number };
        expect(out.ids).toEqual(expected);
        expect(out.prompt_tokens_per_s).toBeGreaterThan(0);
        expect(out.decode_tokens_per_s).toBeGreaterThan(0);
      }
    });
  }

  test('--prompt streams text from the tiny model; --chat applies the chat template; speeds go to stderr', () => {
    const plain = nemotron(['generate', '--model', tiny, '--prompt', 'Nemotron-H ', '--max-new-tokens', '24', '--seed', '3']);
    expect(plain.code).toBe(0);
    expect(plain.stdout.trim().length).toBeGreaterThan(0);
    expect(plain.stderr).toMatch(/prompt: 1×12 tokens, [\d.]+ tokens\/s · generation: \d+ tokens per row, [\d.]+ tokens\/s/);
    // Same seed, same text; greedy is deterministic too.
    expect(nemotron(['generate', '--model', tiny, '--prompt', 'Nemotron-H ', '--max-new-tokens', '24', '--seed', '3']).stdout).toBe(plain.stdout);
    const chat = nemotron(['generate', '--model', tiny, '--prompt', 'hi', '--chat', '--greedy', '--max-new-tokens', '8', '--json']);
    expect(chat.code).toBe(0);
    expect((JSON.parse(chat.stdout) as { ids: number[][] }).ids[0]!.length).toBeLessThanOrEqual(8);
  });

  test('chat: each stdin line is a turn, replies stream back', () => {
    const r = nemotron(['chat', '--model', tiny, '--max-new-tokens', '6', '--greedy'], 'hello\nmore\n');
    expect(r.code).toBe(0);
    expect(r.stdout.split('\n').filter((l) => l.length > 0).length).toBeGreaterThanOrEqual(1);
    expect(r.stderr.match(/generation:/g)?.length).toBe(2);
  });

  test('bad flags and inputs: exit 2 for usage, 1 otherwise, naming the flag or file', async () => {
    const model = join(FIXTURES_DIR, 'dense_f32');
    const ok = join(scratch, 'ok.json');
    await Bun.write(ok, JSON.stringify({ input_ids: [[1, 2, 3]] }));
    const write = async (name: string, value: unknown) => {
      const path = join(scratch, name);
      await Bun.write(path, JSON.stringify(value));
      return path;
    };
    const bad = join(scratch, 'bad.json');
    await Bun.write(bad, JSON.stringify({ input_ids: [[1, 999]] }));
    const cases: [string[], number, RegExp][] = [
      [['--model', model], 2, /exactly one of --prompt TEXT and --input FILE/],
      [['--model', model, '--input', ok, '--prompt', 'x'], 2, /exactly one of --prompt TEXT and --input FILE/],
      [['--input', ok], 2, /missing --model/],
      [['--model', model, '--input', ok, '--greedy', '--temperature', '0.5'], 2, /--greedy cannot be combined with --temperature/],
      [['--model', model, '--input', ok, '--top-p', '1.5'], 2, /--top-p must be in \(0, 1\]/],
      [['--model', model, '--input', ok, '--max-new-tokens', '0'], 2, /--max-new-tokens must be an integer ≥ 1/],
      [['--model', model, '--input', ok, '--chat'], 2, /--chat applies to --prompt/],
      [['--model', model, '--input', ok, '--frobnicate'], 2, /unknown flag --frobnicate/],
      [['--model', model, '--prompt', 'hello'], 1, /has no tokenizer.json: give token ids with --input FILE/],
      [['--model', model, '--input', bad], 1, /bad\.json: input_ids\[0\]\[1\] = 999 is outside the vocabulary \[0, 256\)/],
      [['--model', model, '--input', join(scratch, 'missing.json')], 1, /missing\.json: no such file/],
      // Found while parsing, before the model is even looked for.
      [['--model', join(scratch, 'nowhere'), '--input', ok, '--seed', '1e20'], 2, /--seed must be an integer in \[0, 4294967295\], got 100000000000000000000/],
      [
        ['--model', join(scratch, 'nowhere'), '--input', ok, '--max-new-tokens', '1e20'],
        2,
        /--max-new-tokens must be an integer ≥ 1, got 100000000000000000000/,
      ],
      [
        ['--model', model, '--input', ok, '--max-new-tokens', '1e12'],
        2,
        /--max-new-tokens 1000000000000: generate: maxNewTokens 1000000000000 needs a cache of 1000000000003 positions for 1 row\(s\), too large for this device \(a f32 /,
      ],
      [['--model', model, '--prompt', '--hello'], 2, /unknown flag --hello \(if it is the value of --prompt, write --prompt=--hello\)/],
      [['--model', model, '--input'], 2, /--input needs a value \(write a value that starts with "--" as --input=VALUE\)/],
      [
        [
          '--model',
          model,
          '--input',
          await write('right.json', {
            input_ids: [
              [1, 2, 3],
              [4, 5, 6],
            ],
            attention_mask: [
              [1, 1, 1],
              [1, 1, 0],
            ],
          }),
        ],
        1,
        /right\.json: attention_mask\[1\] is right-padded \(position 2 is padding after the last token\)/,
      ],
      [
        ['--model', model, '--input', await write('gap.json', { input_ids: [[1, 2, 3, 4]], attention_mask: [[1, 0, 1, 1]] })],
        1,
        /gap\.json: attention_mask\[0\] has padding between tokens \(position 1\)/,
      ],
    ];
    for (const [args, code, message] of cases) {
      const r = nemotron(['generate', '--device', 'cpu', ...args]);
      expect({ args, code: r.code, message: message.test(r.stderr) ? 'ok' : r.stderr }).toEqual({ args, code, message: 'ok' });
    }
    const chat = nemotron(['chat', '--model', model, '--device', 'cpu'], 'hi\n');
    expect(chat.code).toBe(1);
    expect(chat.stderr).toContain('chat needs one');
  });

  test('--prompt=--hello: a prompt that starts with "--" goes after "="', () => {
    const r = nemotron(['generate', '--model', tiny, '--prompt=--hello', '--max-new-tokens', '2', '--greedy', '--json', '--device', 'cpu']);
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { ids: number[][] }).ids[0]!.length).toBeGreaterThan(0);
  });
});
