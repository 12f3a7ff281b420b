/** A static file server on 127.0.0.1 (a free port) for browser tests: serves `root`, index.html for folders. */
import { stat } from 'node:fs/promises';
import { join, normalize, sep } from 'node:path';

export function serveFolder(root: string, extra: (path: string) => Response | null = () => null): { url: string; stop: () => void } {
  const server = Bun.serve({
    hostname: '127.0.0.1',
    port: 0,
    async fetch(request) {
      const path = decodeURIComponent(new URL(request.url).pathname);
      const special = extra(path);
      if (special) return special;
      let file = normalize(join(root, path));
      if (file !== root && !file.startsWith(root + sep)) return new Response('forbidden', { status: 403 });
      if ((await stat(file).catch(() => null))?.isDirectory()) file = join(file, 'index.html');
      const body = Bun.file(file);
      return (await body.exists()) ? new Response(body) : new Response('not found', { status: 404 });
    },
  });
  return { url: `http://127.0.0.1:${server.port}`, stop: () => server.stop(true) };
}
