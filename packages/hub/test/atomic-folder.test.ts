/**
 * Atomic folder saves: a save killed at each of its renames (strace injects SIGKILL at the K-th
 * rename) leaves a folder that loads as the complete old checkpoint or the complete new one, never a
 * mix; leftovers of killed saves are recovered; other files are kept; errors name the user's folder.
 */
import { describe, expect, test } from 'bun:test';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { getCpuDevice } from '@nemotron-ts/kernels';
import { Checkpoint, readConfigJson, recoverFolder, recoverFoldersIn, resolveCheckpoint, writeFolderAtomically } from '../src';
import { ELEMENTS, saveGeneration, TENSORS } from './support/save-child';
import { tempDir } from './support/temp-dir';
import { writeTinyTokenizer } from './support/tiny-tokenizer';

const cpu = getCpuDevice();
const CHILD = join(import.meta.dir, 'support', 'save-child.ts');
const strace = Bun.which('strace');
const canTrace = strace !== null && Bun.spawnSync([strace, '-o', '/dev/null', 'true']).exitCode === 0;

/** The generation the folder holds, after checking that every file is of that one generation. */
async function generationOf(folder: string): Promise<number> {
  const resolved = await resolveCheckpoint(folder);
  const generation = (await readConfigJson(join(resolved, 'config.json'))).generation as number;
  const checkpoint = await Checkpoint.open(resolved);
  expect(checkpoint.names().sort()).toEqual(Array.from({ length: TENSORS }, (_, i) => `layers.${i}.weight`));
  for (let i = 0; i < TENSORS; i++) {
    const values = await (await checkpoint.load(`layers.${i}.weight`, { device: cpu })).toFloat32();
    expect(values).toEqual(new Float32Array(ELEMENTS).fill(generation + i / 8));
  }
  expect(
    readdirSync(resolved)
      .filter((f) => f.startsWith('tokenizer'))
      .sort(),
  ).toEqual(['tokenizer.json', 'tokenizer_config.json']);
  return generation;
}

async function failure(p: Promise<unknown>): Promise<Error> {
  return p.then(
    () => new Error('no error'),
    (e: unknown) => e as Error,
  );
}

function leftovers(parent: string): string[] {
  return readdirSync(parent).filter((f) => f.startsWith('.'));
}

describe.skipIf(!canTrace)('a save killed at each rename', () => {
  test('leaves the complete old or the complete new sharded checkpoint', async () => {
    const parent = tempDir('atomic');
    const folder = join(parent, 'model');
    const tokenizer = tempDir('tok');
    writeTinyTokenizer(tokenizer);
    await saveGeneration(folder, 1, tokenizer);
    const env = { ...process.env, BUN_RUNTIME_TRANSPILER_CACHE_PATH: '0' };
    const run = (generation: number, inject: string | null) => {
      const injected = inject === null ? [] : ['-e', `inject=${inject}:signal=KILL`];
      return Bun.spawnSync(
        [
          strace!,
          '-f',
          '-o',
          join(parent, 'trace.log'),
          '-e',
          'trace=rename,renameat,renameat2,unlink,unlinkat,rmdir',
          ...injected,
          process.execPath,
          CHILD,
          folder,
          String(generation),
          tokenizer,
        ],
        { env, stderr: 'pipe' },
      );
    };
    // A save that replaces the folder, traced: how many renames it makes.
    expect(run(2, null).exitCode).toBe(0);
    const renames = readFileSync(join(parent, 'trace.log'), 'utf8')
      .split('\n')
      .filter((l) => /^\d+\s+rename(at2?)?\(/.test(l)).length;
    expect(renames).toBeGreaterThanOrEqual(TENSORS + 4);
    expect(await generationOf(folder)).toBe(2);

    // Killed before its last rename, a save leaves the old checkpoint (put back if it was moved aside).
    for (let k = 1; k <= renames; k++) {
      expect(run(3, `rename,renameat,renameat2:when=${k}`).exitCode === 0 ? 'finished' : 'killed').toBe('killed');
      expect(await generationOf(folder)).toBe(2);
      await recoverFolder(folder);
      expect(leftovers(parent)).toEqual([]);
    }
    // Killed after it (while deleting the old copy), it leaves the new one.
    expect(run(3, 'unlink,unlinkat,rmdir:when=1').exitCode === 0 ? 'finished' : 'killed').toBe('killed');
    expect(await generationOf(folder)).toBe(3);
    await recoverFolder(folder);
    expect(leftovers(parent)).toEqual([]);
  }, 120_000);
});

describe('writeFolderAtomically', () => {
  test('a folder left aside by a killed save is put back; dead leftovers are deleted, live ones kept', async () => {
    const parent = tempDir('atomic');
    const folder = join(parent, 'out');
    const dead = Bun.spawnSync(['true']).pid;
    mkdirSync(join(parent, `.out.old-${dead}-0123abcd`));
    writeFileSync(join(parent, `.out.old-${dead}-0123abcd`, 'a.txt'), 'old');
    mkdirSync(join(parent, `.out.tmp-${dead}-0123abcd`));
    mkdirSync(join(parent, `.out.tmp-${process.pid}-89abcdef`));
    mkdirSync(join(parent, `.other.tmp-${dead}-0123abcd`));
    expect(await recoverFolder(folder)).toBe(true);
    expect(readFileSync(join(folder, 'a.txt'), 'utf8')).toBe('old');
    expect(leftovers(parent).sort()).toEqual([`.other.tmp-${dead}-0123abcd`, `.out.tmp-${process.pid}-89abcdef`]);
    expect(await recoverFolder(folder)).toBe(false);
    // Every folder of a parent at once (a trainer's output folder).
    mkdirSync(join(parent, `.ckpt.old-${dead}-0123abcd`));
    expect(await recoverFoldersIn(parent)).toEqual([join(parent, 'ckpt')]);
    expect(leftovers(parent)).toEqual([`.out.tmp-${process.pid}-89abcdef`]);
  });

  test('files the writer does not touch are kept when asked, and replaced otherwise', async () => {
    const folder = join(tempDir('atomic'), 'out');
    mkdirSync(join(folder, 'notes'), { recursive: true });
    writeFileSync(join(folder, 'README.md'), 'mine');
    writeFileSync(join(folder, 'notes', 'n.txt'), 'n');
    writeFileSync(join(folder, 'data.bin'), 'old');
    await writeFolderAtomically(folder, async (temp) => writeFileSync(join(temp, 'data.bin'), 'new'), { keepOtherFiles: true });
    expect(readdirSync(folder).sort()).toEqual(['README.md', 'data.bin', 'notes']);
    expect(readFileSync(join(folder, 'data.bin'), 'utf8')).toBe('new');
    expect(readFileSync(join(folder, 'notes', 'n.txt'), 'utf8')).toBe('n');
    await writeFolderAtomically(folder, async (temp) => writeFileSync(join(temp, 'only.bin'), 'x'));
    expect(readdirSync(folder)).toEqual(['only.bin']);
    // Through a symlink: the folder it points to is replaced, the link stays.
    const link = join(folder, '..', 'link');
    symlinkSync(folder, link);
    await writeFolderAtomically(link, async (temp) => writeFileSync(join(temp, 'via-link.bin'), 'y'));
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readdirSync(folder)).toEqual(['via-link.bin']);
  });

  test('a failed write leaves the folder as it was and names the folder, not the temporary one', async () => {
    const parent = tempDir('atomic');
    const folder = join(parent, 'out');
    mkdirSync(folder);
    writeFileSync(join(folder, 'keep.txt'), 'k');
    const error = await failure(
      writeFolderAtomically(folder, async (temp) => {
        mkdirSync(join(temp, 'sub'));
        writeFileSync(join(temp, 'sub'), 'x'); // EISDIR
      }),
    );
    expect(error.message).toBe(`cannot write ${folder}: a folder is in the way (EISDIR)`);
    expect(readdirSync(folder)).toEqual(['keep.txt']);
    expect(leftovers(parent)).toEqual([]);

    // A full disk while a file inside is written (as AtomicFile reports it) names the folder.
    const full = await failure(
      writeFolderAtomically(folder, async (temp) => {
        throw Object.assign(new Error(`cannot write ${join(temp, 'model.safetensors')}: no space left on the device (ENOSPC)`), { code: 'ENOSPC' });
      }),
    );
    expect(full.message).toBe(`cannot write ${folder}: no space left on the device (ENOSPC)`);
    expect((full as NodeJS.ErrnoException).code).toBe('ENOSPC');

    writeFileSync(join(parent, 'file'), '');
    const inFile = join(parent, 'file', 'model');
    const notDir = await failure(writeFolderAtomically(inFile, async () => {}));
    expect(notDir.message).toBe(`cannot write ${inFile}: a file is in the way (EEXIST)`);
    const isFile = await failure(writeFolderAtomically(join(parent, 'file'), async () => {}));
    expect(isFile.message).toBe(`cannot write ${join(parent, 'file')}: it is a file, not a folder`);
    expect(existsSync(join(parent, 'file'))).toBe(true);
  });
});
