/** Hub repository ids ("org/name" or "name") and revisions, checked before they become cache paths. */
import { HubError } from './errors';

const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** True when `value` has the shape of a model repo id. */
export function isRepoId(value: string): boolean {
  const parts = value.split('/');
  return parts.length <= 2 && value.length <= 96 * 2 && parts.every((p) => SEGMENT.test(p) && !p.includes('..') && !p.endsWith('.'));
}

/** Throws unless `revision` is a safe branch, tag or commit name (it is used as a path under refs/). */
export function checkRevision(revision: string): void {
  const bad =
    revision.length === 0 ||
    revision.startsWith('/') ||
    revision.includes('\\') ||
    revision.includes('\0') ||
    revision.split('/').some((p) => p === '..' || p === '.' || p === '');
  if (bad) throw new HubError(`revision ${JSON.stringify(revision)} is not a valid branch, tag or commit name`);
}

/** A full 40-hex commit id. */
export function isCommitHash(revision: string): boolean {
  return /^[0-9a-f]{40}$/.test(revision);
}
