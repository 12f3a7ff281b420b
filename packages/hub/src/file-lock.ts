/**
 * An exclusive lock held as a file, one per shared resource (a blob of the HF cache is locked at
 * `<cache>/.locks/<repo folder>/<etag>.lock`, the path huggingface_hub uses).
 *
 * Where the kernel's flock is available (Linux, macOS) the lock is flock on that file, as Python's
 * `filelock` holds it: our processes and Python's wait for each other, and the kernel releases the
 * lock of a process that dies. The file is left in place (as Python leaves it); it holds the owner's
 * pid and host while held, for the messages of those waiting.
 *
 * Elsewhere (or on a filesystem without flock) the file's existence is the lock: the owner writes its
 * pid and host into a private file and hard-links it to the lock path (the link fails when the lock
 * exists, and the lock never appears half-written), refreshes its mtime while held and deletes it on
 * release. Such a lock is stale, and taken over, when its owner is a dead process of this host, or
 * when it has not been refreshed for {@link STALE_AFTER_MS} (an owner on another host, or a file left
 * by another tool).
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, mkdir, open, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { kernelFlock, type KernelFlock } from './flock';
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
  /** Use the kernel's flock where it is available (default true); false: the lock file's existence alone. */
  flock?: boolean;
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
    private readonly releaseHeld: () => Promise<void>,
  ) {}

  /** Waits until the lock at `path` is free (or stale) and takes it. */
  static async acquire(path: string, options: AcquireOptions = {}): Promise<FileLock> {
    await mkdir(dirname(path), { recursive: true });
    const flock = options.flock === false ? null : kernelFlock();
    const release = (flock && (await acquireFlock(path, flock, options))) ?? (await acquireLinked(path, options));
    return new FileLock(path, release);
  }

  /** Releases the lock. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.releaseHeld();
  }
}

function ownerText(): string {
  return JSON.stringify({ pid: process.pid, host: hostname(), token: randomBytes(8).toString('hex') });
}

/** Holds flock on the lock file; returns its release, or null when the filesystem has no flock. */
async function acquireFlock(path: string, flock: KernelFlock, options: AcquireOptions): Promise<(() => Promise<void>) | null> {
  let delay = 10;
  let waiting = false;
  for (;;) {
    const handle = await open(path, constants.O_RDWR | constants.O_CREAT);
    const state = flock.tryLock(handle.fd);
    if (state === 'unsupported') {
      await handle.close();
      return null;
    }
    if (state === 'taken') {
      // The lock counts only on the file the path names now (not one deleted meanwhile).
      const [mine, now] = [await handle.stat(), await stat(path).catch(() => null)];
      if (now && now.ino === mine.ino && now.dev === mine.dev) {
        await handle.truncate(0);
        await handle.write(ownerText(), 0);
        return async () => {
          await handle.truncate(0).catch(() => {});
          flock.unlock(handle.fd);
          await handle.close();
        };
      }
      flock.unlock(handle.fd);
      await handle.close();
      continue;
    }
    if (!waiting) options.onWait?.(parseOwner(await readFile(path, 'utf8').catch(() => '')));
    waiting = true;
    await handle.close();
    await Bun.sleep(delay);
    delay = Math.min(MAX_POLL_MS, delay * 2);
  }
}

/** Takes the lock as a linked owner file (see the file comment); returns its release. */
async function acquireLinked(path: string, options: AcquireOptions): Promise<() => Promise<void>> {
  const content = ownerText();
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
  return async () => {
    clearInterval(refresh);
    await rm(path, { force: true });
  };
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
