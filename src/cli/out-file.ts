/**
 * A command's output file flag (`forward --out FILE`), checked before any work so a bad path fails
 * at once naming the flag, and write errors that name the flag and path, never the temporary file
 * the atomic write goes through.
 */
import { accessSync, constants, statSync, type Stats } from 'node:fs';
import { dirname } from 'node:path';
import { fsErrorMeaning } from '@nemotron-ts/hub';
import { RefusedError } from './args';

/** Fails naming `--flag PATH` when PATH is a folder or its folder is missing, not a folder, or not writable. */
export function checkOutFile(flag: string, path: string): void {
  const fail = (why: string) => new RefusedError(`--${flag} ${path}: ${why}`);
  const here = statOrNull(path);
  if (here?.isDirectory()) throw fail('is a folder; give the path of a file to write');
  const parent = dirname(path);
  const folder = statOrNull(parent);
  if (!folder) throw fail(`its folder ${parent} does not exist`);
  if (!folder.isDirectory()) throw fail(`${parent} is not a folder`);
  try {
    accessSync(parent, constants.W_OK);
  } catch (e) {
    throw fail(`cannot write in ${parent} (${fsErrorMeaning(e as NodeJS.ErrnoException)})`);
  }
}

/** Runs `write`, turning a file-system error into one naming `--flag PATH`. */
export async function writingOutFile<T>(flag: string, path: string, write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (e) {
    if (!(e as NodeJS.ErrnoException).code) throw e;
    throw new Error(`--${flag} ${path}: cannot write the file (${fsErrorMeaning(e as NodeJS.ErrnoException)})`, { cause: e });
  }
}

function statOrNull(path: string): Stats | null {
  try {
    return statSync(path);
  } catch {
    return null;
  }
}
