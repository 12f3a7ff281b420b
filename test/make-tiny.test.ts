/**
 * `bun run make-tiny` is reproducible: two short runs (2 steps, same corpus snapshot) write
 * byte-identical folders, an ordinary HF checkpoint that `fromPretrained` loads with its MTP head.
 * (The shipped models/tiny-nemotron is the same recipe at its full step count.)
 */
import { afterAll, expect, test } from 'bun:test';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getCpuDevice } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../src/pretrained';

const ROOT = join(import.meta.dir, '..');
const scratch = await mkdtemp(join(tmpdir(), 'nemotron-make-tiny-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

async function digests(dir: string): Promise<Record<string, string>> {
  const files = (await readdir(dir)).sort();
  return Object.fromEntries(
    await Promise.all(
      files.map(
        async (f) =>
          [
            f,
            createHash('sha256')
              .update(await readFile(join(dir, f)))
              .digest('hex'),
          ] as const,
      ),
    ),
  );
}

test('two runs write identical folders that fromPretrained loads', async () => {
  const outs = [join(scratch, 'a'), join(scratch, 'b')];
  for (const [i, out] of outs.entries()) {
    const r = Bun.spawnSync([process.execPath, join(ROOT, 'scripts/make-tiny.ts'), '--steps', '2', '--out', out, '--report', join(scratch, `report-${i}`)], {
      cwd: ROOT,
      stdout: 'pipe',
      stderr: 'pipe',
    });
    expect(r.stderr.toString()).toContain('make-tiny: wrote');
    expect(r.exitCode).toBe(0);
  }
  const [a, b] = await Promise.all(outs.map(digests));
  expect(Object.keys(a!)).toEqual(['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'training.json']);
  expect(b).toEqual(a!);
  const model = await NemotronHForCausalLM.fromPretrained(outs[0]!, { device: getCpuDevice(), localFilesOnly: true });
  try {
    expect(model.config.pattern).toBe('M*-E');
    expect(model.mtp).not.toBeNull();
  } finally {
    model.dispose();
  }
}, 600_000);
