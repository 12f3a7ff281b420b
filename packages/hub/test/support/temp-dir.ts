/** Temporary folders for tests, removed when the test file ends. */
import { afterAll } from 'bun:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const made: string[] = [];
afterAll(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

export function tempDir(label = 'hub'): string {
  const dir = mkdtempSync(join(tmpdir(), `nemotron-${label}-`));
  made.push(dir);
  return dir;
}
