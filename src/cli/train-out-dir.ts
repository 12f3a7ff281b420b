/**
 * `nemotron train`'s `--out` folder, checked before any training: created (or found) and locked
 * for this run (`lockOutDir`), so a bad path fails at once naming `--out` and a second trainer on
 * the same folder exits; the temporary folders of an interrupted run are removed; and, once the
 * model is loaded, its file system must have room for a checkpoint.
 */
import { statSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { lockOutDir, OutDirBusyError, type OutDirLock } from '../train/out-dir-lock';
import { fsReason } from '../fs-reason';
import { removeUnfinishedCheckpoints } from '../train/trainer-state';
import { RefusedError } from './args';

/** Creates and locks `outDir`, then removes unfinished checkpoint folders; reports on stderr. */
export async function prepareOutDir(outDir: string): Promise<OutDirLock> {
  let lock: OutDirLock;
  try {
    lock = lockOutDir(outDir);
  } catch (e) {
    if (e instanceof OutDirBusyError) throw new RefusedError(`--out ${e.message}`);
    const code = (e as NodeJS.ErrnoException).code;
    if (!code) throw e;
    const isFile = isPlainFile(outDir);
    const reason = isFile ? 'is a file, not a folder' : code === 'ENOENT' ? 'its parent folder cannot be created' : fsReason(e as NodeJS.ErrnoException);
    throw new RefusedError(`--out ${outDir}: cannot create or write the output folder (${reason})`);
  }
  if (lock.tookOverFrom) console.error(`--out ${outDir}: took over the lock of a trainer that is gone (pid ${lock.tookOverFrom.pid}, started ${lock.tookOverFrom.started})`);
  try {
    const removed = await removeUnfinishedCheckpoints(outDir);
    if (removed.length > 0) console.error(`--out ${outDir}: removed ${removed.length} unfinished checkpoint folder(s) of an interrupted run: ${removed.join(', ')}`);
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
  if (free < bytes) throw new RefusedError(`--out ${outDir}: ${megabytes(free)} free on its file system, but a checkpoint of this run takes about ${megabytes(bytes)}`);
}

function isPlainFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

const megabytes = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
