/**
 * `nemotron forward` end to end: spawned on a fixture's inputs (the main batch and the packed row),
 * its safetensors output must match the fixture; bad inputs and flags must fail with a message
 * naming the file, field or flag, and a non-zero exit code.
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsReader, saveSafetensors } from '@nemotron-ts/hub';
import { getCpuDevice, tensor, type Tensor } from '@nemotron-ts/kernels';
import { testGpu } from '@nemotron-ts/kernels/testing';
import { expectedArray, expectLoss, expectRel, FIXTURES_DIR, openFixture } from './support/fixtures';
import { nemotron } from './support/cli';

const scratch = await mkdtemp(join(tmpdir(), 'nemotron-cli-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));
const gpu = await testGpu();

async function outputs(path: string): Promise<{ logits: Float32Array; shape: readonly number[]; loss: number | null }> {
  const reader = await SafetensorsReader.open(path);
  const logits = await reader.readHost('logits');
  expect(logits.dtype).toBe('F32');
  const loss = reader.names().includes('loss') ? await reader.readHost('loss') : null;
  if (loss) expect(loss.shape).toEqual([1]);
  return { logits: logits.data as Float32Array, shape: logits.shape, loss: loss ? (loss.data as Float32Array)[0]! : null };
}

describe('nemotron forward', () => {
  for (const device of gpu ? ['cpu', 'webgpu'] : ['cpu']) {
    test(`a fixture's main batch and packed row on ${device}`, async () => {
      const fixture = await openFixture('moe_flat_rsf2.5');
      const out = join(scratch, `main-${device}.safetensors`);
      const main = nemotron('forward', '--model', fixture.dir, '--input', join(fixture.dir, 'inputs.json'), '--out', out, '--device', device);
      expect(main).toEqual({ code: 0, stdout: expect.any(String), stderr: expect.any(String) });
      const got = await outputs(out);
      expect(got.shape).toEqual([2, 37, 256]);
      expectRel('logits', got.logits, await expectedArray(fixture, 'logits'));
      expectLoss('loss', got.loss!, fixture.scalars.loss!);

      const packedInput = join(scratch, `packed-${device}.json`);
      const { input_ids, labels, cu_seqlens } = fixture.inputs.packed;
      await Bun.write(packedInput, JSON.stringify({ input_ids: [input_ids], labels: [labels], cu_seqlens }));
      const packedOut = join(scratch, `packed-${device}.safetensors`);
      expect(nemotron('forward', '--model', fixture.dir, '--input', packedInput, '--out', packedOut, '--device', device, '--dtype', 'f32').code).toBe(0);
      const packed = await outputs(packedOut);
      expect(packed.shape).toEqual([1, input_ids.length, 256]);
      expectRel('packed_logits', packed.logits, await expectedArray(fixture, 'packed_logits'));
      expectLoss('packed_loss', packed.loss!, fixture.scalars.packed_loss!);
    });
  }

  test('without labels there is no loss', async () => {
    const input = join(scratch, 'ids-only.json');
    await Bun.write(input, JSON.stringify({ input_ids: [[5, 6, 7]], attention_mask: [[0, 1, 1]] }));
    const out = join(scratch, 'ids-only.safetensors');
    expect(nemotron('forward', '--model', join(FIXTURES_DIR, 'dense_f32'), '--input', input, '--out', out, '--device', 'cpu').code).toBe(0);
    const got = await outputs(out);
    expect(got.shape).toEqual([1, 3, 256]);
    expect(got.loss).toBeNull();
  });

  test('NaN logits fail naming the tensor and the first position, and write nothing', async () => {
    // The dense fixture with lm_head's row 0 at ±3e38: finite weights (they load), whose products
    // overflow to +Inf and -Inf, summing to NaN logits for token 0 at every position.
    const dir = join(scratch, 'nan-model');
    await mkdir(dir, { recursive: true });
    await copyFile(join(FIXTURES_DIR, 'dense_f32', 'config.json'), join(dir, 'config.json'));
    const reader = await SafetensorsReader.open(join(FIXTURES_DIR, 'dense_f32', 'model.safetensors'));
    const cpu = getCpuDevice();
    const tensors: Record<string, Tensor> = {};
    for (const name of reader.names()) {
      const t = await reader.readHost(name);
      const values = Float32Array.from(t.data as Float32Array);
      if (name === 'lm_head.weight') for (let i = 0; i < t.shape[1]!; i++) values[i] = i % 2 ? -3e38 : 3e38;
      tensors[name] = tensor(values, t.shape, { device: cpu });
    }
    await saveSafetensors(join(dir, 'model.safetensors'), tensors);
    const input = join(scratch, 'nan-input.json');
    await Bun.write(
      input,
      JSON.stringify({
        input_ids: [
          [1, 2, 3],
          [4, 5, 6],
        ],
      }),
    );
    const out = join(scratch, 'nan.safetensors');
    const r = nemotron('forward', '--model', dir, '--input', input, '--out', out, '--device', 'cpu');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/logits holds \d+ NaN or infinite values \(the first at \[0, 0, 0\] of \[2, 3, 256\]\); nothing written/);
    expect(await Bun.file(out).exists()).toBe(false);
  });

  test('bad inputs and flags fail naming the file, field or flag', async () => {
    const model = join(FIXTURES_DIR, 'dense_f32');
    const write = async (name: string, text: string) => {
      const path = join(scratch, name);
      await Bun.write(path, text);
      return path;
    };
    const cases: [string[], number, RegExp][] = [
      [['--input', join(scratch, 'missing.json')], 1, /missing\.json: no such file/],
      [['--input', await write('bad.json', '{"input_ids": [[1, 2')], 1, /bad\.json: line 1 column \d+: invalid JSON/],
      [['--input', await write('ragged.json', '{"input_ids": [[1, 2, 3], [4, 5]]}')], 1, /ragged\.json: input_ids: row 1 has 2 entries, row 0 has 3/],
      [['--input', await write('oov.json', '{"input_ids": [[1, 256]]}')], 1, /oov\.json: input_ids\[0\]\[1\] = 256 is outside the vocabulary \[0, 256\)/],
      [
        ['--input', await write('mask.json', '{"input_ids": [[1, 2]], "attention_mask": [[1, 1, 1]]}')],
        1,
        /mask\.json: attention_mask: shape \[1, 3\] does not match input_ids \[1, 2\]/,
      ],
      [
        ['--input', await write('labels.json', '{"input_ids": [[1, 2]], "labels": [[1, "x"]]}')],
        1,
        /labels\.json: labels\[0\]\[1\]: expected an integer, got "x"/,
      ],
      [['--input', await write('noids.json', '{"labels": [[1, 2]]}')], 1, /noids\.json: input_ids: missing/],
      [
        ['--input', await write('cu.json', '{"input_ids": [[1, 2], [3, 4]], "cu_seqlens": [0, 2]}')],
        1,
        /cu\.json: cu_seqlens: describes one packed row, but input_ids has 2 rows/,
      ],
      [['--input', await write('ok.json', '{"input_ids": [[1, 2]]}'), '--dtype', 'f16'], 2, /--dtype must be f32 or bf16, got 'f16'/],
      [['--input', join(scratch, 'ok.json'), '--devcie', 'cpu'], 2, /unknown flag --devcie/],
      [
        ['--input', await write('gap.json', '{"input_ids": [[1, 2, 3]], "attention_mask": [[1, 0, 1]]}')],
        1,
        /gap\.json: attention_mask\[0\] has padding between tokens \(position 1\)/,
      ],
    ];
    for (const [args, code, message] of cases) {
      const r = nemotron('forward', '--model', model, '--out', join(scratch, 'never.safetensors'), '--device', 'cpu', ...args);
      expect({ args, code: r.code, message: message.test(r.stderr) ? 'ok' : r.stderr }).toEqual({ args, code, message: 'ok' });
    }
    // A bad --out is found before the model loads, named as given (never a temporary file).
    const outs: [string, string][] = [
      [scratch, 'is a folder; give the path of a file to write'],
      [join(scratch, 'ok.json', 'x.safetensors'), `${join(scratch, 'ok.json')} is not a folder`],
      [join(scratch, 'nope', 'x.safetensors'), `its folder ${join(scratch, 'nope')} does not exist`],
    ];
    for (const [out, why] of outs) {
      const r = nemotron('forward', '--model', model, '--input', join(scratch, 'ok.json'), '--device', 'cpu', '--out', out);
      expect({ code: r.code, stderr: r.stderr.trim() }).toEqual({ code: 2, stderr: `nemotron: --out ${out}: ${why}` });
    }
    const noModel = nemotron('forward', '--input', join(scratch, 'ok.json'), '--out', join(scratch, 'x.safetensors'));
    expect(noModel.code).toBe(2);
    expect(noModel.stderr).toContain('missing --model');
  });
});
