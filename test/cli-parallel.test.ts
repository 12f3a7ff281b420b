/**
 * `nemotron forward|generate` with the parallel flags, end to end: the pipeline-, expert- and
 * data-parallel forward write the same --out file as one device (names, shapes, dtypes; values
 * within 1e-6), parallel greedy generation prints one device's ids, and bad flags fail naming them.
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsReader } from '@nemotron-ts/hub';
import { expectedInts, openFixture, relDiff } from './support/fixtures';
import { nemotron } from './support/cli';

const scratch = await mkdtemp(join(tmpdir(), 'nemotron-cli-parallel-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

async function read(path: string) {
  const reader = await SafetensorsReader.open(path);
  const names = reader.names().sort();
  const arrays = await Promise.all(names.map((n) => reader.readHost(n)));
  return { names, arrays: arrays.map((a) => ({ dtype: a.dtype, shape: a.shape, data: Float32Array.from(a.data as ArrayLike<number>) })) };
}

describe('nemotron forward with parallel flags', () => {
  test('pipeline, expert and data parallel write the one-device file', async () => {
    const fixture = await openFixture('moe_flat_rsf2.5');
    const input = join(fixture.dir, 'inputs.json');
    const base = join(scratch, 'one.safetensors');
    expect(nemotron('forward', '--model', fixture.dir, '--input', input, '--out', base, '--device', 'cpu').code).toBe(0);
    const want = await read(base);
    for (const flags of [
      ['--pipeline-stages', '3', '--microbatches', '2'],
      ['--expert-parallel', '2'],
      ['--data-parallel', '2'],
      ['--pipeline-stages', '2', '--expert-parallel', '2'],
    ]) {
      const out = join(scratch, `${flags[0]!.slice(2)}.safetensors`);
      const r = nemotron('forward', '--model', fixture.dir, '--input', input, '--out', out, '--device', 'cpu', '--devices', 'cpu', ...flags);
      expect({ flags, code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ flags, code: 0, stderr: '' });
      const got = await read(out);
      expect(got.names).toEqual(want.names);
      got.arrays.forEach((a, i) => {
        expect([a.dtype, a.shape]).toEqual([want.arrays[i]!.dtype, want.arrays[i]!.shape]);
        expect(relDiff(a.data, want.arrays[i]!.data)).toBeLessThanOrEqual(1e-6);
      });
    }
  });

  test('bad parallel flags fail naming the flag', () => {
    const fixture = 'test/fixtures/dense_f32';
    const run = (...flags: string[]) =>
      nemotron('forward', '--model', fixture, '--input', `${fixture}/inputs.json`, '--out', join(scratch, 'x.safetensors'), ...flags);
    expect(run('--pipeline-stages', '0')).toMatchObject({ code: 2, stderr: expect.stringContaining('--pipeline-stages must be an integer ≥ 1, got 0') });
    expect(run('--pipeline-stages', '2', '--data-parallel', '2', '--devices', 'cpu,cpu')).toMatchObject({
      code: 1,
      stderr: expect.stringContaining('2 given (cpu, cpu) for 4 workers'),
    });
    expect(run('--devices', 'cpu')).toMatchObject({ code: 2, stderr: expect.stringContaining('--devices needs --pipeline-stages') });
    expect(run('--pipeline-stages', '2', '--devices', 'tpu')).toMatchObject({ code: 1, stderr: expect.stringContaining("device 'tpu' is not one of") });
    expect(run('--pipeline-stages', '9')).toMatchObject({ code: 1, stderr: expect.stringContaining('9 stages exceed the model') });
  });
});

describe('nemotron generate with parallel flags', () => {
  test("pipeline stages give the fixture's greedy ids", async () => {
    const fixture = await openFixture('dense_f32');
    const input = join(scratch, 'prompt.json');
    await Bun.write(input, JSON.stringify({ input_ids: [fixture.inputs.generate.prompt] }));
    const r = nemotron(
      'generate',
      '--model',
      fixture.dir,
      '--input',
      input,
      '--max-new-tokens',
      '16',
      '--ignore-eos',
      '--json',
      '--device',
      'cpu',
      '--pipeline-stages',
      '2',
      '--devices',
      'cpu',
    );
    expect({ code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ code: 0, stderr: '' });
    expect(JSON.parse(r.stdout).ids).toEqual([[...(await expectedInts(fixture, 'gen_tokens'))]]);
  });
});
