/**
 * FileLock: with flock, a lock another program holds (as Python's filelock holds the HF cache's
 * locks) is waited for; with lock files alone, the lock of a process that died is taken over and a
 * live owner is waited for.
 */
import { expect, test } from 'bun:test';
import { writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { FileLock, type LockOwner } from '../src/file-lock';
import { kernelFlock } from '../src/flock';
import { tempDir } from './support/temp-dir';

const flockCommand = Bun.which('flock');

test.skipIf(flockCommand === null || kernelFlock() === null)('flock: a lock held by another program is waited for, then taken', async () => {
  const path = join(tempDir('lock'), 'blob.lock');
  const holder = Bun.spawn([flockCommand!, path, 'sleep', '0.6']);
  await Bun.sleep(200); // the holder has it by now
  let exited = false;
  void holder.exited.then(() => (exited = true));
  const waited: (LockOwner | null)[] = [];
  const lock = await FileLock.acquire(path, { onWait: (owner) => waited.push(owner) });
  expect(exited).toBe(true);
  expect(waited).toEqual([null]); // a holder that wrote no pid
  // Now ours: another program waits for us.
  expect(Bun.spawnSync([flockCommand!, '-n', path, 'true']).exitCode).not.toBe(0);
  await lock.release();
  expect(Bun.spawnSync([flockCommand!, '-n', path, 'true']).exitCode).toBe(0);
});

test('lock files alone: a dead owner is taken over, a live one is waited for', async () => {
  const path = join(tempDir('lock'), 'blob.lock');
  const dead = Bun.spawnSync(['true']).pid;
  writeFileSync(path, JSON.stringify({ pid: dead, host: hostname() }));
  const first = await FileLock.acquire(path, { flock: false });
  await first.release();

  const owner = Bun.spawn(['sleep', '0.5']);
  writeFileSync(path, JSON.stringify({ pid: owner.pid, host: hostname() }));
  let exited = false;
  void owner.exited.then(() => (exited = true));
  const waited: (LockOwner | null)[] = [];
  const second = await FileLock.acquire(path, { flock: false, onWait: (o) => waited.push(o) });
  expect(exited).toBe(true);
  expect(waited).toEqual([{ pid: owner.pid, host: hostname() }]);
  await second.release();
});
