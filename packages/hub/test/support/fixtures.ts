/** The golden fixture checkpoints shipped with the repo under test/fixtures/<case>/. */
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

export const FIXTURES_DIR = join(import.meta.dir, '..', '..', '..', '..', 'test', 'fixtures');

/** Every fixture case folder name (each holds model.safetensors and expected.safetensors). */
export function fixtureCases(): string[] {
  return readdirSync(FIXTURES_DIR)
    .filter((name) => statSync(join(FIXTURES_DIR, name)).isDirectory())
    .sort();
}

export function fixturePath(testCase: string, file: string): string {
  return join(FIXTURES_DIR, testCase, file);
}
