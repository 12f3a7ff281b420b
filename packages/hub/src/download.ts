/**
 * Downloading one file of a repository into the cache's blob store, safe when several processes
 * share the cache: the blob's lock file (see file-lock.ts) is held for the whole download, so only
 * its holder writes `<blob>.incomplete`; a process that waited finds the finished blob and uses it.
 * Resumable (ranged requests append to `<blob>.incomplete`, across retries and across runs) and
 * atomic: the blob appears under its final name only when complete, after the file on disk was
 * checked against the listing (its size, and its content hash where the etag is one). A blob
 * already there that does not check out is downloaded again, never used.
 */
import { open, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import type { FileDownloadInfoOutput } from '@huggingface/hub';
import { HubError } from './errors';
import { FileLock } from './file-lock';
import { hubErrorFrom } from './hub-errors';
import { hubLibrary } from './libraries';

/** How the etag relates to the content: sha256 of it (LFS), git's blob sha1, or neither (xet hash). */
export type EtagKind = 'sha256' | 'git-sha1' | 'opaque';

/** One file to fetch into the blob store. */
export interface BlobDownload {
  repoId: string;
  /** The file's path in the repository. */
  path: string;
  commit: string;
  hubUrl: string;
  accessToken?: string;
  fetch: typeof fetch;
  /** Final blob path (…/blobs/<etag>); bytes accumulate in `<blobPath>.incomplete`. */
  blobPath: string;
  /** The blob's lock file (…/.locks/<repo folder>/<etag>.lock). */
  lockPath: string;
  size: number;
  etag: string;
  etagKind: EtagKind;
  /** Called with the bytes the blob holds so far. */
  onBytes?: (bytes: number) => void;
}

/** Consecutive attempts that may fail without receiving a byte before the download gives up. */
const MAX_STALLED_ATTEMPTS = 5;
/** An absolute bound on attempts for one file, whatever the progress. */
const MAX_ATTEMPTS = 100;

/** A failure worth retrying (network cut, server error), as opposed to a definite answer. */
class TransientError extends Error {}

/**
 * Makes `blobPath` hold the file: waits for any other process downloading it, keeps a blob that
 * checks out, else fetches it (resuming a partial download) and verifies it before it becomes visible.
 */
export async function downloadBlob(d: BlobDownload): Promise<void> {
  const where = `${d.repoId}/${d.path}`;
  const lock = await FileLock.acquire(d.lockPath, {
    onWait: (owner) => console.warn(`nemotron-ts: ${where}: waiting for ${owner ? `process ${owner.pid}` : 'another program'} downloading it into the cache`),
  });
  try {
    const existing = await stat(d.blobPath).catch(() => null);
    if (existing) {
      if (existing.isFile() && (await contentMismatch(d, d.blobPath)) === null) {
        d.onBytes?.(d.size);
        return;
      }
      await rm(d.blobPath, { force: true });
    }
    await fetchIntoIncomplete(d, where);
  } finally {
    await lock.release();
  }
}

/** Why the file at `path` is not the listed one (size, or content hash where the etag is one); null when it is. */
async function contentMismatch(d: Pick<BlobDownload, 'size' | 'etag' | 'etagKind'>, path: string): Promise<string | null> {
  const size = (await stat(path)).size;
  if (size !== d.size) return `it has ${size} bytes, the listing ${d.size}`;
  if (d.etagKind === 'opaque') return null;
  const hasher = new Bun.CryptoHasher(d.etagKind === 'sha256' ? 'sha256' : 'sha1');
  if (d.etagKind === 'git-sha1') hasher.update(`blob ${d.size}\0`);
  for await (const chunk of Bun.file(path).stream()) hasher.update(chunk);
  const digest = hasher.digest('hex');
  return digest === d.etag.toLowerCase() ? null : `its ${d.etagKind} is ${digest}, the listing's ${d.etag}`;
}

/** The listed file at its commit, and how to reach the Hub: what the @huggingface/hub calls here take. */
function hubFile(d: BlobDownload) {
  return { repo: { type: 'model' as const, name: d.repoId }, path: d.path, revision: d.commit, hubUrl: d.hubUrl, accessToken: d.accessToken, fetch: d.fetch };
}

async function fetchIntoIncomplete(d: BlobDownload, where: string): Promise<void> {
  const incomplete = `${d.blobPath}.incomplete`;
  const { fileDownloadInfo } = await hubLibrary();
  const info = await fileDownloadInfo(hubFile(d)).catch((e: unknown) => {
    throw hubErrorFrom(e, where, d.accessToken, d.hubUrl);
  });
  if (!info) throw new HubError(`${where}: the file is listed at commit ${d.commit} but the Hub has no such entry`, 404);
  if (info.size !== d.size) throw new HubError(`${where}: the Hub reports ${info.size} bytes, the file listing ${d.size}`);

  const handle = await open(incomplete, 'a+');
  try {
    let offset = (await handle.stat()).size;
    if (offset > d.size) {
      await handle.truncate(0);
      offset = 0;
    }
    d.onBytes?.(offset);
    let stalled = 0;
    for (let attempt = 0; offset < d.size; attempt++) {
      if (attempt >= MAX_ATTEMPTS) throw new HubError(`${where}: gave up after ${MAX_ATTEMPTS} attempts (${offset} of ${d.size} bytes)`);
      const before = offset;
      try {
        offset = await transfer(d, info, handle, offset);
      } catch (e) {
        if (!(e instanceof TransientError)) throw e;
        offset = (await handle.stat()).size;
        stalled = offset > before ? 0 : stalled + 1;
        if (stalled >= MAX_STALLED_ATTEMPTS)
          throw new HubError(`${where}: download failed ${stalled} times in a row at byte ${offset} of ${d.size}: ${e.message}`);
        await Bun.sleep(Math.min(3200, 100 * 2 ** stalled));
      }
    }
    await handle.sync();
  } finally {
    await handle.close().catch(() => {});
  }
  const mismatch = await contentMismatch(d, incomplete);
  if (mismatch) {
    await rm(incomplete, { force: true });
    throw new HubError(
      `${where}: the downloaded bytes do not match the file's ${d.etagKind === 'opaque' ? 'size' : d.etagKind} ${d.etagKind === 'opaque' ? d.size : d.etag} (${mismatch}: corrupted transfer or a changed file); the partial file was deleted, try again`,
    );
  }
  await rename(incomplete, d.blobPath);
}

/** One request from `offset` to the end; returns the new offset. Throws TransientError when worth retrying. */
async function transfer(d: BlobDownload, info: FileDownloadInfoOutput, handle: FileHandle, offset: number): Promise<number> {
  const body = info.xet ? xetStream(d, info, offset) : await rangedBody(d, info.url, offset);
  if (body.restart) {
    await handle.truncate(0);
    offset = 0;
  }
  try {
    for await (const chunk of body.stream) {
      if (offset + chunk.byteLength > d.size) throw new HubError(`${d.repoId}/${d.path}: the server sent more than the ${d.size} bytes listed (file changed?)`);
      await writeAll(handle, chunk);
      offset += chunk.byteLength;
      d.onBytes?.(offset);
    }
  } catch (e) {
    if (e instanceof HubError) throw e;
    throw new TransientError(e instanceof Error ? e.message : String(e));
  }
  if (offset < d.size) throw new TransientError(`the connection closed after ${offset} of ${d.size} bytes`);
  return offset;
}

interface Body {
  stream: AsyncIterable<Uint8Array>;
  /** The body starts at byte 0 although a later range was asked for. */
  restart: boolean;
}

async function rangedBody(d: BlobDownload, url: string, offset: number): Promise<Body> {
  const sameOrigin = new URL(url).origin === new URL(d.hubUrl).origin;
  let res: Response;
  try {
    res = await d.fetch(url, { headers: { Range: `bytes=${offset}-`, ...(d.accessToken && sameOrigin ? { Authorization: `Bearer ${d.accessToken}` } : {}) } });
  } catch (e) {
    throw new TransientError((e as Error).message);
  }
  if (res.status === 206) {
    const start = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '')?.[1];
    if (Number(start) !== offset) {
      await res.body?.cancel();
      throw new TransientError(`asked for bytes from ${offset}, the server answered with range ${res.headers.get('content-range')}`);
    }
    return { stream: res.body!, restart: false };
  }
  if (res.status === 200) return { stream: res.body!, restart: offset > 0 };
  await res.body?.cancel();
  if (res.status === 408 || res.status === 429 || res.status >= 500) throw new TransientError(`the server answered ${res.status}`);
  throw hubErrorFrom(new HubError(`HTTP ${res.status}`, res.status), `${d.repoId}/${d.path}`, d.accessToken, d.hubUrl);
}

function xetStream(d: BlobDownload, info: FileDownloadInfoOutput, offset: number): Body {
  const stream = (async function* () {
    const { downloadFile } = await hubLibrary();
    const blob = await downloadFile({ ...hubFile(d), downloadInfo: info });
    if (!blob) throw new HubError(`${d.repoId}/${d.path}: the Hub has no such entry`, 404);
    const reader = blob.slice(offset).stream().getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value as Uint8Array;
    }
  })();
  return { stream, restart: false };
}

async function writeAll(handle: FileHandle, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.byteLength) done += (await handle.write(bytes, done, bytes.byteLength - done)).bytesWritten;
}
