/**
 * File-system error wording, which hub owns for the whole project (the CLI and the trainer word
 * their errors with `fsErrorMeaning`): what a code means, never the temporary path Node names.
 */
import { describe, expect, test } from 'bun:test';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fsErrorMeaning, namingUserPath } from '../src';
import { tempDir } from './support/temp-dir';

describe('file-system error wording', () => {
  test('fsErrorMeaning says what the code means without the path; an unknown code is given as is', async () => {
    const dir = tempDir('fs-errors');
    const file = join(dir, 'a-file');
    await writeFile(file, 'x');
    const notDir = (await readdir(join(file, 'inside')).catch((e: unknown) => e)) as NodeJS.ErrnoException;
    expect(notDir.code).toBe('ENOTDIR');
    expect(fsErrorMeaning(notDir)).toBe('a part of the path is a file, not a folder');
    expect(fsErrorMeaning(Object.assign(new Error(`ENOSPC: write ${dir}/.tmp-1`), { code: 'ENOSPC' }))).toBe('no space left on the device');
    expect(fsErrorMeaning(Object.assign(new Error('odd'), { code: 'EWHATEVER' }))).toBe('EWHATEVER');
    expect(fsErrorMeaning(new Error('no code at all'))).toBe('no code at all');
  });

  test('namingUserPath words a system error with the same meaning, for the path the user gave', () => {
    const e = Object.assign(new Error('ENOTDIR: open /tmp/.x.tmp-1/model.safetensors'), { code: 'ENOTDIR', syscall: 'open' });
    const worded = namingUserPath(e, '/tmp/.x.tmp-1', '/tmp/x') as NodeJS.ErrnoException;
    expect(worded.message).toBe(`cannot write /tmp/x: ${fsErrorMeaning(e)} (ENOTDIR)`);
    expect(worded.code).toBe('ENOTDIR');
  });
});
