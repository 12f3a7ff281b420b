/** A file-system error's reason in words, without the (possibly temporary) path Node puts in its message. */
export function fsReason(e: NodeJS.ErrnoException): string {
  switch (e.code) {
    case 'ENOSPC':
      return 'no space left on the device';
    case 'EDQUOT':
      return 'disk quota exceeded';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EROFS':
      return 'read-only file system';
    case 'ENOTDIR':
      return 'a part of the path is a file, not a folder';
    case 'EEXIST':
      return 'a file is in the way';
    case 'EISDIR':
      return 'is a folder';
    case 'ENOENT':
      return 'no such file or folder';
    default:
      return e.code ?? e.message;
  }
}
