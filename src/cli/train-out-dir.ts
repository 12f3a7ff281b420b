/**
 * `nemotron train`'s `--out` folder, checked before any training: created (or found) and locked
 * for this run (`lockOutDir`), so a bad path fails at once naming `--out` and a second trainer on
 * the same folder exits; the temporary folders of an interrupted run are removed (its checkpoint
 * folders, and the folders a save killed midway left: `recoverFoldersIn`); and, once the model is
 * loaded, its file system must have room for a checkpoint.
 */
import { statSync } from 'node:fs';
import { readdir, statfs } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { fsErrorMeaning, recoverFoldersIn } from '@nemotron-ts/hub';
import { lockOutDir, OutDirBusyError, type OutDirLock } from '../train/out-dir-lock';
import { removeUnfinishedCheckpoints } from '../train/trainer-state';
import { RefusedError } from './args';

/** Creates and locks `outDir`, then removes the temporary folders of an interrupted run; reports on stderr. */
export async function prepareOutDir(outDir: string): Promise<OutDirLock> {
  let lock: OutDirLock;
  try {
    lock = lockOutDir(outDir);
  } catch (e) {
    if (e instanceof OutDirBusyError) throw new RefusedError(`--out ${e.message}`);
    const code = (e as NodeJS.ErrnoException).code;
    if (!code) throw e;
    const isFile = isPlainFile(outDir);
    const reason = isFile ? 'is a file, not a folder' : code === 'ENOENT' ? 'its parent folder cannot be created' : fsErrorMeaning(e as NodeJS.ErrnoException);
    throw new RefusedError(`--out ${outDir}: cannot create or write the output folder (${reason})`);
  }
  if (lock.tookOverFrom)
    console.error(`--out ${outDir}: took over the lock of a trainer that is gone (pid ${lock.tookOverFrom.pid}, started ${lock.tookOverFrom.started})`);
  try {
    // A kill inside a save (a checkpoint, its savePretrained, --merge) leaves `.<name>.tmp-<pid>-<tag>`
    // folders; older versions left `.checkpoint-<step>.partial-<pid>`. Clear the first, then the others.
    const before = await readdir(outDir);
    const restored = await recoverFoldersIn(outDir);
    for (const folder of restored) console.error(`--out ${outDir}: put back ${folder}, which an interrupted save had moved aside`);
    const after = new Set(await readdir(outDir));
    const asides = restored.map((folder) => `.${basename(folder)}.old-`);
    const cleared = before.filter((name) => !after.has(name) && !asides.some((aside) => name.startsWith(aside))).map((name) => join(outDir, name));
    const removed = [...cleared, ...(await removeUnfinishedCheckpoints(outDir))];
    if (removed.length > 0)
      console.error(`--out ${outDir}: removed ${removed.length} unfinished checkpoint folder(s) of an interrupted run: ${removed.join(', ')}`);
  } catch (e) {
    lock.release();
    throw e;
  }
  return lock;
}

/** Fails naming `--out` when its file system has less room than one checkpoint (`bytes`). */
export async function checkRoomForCheckpoint(outDir: string, bytes: number): Promise<void> {
  const fs = await statfs(outDir);
  const free = fs.bavail * fs.bsize;
  if (free < bytes)
    throw new RefusedError(`--out ${outDir}: ${megabytes(free)} free on its file system, but a checkpoint of this run takes about ${megabytes(bytes)}`);
}

function isPlainFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

const megabytes = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
