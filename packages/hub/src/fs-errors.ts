/**
 * File-system errors as the user should read them: naming the path they gave (never the temporary
 * file or folder a write goes through) and saying what the code means. The one home of this
 * wording: the root package (CLI, trainer) words its errors with {@link fsErrorMeaning}.
 */

const MEANING: Readonly<Record<string, string>> = {
  ENOSPC: 'no space left on the device',
  EDQUOT: 'the disk quota is exceeded',
  EISDIR: 'a folder is in the way',
  ENOTDIR: 'a part of the path is a file, not a folder',
  EEXIST: 'a file is in the way',
  ENOENT: 'a folder on the path does not exist',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'the file system is read-only',
  ENAMETOOLONG: 'the name is too long',
  EMFILE: 'too many open files',
  EIO: 'an input/output error',
};

/** What a file-system error's code means, in words, without the (possibly temporary) path Node puts in its message. */
export function fsErrorMeaning(e: NodeJS.ErrnoException): string {
  return (e.code !== undefined ? MEANING[e.code] : undefined) ?? e.code ?? e.message;
}

/**
 * `e` re-worded to name `userPath` when it is a system error (`code` is kept, the original is the
 * `cause`; a system error re-worded for a file in a temporary folder is re-worded for the folder);
 * other errors have every mention of `tempPath` replaced by `userPath`.
 */
export function namingUserPath(e: unknown, tempPath: string, userPath: string, action = 'cannot write'): unknown {
  if (!(e instanceof Error)) return e;
  const code = (e as NodeJS.ErrnoException).code;
  // A system error, or one already re-worded for a file inside the folder: re-worded for the user's path.
  if (typeof code === 'string' && (typeof (e as NodeJS.ErrnoException).syscall === 'string' || code in MEANING)) {
    const wrapped = new Error(`${action} ${userPath}: ${MEANING[code] ?? e.message.replaceAll(tempPath, userPath)} (${code})`, { cause: e });
    (wrapped as NodeJS.ErrnoException).code = code;
    return wrapped;
  }
  if (e.message.includes(tempPath)) e.message = e.message.replaceAll(tempPath, userPath);
  return e;
}
