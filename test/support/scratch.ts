/** A test file's temporary folder, removed after its tests, with the tiny model built in it. */
import { afterAll } from 'bun:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureTinyModel } from './tiny-model';

/** `nemotron-<name>-…` under the system's temp folder and the tiny model in its `tiny/`; call at a test file's top level. */
export async function scratchWithTinyModel(name: string): Promise<{ scratch: string; modelDir: string }> {
  const scratch = await mkdtemp(join(tmpdir(), `nemotron-${name}-`));
  afterAll(() => rm(scratch, { recursive: true, force: true }));
  return { scratch, modelDir: await ensureTinyModel(join(scratch, 'tiny')) };
}
