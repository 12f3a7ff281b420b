/**
 * An exclusive lock held as a file, one per shared resource (a blob of the HF cache is locked at
 * `<cache>/.locks/<repo folder>/<etag>.lock`, the path huggingface_hub uses). The owner writes its
 * pid and host into a private file and hard-links it to the lock path: the link fails when the lock
 * exists, and the lock never appears half-written. While held, the lock's mtime is refreshed. A lock
 * is stale, and taken over, when its owner is a dead process of this host, or when it has not been
 * refreshed for {@link STALE_AFTER_MS} (an owner on another host, or a lock file left by another tool).
 */
import { randomBytes } from 'node:crypto';
import { link, mkdir, open, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { isProcessAlive } from './process-alive';

/** Who holds a lock. */
export interface LockOwner {
  readonly pid: number;
  readonly host: string;
}

/** A lock not refreshed for this long is taken over whoever holds it. */
export const STALE_AFTER_MS = 60_000;
const REFRESH_EVERY_MS = 10_000;
/** Waiters poll the lock at most this far apart. */
const MAX_POLL_MS = 250;

export interface AcquireOptions {
  /** Called once when the lock is held by another live process and the caller starts waiting. */
  onWait?: (owner: LockOwner | null) => void;
}

interface LockState {
  readonly owner: LockOwner | null;
  readonly text: string;
  readonly ino: number;
  readonly mtimeMs: number;
}

export class FileLock {
  private released = false;

  private constructor(
    readonly path: string,
    private readonly refresh: ReturnType<typeof setInterval>,
  ) {}

  /** Waits until the lock at `path` is free (or stale) and takes it. */
  static async acquire(path: string, options: AcquireOptions = {}): Promise<FileLock> {
    await mkdir(dirname(path), { recursive: true });
    const content = JSON.stringify({ pid: process.pid, host: hostname(), token: randomBytes(8).toString('hex') });
    const mine = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.owner`;
    await writeFile(mine, content);
    try {
      let delay = 10;
      let waiting = false;
      for (;;) {
        if (await tryLink(mine, path, content)) break;
        const held = await readLock(path);
        if (!held) continue; // released meanwhile
        if (isStale(held)) {
          await takeOver(path, held);
          continue;
        }
        if (!waiting) options.onWait?.(held.owner);
        waiting = true;
        await Bun.sleep(delay);
        delay = Math.min(MAX_POLL_MS, delay * 2);
      }
    } finally {
      await rm(mine, { force: true });
    }
    const refresh = setInterval(() => {
      const now = new Date();
      utimes(path, now, now).catch(() => {});
    }, REFRESH_EVERY_MS);
    refresh.unref();
    return new FileLock(path, refresh);
  }

  /** Releases the lock (removes the lock file). */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    clearInterval(this.refresh);
    await rm(this.path, { force: true });
  }
}

/** Creates the lock as a link to our owner file; false when it exists. */
async function tryLink(mine: string, path: string, content: string): Promise<boolean> {
  try {
    await link(mine, path);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'ENOSYS') throw e;
  }
  // A filesystem without hard links: an exclusive create (briefly empty, which waiters treat as held).
  try {
    const handle = await open(path, 'wx');
    await handle.writeFile(content);
    await handle.close();
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
}

async function readLock(path: string): Promise<LockState | null> {
  try {
    const [text, s] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
    return { owner: parseOwner(text), text, ino: s.ino, mtimeMs: s.mtimeMs };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

function parseOwner(text: string): LockOwner | null {
  try {
    const o = JSON.parse(text) as Partial<LockOwner>;
    return typeof o.pid === 'number' && typeof o.host === 'string' ? { pid: o.pid, host: o.host } : null;
  } catch {
    return null;
  }
}

function isStale(lock: LockState): boolean {
  if (lock.owner && lock.owner.host === hostname() && !isProcessAlive(lock.owner.pid)) return true;
  return Date.now() - lock.mtimeMs > STALE_AFTER_MS;
}

/**
 * Removes the stale lock `seen`, unless it changed meanwhile. Takeovers go one at a time (a guard
 * file), so a waiter never removes the fresh lock another waiter has just taken.
 */
async function takeOver(path: string, seen: LockState): Promise<void> {
  const guard = `${path}.takeover`;
  try {
    await writeFile(guard, JSON.stringify({ pid: process.pid, host: hostname() }), { flag: 'wx' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    const other = await readLock(guard);
    if (other && isStale(other)) await rm(guard, { force: true });
    else await Bun.sleep(10);
    return;
  }
  try {
    const now = await readLock(path);
    if (now && now.ino === seen.ino && now.text === seen.text) {
      const who = seen.owner ? `process ${seen.owner.pid} on ${seen.owner.host}` : 'another program';
      console.warn(`nemotron-ts: taking over the stale lock ${path} (held by ${who}, which is gone or stopped refreshing it)`);
      await rm(path, { force: true });
    }
  } finally {
    await rm(guard, { force: true });
  }
}
