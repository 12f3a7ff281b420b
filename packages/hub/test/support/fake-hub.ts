/**
 * A Hugging Face Hub stand-in on 127.0.0.1 (an ephemeral port), serving the routes @huggingface/hub
 * and our downloader call: model info (`/api/models/<id>/revision/<rev>`), the file tree
 * (`/api/models/<id>/tree/<rev>`), and `/<id>/resolve/<rev>/<path>` with ETag, X-Repo-Commit and
 * Range. As on the real Hub, LFS files redirect to a CDN on another origin, which refuses requests
 * that carry the Hub token. It can require a token, cut a connection once after N bytes, corrupt
 * a file, or send file bodies slowly.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeRepo {
  commit: string;
  files: Map<string, Uint8Array>;
  /** Paths stored with LFS (etag = sha256); others get git's blob sha1. */
  lfs: ReadonlySet<string>;
  /** Requests must carry `Authorization: Bearer <token>`. */
  private?: boolean;
}

export interface RecordedRequest {
  method: string;
  path: string;
  range: string | undefined;
  authorization: string | undefined;
  status: number;
}

export function gitBlobSha1(content: Uint8Array): string {
  return createHash('sha1').update(`blob ${content.byteLength}\0`).update(content).digest('hex');
}

export function sha256(content: Uint8Array): string {
  return createHash('sha256').update(content).digest('hex');
}

export class FakeHub {
  readonly requests: RecordedRequest[] = [];
  private cuts = new Map<string, number>();
  private corrupt = new Set<string>();
  private pace: { bytes: number; everyMs: number } | null = null;

  private constructor(
    private readonly servers: readonly Server[],
    readonly url: string,
    /** The CDN's origin, where LFS downloads are redirected. */
    readonly cdnUrl: string,
    private readonly repos: ReadonlyMap<string, FakeRepo>,
    private readonly token: string,
  ) {}

  static async start(repos: Record<string, FakeRepo>, token = 'hf_valid_token'): Promise<FakeHub> {
    let hub: FakeHub | undefined;
    const listen = async (handler: (req: IncomingMessage, res: ServerResponse) => void) => {
      const server = createServer((req, res) => {
        const record: RecordedRequest = {
          method: req.method!,
          path: decodeURIComponent(new URL(req.url!, 'http://x').pathname),
          range: req.headers.range,
          authorization: req.headers.authorization,
          status: 0,
        };
        hub!.requests.push(record);
        res.on('finish', () => (record.status = res.statusCode));
        res.on('close', () => (record.status ||= res.statusCode));
        handler(req, res);
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      return server;
    };
    const api = await listen((req, res) => hub!.handle(req, res));
    const cdn = await listen((req, res) => hub!.handleCdn(req, res));
    const origin = (s: Server) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
    hub = new FakeHub([api, cdn], origin(api), origin(cdn), new Map(Object.entries(repos)), token);
    return hub;
  }

  /** The next full download of `path` (any repo) stops after `bytes` bytes with a reset connection. */
  cutOnce(path: string, bytes: number): void {
    this.cuts.set(path, bytes);
  }

  /** Downloads of `path` serve flipped bytes from now on. */
  corruptFile(path: string): void {
    this.corrupt.add(path);
  }

  /** File bodies go out `bytes` at a time, `everyMs` apart (null: at once). */
  slowDown(pace: { bytes: number; everyMs: number } | null): void {
    this.pace = pace;
  }

  /** Requests that transferred file contents (not API calls, redirects or the 1-byte probes). */
  downloads(path?: string): RecordedRequest[] {
    return this.requests.filter(
      (r) => /\/(resolve|cdn)\//.test(r.path) && r.status !== 302 && r.range !== 'bytes=0-0' && (path === undefined || r.path.endsWith(`/${path}`)),
    );
  }

  async stop(): Promise<void> {
    for (const server of this.servers) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  }

  private handleCdn(req: IncomingMessage, res: ServerResponse): void {
    const m = /^\/cdn\/(.+?)\/--\/(.+)$/.exec(decodeURIComponent(new URL(req.url!, this.cdnUrl).pathname));
    const repo = m ? this.repos.get(m[1]!) : undefined;
    if (!m || !repo) return json(res, 404, { error: 'no such object' });
    // Signed CDN URLs carry their own authorization; a second mechanism is an error (as on S3).
    if (req.headers.authorization) return json(res, 400, { error: 'Only one auth mechanism allowed' });
    this.serveFile(req, res, repo, m[2]!);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url!, this.url);
    const path = decodeURIComponent(url.pathname);
    const api = /^\/api\/models\/(.+)\/(revision|tree)\/([^/]+)$/.exec(path);
    const resolve = /^\/(.+?)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    const [repoId, rev] = api ? [api[1]!, api[3]!] : resolve ? [resolve[1]!, resolve[2]!] : ['', ''];
    const repo = this.repos.get(repoId);
    if (!repo || (rev !== 'main' && rev !== repo.commit)) return json(res, 404, { error: 'Repository not found' }, { 'X-Error-Code': 'RepoNotFound' });
    if (repo.private && req.headers.authorization !== `Bearer ${this.token}`) return json(res, 401, { error: 'Invalid credentials in Authorization header' });
    if (api?.[2] === 'revision') {
      return json(res, 200, {
        _id: 'x',
        id: repoId,
        sha: repo.commit,
        private: !!repo.private,
        gated: false,
        downloads: 0,
        likes: 0,
        lastModified: '2025-01-01T00:00:00.000Z',
      });
    }
    if (api?.[2] === 'tree') {
      const entries = [...repo.files].map(([p, content]) => ({
        type: 'file',
        path: p,
        size: repo.lfs.has(p) ? 134 : content.byteLength,
        oid: gitBlobSha1(repo.lfs.has(p) ? new TextEncoder().encode(`lfs pointer ${p}`) : content),
        ...(repo.lfs.has(p) ? { lfs: { oid: sha256(content), size: content.byteLength, pointerSize: 134 } } : {}),
      }));
      return json(res, 200, entries);
    }
    if (resolve && repo.lfs.has(resolve[3]!) && repo.files.has(resolve[3]!)) {
      const content = repo.files.get(resolve[3]!)!;
      res.writeHead(302, {
        Location: `${this.cdnUrl}/cdn/${repoId}/--/${resolve[3]}`,
        'X-Repo-Commit': repo.commit,
        'X-Linked-Etag': `"${sha256(content)}"`,
        'X-Linked-Size': String(content.byteLength),
      });
      return void res.end();
    }
    if (resolve) return this.serveFile(req, res, repo, resolve[3]!);
    json(res, 404, { error: 'no such route' });
  }

  private serveFile(req: IncomingMessage, res: ServerResponse, repo: FakeRepo, path: string): void {
    let content = repo.files.get(path);
    if (!content) return json(res, 404, { error: 'Entry not found' }, { 'X-Error-Code': 'EntryNotFound' });
    if (this.corrupt.has(path)) content = content.map((b) => b ^ 0xff);
    const lfs = repo.lfs.has(path);
    const headers: Record<string, string> = {
      'Content-Type': 'application/octet-stream',
      'Accept-Ranges': 'bytes',
      ETag: `"${lfs ? sha256(content) : gitBlobSha1(content)}"`,
      'X-Repo-Commit': repo.commit,
      ...(lfs ? { 'X-Linked-Etag': `"${sha256(content)}"`, 'X-Linked-Size': String(content.byteLength) } : {}),
    };
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    let start = 0;
    let end = content.byteLength - 1;
    let status = 200;
    if (range) {
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]), end) : end;
      if (start > end) {
        res.writeHead(416, { 'Content-Range': `bytes */${content.byteLength}` });
        return void res.end();
      }
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${end}/${content.byteLength}`;
    }
    const body = content.subarray(start, end + 1);
    res.writeHead(status, { ...headers, 'Content-Length': String(body.byteLength) });
    const cut = req.headers.range === 'bytes=0-0' ? undefined : this.cuts.get(path);
    if (cut !== undefined && cut < body.byteLength) {
      this.cuts.delete(path);
      // Send part of the body, give the client time to receive it, then reset the connection.
      res.write(body.subarray(0, cut), () => setTimeout(() => res.destroy(), 50));
      return;
    }
    if (!this.pace) return void res.end(body);
    const { bytes, everyMs } = this.pace;
    const send = (at: number): void => {
      if (res.destroyed) return;
      if (at + bytes >= body.byteLength) return void res.end(body.subarray(at));
      res.write(body.subarray(at, at + bytes));
      setTimeout(() => send(at + bytes), everyMs);
    };
    send(0);
  }
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}
