/**
 * Folders that appear complete or not at all (a model, an adapter, a merged model): the contents are
 * written into a temporary sibling `.<name>.tmp-<pid>-<tag>`, which is renamed into place when whole.
 * An existing folder is replaced by renaming it aside (`.<name>.old-<pid>-<tag>`), renaming the new
 * one in, then deleting the old one. A process killed at any point leaves the old folder or the new
 * one, plus leftovers that {@link recoverFolder} clears: the next save (or load) of the folder puts
 * back an old folder left aside without a new one, and deletes what dead processes left behind.
 *
 * Renames are synchronous, for the reason atomic-file.ts gives.
 */
import { randomBytes } from 'node:crypto';
import { renameSync } from 'node:fs';
import { copyFile, link, lstat, mkdir, readdir, readlink, realpath, rm, stat, symlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { syncFolder } from './atomic-file';
import { namingUserPath } from './fs-errors';
import { isProcessAlive } from './process-alive';

export interface AtomicFolderOptions {
  /**
   * Start from what the folder holds now (hard links, so nothing is copied), so that files the
   * writer does not touch are kept, as a save into an existing folder keeps them. The writer must
   * then replace files (write a new one and rename it, as AtomicFile does), never change one in
   * place: it would change the old folder's copy too. Default false: the folder is replaced as a whole.
   */
  keepOtherFiles?: boolean;
}

/**
 * Has `write` fill a temporary folder, then puts it in place of `folder` atomically (see the file
 * comment). Errors name `folder`, never the temporary one; on an error the folder is as it was.
 */
export async function writeFolderAtomically<T>(folder: string, write: (temp: string) => Promise<T>, options: AtomicFolderOptions = {}): Promise<T> {
  // A symlink to a folder stays: the folder it points to is the one replaced.
  const target = await realpath(resolve(folder)).catch(() => resolve(folder));
  const parent = dirname(target);
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const temp = join(parent, `.${basename(target)}.tmp-${tag}`);
  try {
    await mkdir(parent, { recursive: true });
    await recoverFolder(target);
    const existing = await lstat(target).catch(() => null);
    if (existing && !existing.isDirectory()) throw new Error(`cannot write ${folder}: it is a file, not a folder`);
    await mkdir(temp);
    if (existing && options.keepOtherFiles) await linkTree(target, temp);
    const result = await write(temp);
    await syncFolder(temp);
    swapIn(target, temp, tag);
    await syncFolder(parent);
    await rm(join(parent, `.${basename(target)}.old-${tag}`), { recursive: true, force: true });
    return result;
  } catch (e) {
    await rm(temp, { recursive: true, force: true }).catch(() => {});
    throw namingUserPath(e, temp, folder);
  }
}

/** Renames `temp` to `target`, first moving an existing `target` aside (put back if the second rename fails). */
function swapIn(target: string, temp: string, tag: string): void {
  try {
    renameSync(temp, target);
    return;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'EISDIR' && code !== 'EPERM') throw e;
  }
  const aside = join(dirname(target), `.${basename(target)}.old-${tag}`);
  renameSync(target, aside);
  try {
    renameSync(temp, target);
  } catch (e) {
    renameSync(aside, target);
    throw e;
  }
}

const LEFTOVER = /^\.(.+)\.(tmp|old)-(\d+)-[0-9a-f]{8}$/;

/**
 * Clears what saves of `folder` killed midway left: when the folder is missing but an old copy was
 * left aside, that copy is put back; temporary and aside folders of processes no longer running are
 * deleted. Returns true when it put a folder back.
 */
export async function recoverFolder(folder: string): Promise<boolean> {
  const target = resolve(folder);
  return (await recoverLeftovers(dirname(target), basename(target))).length > 0;
}

/**
 * {@link recoverFolder} for every folder of `parent` that a killed save left leftovers of (e.g. a
 * trainer's output folder, whose checkpoints are saved through temporary folders). Returns the
 * folders put back.
 */
export async function recoverFoldersIn(parent: string): Promise<string[]> {
  return recoverLeftovers(resolve(parent), null);
}

async function recoverLeftovers(parent: string, only: string | null): Promise<string[]> {
  const byName = new Map<string, { path: string; kind: string; mtimeMs: number }[]>();
  for (const entry of await readdir(parent).catch(() => [] as string[])) {
    const m = LEFTOVER.exec(entry);
    if (!m || (only !== null && m[1] !== only) || isProcessAlive(Number(m[3]))) continue;
    const s = await stat(join(parent, entry)).catch(() => null);
    if (!s) continue;
    const list = byName.get(m[1]!) ?? [];
    list.push({ path: join(parent, entry), kind: m[2]!, mtimeMs: s.mtimeMs });
    byName.set(m[1]!, list);
  }
  const restored: string[] = [];
  for (const [name, leftovers] of byName) {
    const target = join(parent, name);
    if (
      !(await lstat(target).then(
        () => true,
        () => false,
      ))
    ) {
      const aside = leftovers.filter((l) => l.kind === 'old').sort((a, b) => b.mtimeMs - a.mtimeMs)[0];
      if (aside) {
        renameSync(aside.path, target);
        await syncFolder(parent);
        leftovers.splice(leftovers.indexOf(aside), 1);
        restored.push(target);
      }
    }
    for (const l of leftovers) await rm(l.path, { recursive: true, force: true });
  }
  return restored;
}

/** Recreates the tree at `from` under `to` (an existing folder) with hard links (copies where links are refused). */
async function linkTree(from: string, to: string): Promise<void> {
  for (const entry of await readdir(from, { withFileTypes: true })) {
    const source = join(from, entry.name);
    const dest = join(to, entry.name);
    if (entry.isDirectory()) {
      await mkdir(dest);
      await linkTree(source, dest);
    } else if (entry.isSymbolicLink()) {
      await symlink(await readlink(source), dest);
    } else if (entry.isFile()) {
      await link(source, dest).catch(() => copyFile(source, dest));
    }
  }
}
