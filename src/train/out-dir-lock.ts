/**
 * An exclusive lock on a training run's output folder, so two trainers never write (or resume)
 * the same `--out` at once. The lock is `OUT/.trainer.lock`, JSON `{pid, host, token, started}`:
 * written whole into a private file first, then hard-linked into place — `link` fails when the
 * name exists (like O_EXCL) and the lock is never seen half-written. A lock whose owner is gone
 * (same host, pid no longer alive) is stale and taken over; one held by a live process, or by
 * another host (whose processes cannot be checked), is refused naming the folder and the owner.
 * Released on `release()`, and on process exit, SIGINT and SIGTERM.
 */
import { linkSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { isProcessAlive } from '@nemotron-ts/hub';

export const OUT_DIR_LOCK_FILE = '.trainer.lock';

export interface LockOwner {
  pid: number;
  host: string;
  token: string;
  started: string;
}

/** Another live process holds the lock. */
export class OutDirBusyError extends Error {
  override name = 'OutDirBusyError';
  constructor(
    readonly outDir: string,
    readonly owner: LockOwner,
  ) {
    const where = owner.host === hostname() ? `pid ${owner.pid} on this host` : `pid ${owner.pid} on host ${owner.host}`;
    super(
      `${outDir} is in use by another trainer (${where}, since ${owner.started}); wait for it to finish or choose another --out (if no trainer runs there any more, delete ${join(outDir, OUT_DIR_LOCK_FILE)})`,
    );
  }
}

export interface OutDirLock {
  readonly path: string;
  /** The stale lock this one replaced, if any. */
  readonly tookOverFrom: LockOwner | null;
  /** Removes the lock (idempotent). */
  release(): void;
}

/**
 * Locks `outDir` (created if missing) for this process. Throws `OutDirBusyError` when a live
 * process holds it; errors creating the folder or the lock name the folder.
 */
export function lockOutDir(outDir: string): OutDirLock {
  mkdirSync(outDir, { recursive: true });
  const path = join(outDir, OUT_DIR_LOCK_FILE);
  const me: LockOwner = { pid: process.pid, host: hostname(), token: randomUUID(), started: new Date().toISOString() };
  const draft = join(outDir, `${OUT_DIR_LOCK_FILE}.${process.pid}.${me.token}`);
  writeFileSync(draft, JSON.stringify(me));
  let tookOverFrom: LockOwner | null = null;
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        linkSync(draft, path);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 20) throw e;
      }
      const owner = readOwner(path);
      if (owner === null) continue; // released meanwhile: try again
      const stale = owner.host === me.host && (owner.pid === process.pid || !isProcessAlive(owner.pid));
      if (!stale) throw new OutDirBusyError(outDir, owner);
      // Take over: move the stale lock aside, and only drop it if it is still the one judged stale.
      const aside = `${draft}.stale`;
      try {
        renameSync(path, aside);
      } catch {
        continue; // someone else moved it first
      }
      const moved = readOwner(aside);
      if (moved && moved.token !== owner.token) {
        // A live lock replaced the stale one between the read and the rename: put it back.
        try {
          linkSync(aside, path);
        } finally {
          rmSync(aside, { force: true });
        }
        continue;
      }
      rmSync(aside, { force: true });
      tookOverFrom = owner;
    }
  } finally {
    rmSync(draft, { force: true });
  }

  let held = true;
  const release = () => {
    if (!held) return;
    held = false;
    process.off('exit', release);
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigterm);
    if (readOwner(path)?.token === me.token) rmSync(path, { force: true });
  };
  // The default action of these signals would skip 'exit' handlers: release, then die as asked.
  const onSignal = (code: number) => {
    release();
    process.exit(code);
  };
  const onSigint = () => onSignal(130);
  const onSigterm = () => onSignal(143);
  process.on('exit', release);
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);
  return { path, tookOverFrom, release };
}

function readOwner(path: string): LockOwner | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  try {
    const owner = JSON.parse(text) as LockOwner;
    if (Number.isSafeInteger(owner.pid) && typeof owner.host === 'string' && typeof owner.token === 'string') return owner;
  } catch {
    // fall through: not a lock this version writes
  }
  const age = statSync(path).mtime.toISOString();
  throw new Error(`${path} is not a trainer lock this version writes (modified ${age}); delete it if no trainer is using the folder`);
}
