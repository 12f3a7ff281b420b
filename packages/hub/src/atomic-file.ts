/**
 * Files that appear complete or not at all: bytes go to a temporary file in the destination's
 * folder (same filesystem, so the rename is atomic), which is flushed to disk and then renamed over
 * the destination. A crash leaves at most a stray temporary file, never a half-written destination.
 * Errors name the destination, not the temporary file.
 *
 * Renames are synchronous: they are quick metadata operations, and all of them then happen on the
 * main thread in program order (which lets tests kill a save at its K-th rename with strace).
 */
import { randomBytes } from 'node:crypto';
import { renameSync } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { namingUserPath } from './fs-errors';

/** A file being written under a temporary name, renamed into place when complete. */
export class AtomicFile {
  private written = 0;
  private closed = false;

  private constructor(
    /** The temporary file being written. */
    readonly tempPath: string,
    /** The path errors name. */
    private readonly destination: string,
    private readonly handle: FileHandle,
  ) {}

  /** Starts a temporary file beside `destination` (the folder must exist). */
  static async create(destination: string): Promise<AtomicFile> {
    const temp = join(dirname(destination), `.${basename(destination)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    try {
      return new AtomicFile(temp, destination, await open(temp, 'wx'));
    } catch (e) {
      throw namingUserPath(e, temp, destination);
    }
  }

  /** Bytes appended so far. */
  get size(): number {
    return this.written;
  }

  /** Appends bytes. */
  async write(bytes: Uint8Array): Promise<void> {
    let done = 0;
    try {
      while (done < bytes.byteLength) {
        const { bytesWritten } = await this.handle.write(bytes, done, bytes.byteLength - done, this.written + done);
        done += bytesWritten;
      }
    } catch (e) {
      throw namingUserPath(e, this.tempPath, this.destination);
    }
    this.written += bytes.byteLength;
  }

  /** Flushes the data to disk and closes the temporary file; it can then be renamed with {@link commitTo}. */
  async finish(): Promise<void> {
    if (this.closed) return;
    try {
      await this.handle.sync();
      await this.handle.close();
    } catch (e) {
      throw namingUserPath(e, this.tempPath, this.destination);
    }
    this.closed = true;
  }

  /** Flushes, closes and renames the temporary file over `destination`, then syncs the folder. */
  async commitTo(destination: string): Promise<void> {
    await this.finish();
    try {
      renameSync(this.tempPath, destination);
    } catch (e) {
      throw namingUserPath(e, this.tempPath, destination);
    }
    await syncFolder(dirname(destination));
  }

  /** Closes and deletes the temporary file (after a failure). */
  async abort(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      await this.handle.close().catch(() => {});
    }
    await rm(this.tempPath, { force: true });
  }
}

/** Writes `bytes` to `path` atomically. */
export async function writeFileAtomically(path: string, bytes: Uint8Array | string): Promise<void> {
  const file = await AtomicFile.create(path);
  try {
    await file.write(typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes);
    await file.commitTo(path);
  } catch (e) {
    await file.abort();
    throw e;
  }
}

/** Makes a rename in `folder` durable; folders cannot be opened for sync on every platform (Windows), which is then skipped. */
export async function syncFolder(folder: string): Promise<void> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(folder, 'r');
    await handle.sync();
  } catch {
    // Best effort: the rename itself is already atomic.
  } finally {
    await handle?.close().catch(() => {});
  }
}
