/**
 * The Hugging Face hub cache, shared with Python tools (huggingface_hub, transformers):
 *
 *     <cache>/models--<org>--<name>/
 *       blobs/<etag>                      file contents, named by sha256 (LFS) or git sha1
 *       refs/<revision>                   the commit a branch or tag pointed to
 *       snapshots/<commit>/<path>         relative symlinks into blobs/
 *     <cache>/.locks/models--<org>--<name>/<etag>.lock   held while a blob is being downloaded
 *
 * The cache folder is `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `HF_HOME/hub`, else
 * `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub` (huggingface_hub's order; the JS
 * library's getHFHubCachePath and getRepoFolderName are these two lines, written here so that reading
 * the cache does not load the library: see libraries.ts).
 */
import { copyFile, lstat, mkdir, readFile, rm, stat, symlink } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { writeFileAtomically } from './atomic-file';
import { checkRevision, isCommitHash } from './repo-id';

/** `HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` (read at call time). */
export function huggingFaceHome(): string {
  return process.env.HF_HOME ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'huggingface');
}

/** The hub cache folder from the environment (read at call time). */
export function defaultHubCacheDir(): string {
  return process.env.HF_HUB_CACHE ?? process.env.HUGGINGFACE_HUB_CACHE ?? join(huggingFaceHome(), 'hub');
}

/** An etag as a blob name: without weak marker and quotes. */
export function normalizeEtag(etag: string): string {
  return etag.replace(/^W\//, '').replace(/^"|"$/g, '');
}

/** One model repository's folder in the cache. */
export class RepoCache {
  /** `<cache>/models--<org>--<name>`. */
  readonly folder: string;

  constructor(
    readonly cacheDir: string,
    readonly repoId: string,
  ) {
    this.folder = join(cacheDir, ['models', ...repoId.split('/')].join('--'));
  }

  blobPath(etag: string): string {
    return join(this.folder, 'blobs', normalizeEtag(etag));
  }

  /** The lock file held while the blob is downloaded (where huggingface_hub keeps its own). */
  lockPath(etag: string): string {
    return join(this.cacheDir, '.locks', basename(this.folder), `${normalizeEtag(etag)}.lock`);
  }

  snapshotDir(commit: string): string {
    return join(this.folder, 'snapshots', commit);
  }

  /** The commit `revision` names: itself when it is a commit id, else what refs/<revision> holds (null when unknown). */
  async commitFor(revision: string): Promise<string | null> {
    checkRevision(revision);
    if (isCommitHash(revision)) return revision;
    const text = await readFile(join(this.folder, 'refs', revision), 'utf8').catch(() => null);
    const commit = text?.trim() ?? null;
    return commit && isCommitHash(commit) ? commit : null;
  }

  /** Records that `revision` points at `commit`. */
  async writeRef(revision: string, commit: string): Promise<void> {
    checkRevision(revision);
    if (revision === commit) return;
    const path = join(this.folder, 'refs', revision);
    await mkdir(dirname(path), { recursive: true });
    await writeFileAtomically(path, commit);
  }

  /** Whether the snapshot has `path` and it resolves to a file. */
  async hasFile(commit: string, path: string): Promise<boolean> {
    return (await this.fileSize(commit, path)) !== null;
  }

  /** Size of the file the snapshot has at `path` (following its link), or null when there is none. */
  async fileSize(commit: string, path: string): Promise<number | null> {
    return stat(join(this.snapshotDir(commit), path)).then(
      (s) => (s.isFile() ? s.size : null),
      () => null,
    );
  }

  /** Size of the blob, or null when it is absent. */
  async blobSize(etag: string): Promise<number | null> {
    return stat(this.blobPath(etag)).then(
      (s) => (s.isFile() ? s.size : null),
      () => null,
    );
  }

  /**
   * Points snapshots/<commit>/<path> at blobs/<etag> with a relative symlink (as Python does);
   * where symlinks are not allowed (Windows without developer mode) the blob is copied.
   */
  async link(commit: string, path: string, etag: string): Promise<string> {
    const pointer = join(this.snapshotDir(commit), path);
    const blob = this.blobPath(etag);
    await mkdir(dirname(pointer), { recursive: true });
    if (
      await lstat(pointer).then(
        () => true,
        () => false,
      )
    )
      await rm(pointer, { force: true });
    try {
      await symlink(relative(dirname(pointer), blob), pointer);
    } catch {
      await copyFile(blob, pointer);
    }
    return pointer;
  }
}
