/**
 * `resolveCheckpoint`: a local folder as it is, or a Hub repository id resolved through the shared
 * HF cache (downloading what is missing), so a checkpoint fetched by Python tools is reused here and
 * ours is reused by them.
 */
import { mkdir, stat } from 'node:fs/promises';
import { dirname, join, resolve as resolvePath } from 'node:path';
import type { ListFileEntry } from '@huggingface/hub';
import { recoverFolder } from './atomic-folder';
import { RepoCache, normalizeEtag } from './repo-cache';
import { downloadBlob, type EtagKind } from './download';
import { hubLibrary } from './libraries';
import { HubError } from './errors';
import { matchesAny } from './glob';
import { hubErrorFrom, isNetworkError } from './hub-errors';
import { hubSettings, type HubSettings } from './hub-settings';
import { ProgressBar, type DownloadProgress } from './progress';
import { unsafeRelativePath } from './relative-path';
import { checkRevision, isCommitHash, isRepoId } from './repo-id';
import { INDEX_FILE, parseShardIndex } from './safetensors/shard-index';

/** What a checkpoint needs by default: configs, tokenizer files, weights and chat templates. */
export const DEFAULT_ALLOW_PATTERNS: readonly string[] = ['*.json', '*.safetensors', '*.jinja'];

/** Options of {@link resolveCheckpoint}; each defaults to its environment variable where there is one. */
export interface ResolveOptions {
  /** Branch, tag or commit (default "main"). */
  revision?: string;
  /** The hub cache folder (default HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub). */
  cacheDir?: string;
  /** Access token (default HF_TOKEN, else the token saved by `huggingface-cli login`). */
  token?: string;
  /** Use only the cache, never the network (default: HF_HUB_OFFLINE=1). */
  localFilesOnly?: boolean;
  /** The Hub's address (default HF_ENDPOINT, else https://huggingface.co). */
  endpoint?: string;
  /** Which repository files to fetch (see glob.ts; default {@link DEFAULT_ALLOW_PATTERNS}). */
  allowPatterns?: readonly string[];
  /** Called as bytes arrive. */
  onProgress?: (event: DownloadProgress) => void;
  /** Draw a progress bar on stderr (default: when stderr is a TTY, unless HF_HUB_DISABLE_PROGRESS_BARS). */
  progressBar?: boolean;
  /** A fetch to use instead of the global one (proxies, custom headers). */
  fetch?: typeof fetch;
}

/**
 * Returns a local folder holding the checkpoint `pathOrRepoId` names: an existing folder as is,
 * else the snapshot folder of the Hub repository (org/name) in the HF cache, after downloading the
 * files `allowPatterns` selects that the cache lacks.
 */
export async function resolveCheckpoint(pathOrRepoId: string, options: ResolveOptions = {}): Promise<string> {
  let local = await stat(pathOrRepoId).catch(() => null);
  // A folder whose save was killed between moving the old copy aside and moving the new one in.
  if (!local && (await recoverFolder(pathOrRepoId))) local = await stat(pathOrRepoId).catch(() => null);
  if (local?.isDirectory()) return resolvePath(pathOrRepoId);
  if (local) throw new HubError(`${pathOrRepoId} is a file; give the folder that holds the checkpoint`);
  if (!isRepoId(pathOrRepoId)) throw new HubError(`${pathOrRepoId}: no such folder, and not a Hub repository id like "org/name"`);
  const revision = options.revision ?? 'main';
  checkRevision(revision);
  const settings = hubSettings(options);
  const cache = new RepoCache(settings.cacheDir, pathOrRepoId);
  if (settings.offline) {
    const cached = await cachedSnapshot(cache, revision);
    if (cached) return cached;
    const reason = options.localFilesOnly ? 'localFilesOnly is set' : 'HF_HUB_OFFLINE is set';
    throw new HubError(
      `${pathOrRepoId}@${revision} is not in the cache at ${cache.folder}, and downloads are off (${reason}); run once online or give a local folder`,
    );
  }
  return download(cache, revision, settings, options);
}

async function download(cache: RepoCache, revision: string, settings: HubSettings, options: ResolveOptions): Promise<string> {
  const repoId = cache.repoId;
  const access = { hubUrl: settings.endpoint, accessToken: settings.token, fetch: options.fetch ?? fetch };
  let commit: string;
  let entries: ListFileEntry[];
  try {
    const { listFiles, modelInfo } = await hubLibrary();
    const info = await modelInfo({ ...access, name: repoId, revision, additionalFields: ['sha'] });
    if (typeof info.sha !== 'string' || !isCommitHash(info.sha)) throw new HubError(`${repoId}@${revision}: the Hub did not return a commit id`);
    commit = info.sha;
    entries = [];
    for await (const e of listFiles({ ...access, repo: { type: 'model', name: repoId }, revision: commit, recursive: true })) entries.push(e);
  } catch (e) {
    if (e instanceof HubError) throw e;
    if (isNetworkError(e)) {
      const cached = await cachedSnapshot(cache, revision);
      if (cached) {
        console.warn(`nemotron-ts: cannot reach ${settings.endpoint} (${(e as Error).message}); using the cached ${repoId}@${revision}`);
        return cached;
      }
    }
    throw hubErrorFrom(e, `${repoId}@${revision}`, settings.token, settings.endpoint);
  }
  await cache.writeRef(revision, commit);

  const patterns = options.allowPatterns ?? DEFAULT_ALLOW_PATTERNS;
  const files = entries.filter((e) => e.type === 'file' && matchesAny(e.path, patterns)).map(fileToFetch);
  if (files.length === 0) throw new HubError(`${repoId}@${revision}: no files match ${patterns.join(', ')}`);
  for (const f of files) {
    const bad = unsafeRelativePath(f.path);
    if (bad) throw new HubError(`${repoId}@${revision}: the file listing has a path ${JSON.stringify(f.path)} that ${bad}`);
  }

  // A blob of the wrong size (a broken earlier download, another tool) is fetched again, never used.
  const missing: FileToFetch[] = [];
  for (const f of files) {
    const blob = await cache.blobSize(f.etag);
    if (blob === f.size) {
      if (!(await cache.hasFile(commit, f.path))) await cache.link(commit, f.path, f.etag);
    } else if (blob !== null || (await cache.fileSize(commit, f.path)) !== f.size) {
      missing.push(f);
    } // else: no blob but a snapshot file of the right size (a cache whose files were moved out of blobs/, as on Windows without symlinks)
  }
  // Small files (configs, the shard index) first: once the index is in, a snapshot whose weights
  // failed to arrive is recognisably incomplete (see cachedSnapshot).
  missing.sort((a, b) => Number(a.path.endsWith('.safetensors')) - Number(b.path.endsWith('.safetensors')));
  const overallTotal = missing.reduce((s, f) => s + f.size, 0);
  const bar = settings.progressBar && missing.length > 0 ? new ProgressBar() : null;
  let done = 0;
  try {
    for (const f of missing) {
      const blobPath = cache.blobPath(f.etag);
      await mkdir(dirname(blobPath), { recursive: true });
      const onBytes = (bytes: number) => {
        const event: DownloadProgress = { file: f.path, bytes, total: f.size, overallBytes: done + bytes, overallTotal };
        options.onProgress?.(event);
        bar?.update(event);
      };
      await downloadBlob({
        repoId,
        path: f.path,
        commit,
        ...access,
        blobPath,
        lockPath: cache.lockPath(f.etag),
        size: f.size,
        etag: f.etag,
        etagKind: f.etagKind,
        onBytes,
      });
      await cache.link(commit, f.path, f.etag);
      done += f.size;
    }
  } finally {
    bar?.finish();
  }
  return cache.snapshotDir(commit);
}

interface FileToFetch {
  path: string;
  size: number;
  etag: string;
  etagKind: EtagKind;
}

/** The blob name and checksum kind HF tools use: the LFS sha256, else the xet hash, else the git oid. */
function fileToFetch(e: ListFileEntry): FileToFetch {
  if (e.lfs) return { path: e.path, size: e.lfs.size ?? e.size, etag: normalizeEtag(e.lfs.oid), etagKind: 'sha256' };
  if (e.xetHash) return { path: e.path, size: e.size, etag: normalizeEtag(e.xetHash), etagKind: 'opaque' };
  if (!e.oid) throw new HubError(`the file listing gives no id for ${e.path}`);
  return { path: e.path, size: e.size, etag: normalizeEtag(e.oid), etagKind: 'git-sha1' };
}

/**
 * The cached snapshot for `revision`, when it is there and its sharded weights are complete (every
 * shard the index lists is present); else null.
 */
export async function cachedSnapshot(cache: RepoCache, revision: string): Promise<string | null> {
  const commit = await cache.commitFor(revision);
  if (!commit) return null;
  const dir = cache.snapshotDir(commit);
  if (
    !(await stat(dir).then(
      (s) => s.isDirectory(),
      () => false,
    ))
  )
    return null;
  if (await cache.hasFile(commit, INDEX_FILE)) {
    const index = parseShardIndex(await Bun.file(join(dir, INDEX_FILE)).text(), join(dir, INDEX_FILE));
    for (const shard of index.shards) if (!(await cache.hasFile(commit, shard))) return null;
  }
  return dir;
}
