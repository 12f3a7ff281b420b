/** Paths that come from files or servers and are joined onto a local folder must stay inside it. */

/** Why `path` could leave the folder it is joined to, or null when it is a safe relative path. */
export function unsafeRelativePath(path: string): string | null {
  if (path.length === 0) return 'is empty';
  if (path.startsWith('/') || /^[a-zA-Z]:/.test(path)) return 'is an absolute path';
  if (path.includes('\\')) return 'contains a backslash';
  if (path.includes('\0')) return 'contains a NUL character';
  if (path.split('/').some((part) => part === '..')) return "contains a '..' segment";
  return null;
}
