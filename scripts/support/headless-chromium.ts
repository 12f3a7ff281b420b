/**
 * Headless Chromium for tests, driven over the DevTools protocol (a WebSocket; no library): open a
 * page, collect its console errors and uncaught exceptions, evaluate expressions, take a PNG
 * screenshot. `findChromium()` is null when Debian's `chromium` is not installed, so tests can skip
 * with a message (`apt-get install -y chromium`).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';

export function findChromium(): string | null {
  for (const name of [process.env.CHROMIUM_BIN, 'chromium', 'chromium-browser', 'google-chrome']) {
    if (!name) continue;
    const path = Bun.which(name);
    if (path) return path;
  }
  return null;
}

export const CHROMIUM_MISSING = 'skipped: Chromium is not installed (Debian: apt-get install -y chromium; or set CHROMIUM_BIN)';

interface CdpMessage {
  id?: number;
  method?: string;
  params?: Record<string, unknown>;
  result?: Record<string, unknown>;
  error?: { message: string };
  sessionId?: string;
}

export interface PageProblems {
  /** console.error messages, uncaught exceptions and failed loads, as text. */
  errors: string[];
}

export class HeadlessChromium {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (r: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  private readonly listeners: ((m: CdpMessage) => void)[] = [];

  private constructor(
    private readonly process: Bun.Subprocess,
    private readonly socket: WebSocket,
    private readonly profile: string,
  ) {
    socket.addEventListener('message', (event) => {
      const message = JSON.parse(String(event.data)) as CdpMessage;
      if (message.id !== undefined) {
        const waiter = this.pending.get(message.id);
        this.pending.delete(message.id);
        if (message.error) waiter?.reject(new Error(message.error.message));
        else waiter?.resolve(message.result ?? {});
      } else for (const l of this.listeners) l(message);
    });
  }

  /** Starts Chromium with `extraFlags` and connects to it. */
  static async launch(binary: string, extraFlags: readonly string[] = []): Promise<HeadlessChromium> {
    const profile = await mkdtemp(join(tmpdir(), 'nemotron-chromium-'));
    const child = Bun.spawn(
      [
        binary,
        '--headless=new',
        '--no-sandbox',
        '--disable-gpu-sandbox',
        '--no-first-run',
        '--no-default-browser-check',
        '--disable-extensions',
        `--user-data-dir=${profile}`,
        '--remote-debugging-port=0',
        '--window-size=1280,900',
        ...extraFlags,
        'about:blank',
      ],
      { stdout: 'ignore', stderr: 'pipe' },
    );
    // Chromium prints "DevTools listening on ws://…" on stderr once it is ready.
    const reader = child.stderr.getReader();
    let seen = '';
    const deadline = Date.now() + 60_000;
    let url: string | null = null;
    while (!url) {
      if (Date.now() > deadline) throw new Error(`Chromium did not start within 60 s: ${seen.slice(-500)}`);
      const { value, done } = await reader.read();
      if (done) throw new Error(`Chromium exited before it was ready: ${seen.slice(-500)}`);
      seen += new TextDecoder().decode(value);
      url = /DevTools listening on (ws:\/\/\S+)/.exec(seen)?.[1] ?? null;
    }
    // Keep draining stderr so Chromium never blocks on a full pipe.
    void (async () => {
      while (!(await reader.read()).done);
    })();
    const socket = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      socket.addEventListener('open', () => resolve());
      socket.addEventListener('error', () => reject(new Error(`could not connect to Chromium at ${url}`)));
    });
    return new HeadlessChromium(child, socket, profile);
  }

  send(method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<Record<string, unknown>> {
    const id = this.nextId++;
    this.socket.send(JSON.stringify({ id, method, params, sessionId }));
    return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
  }

  /** Opens `url` in a new tab, waits for its load event (and `settleMs` more); returns the tab and what went wrong on it. */
  async open(url: string, settleMs = 300): Promise<{ session: string; problems: PageProblems }> {
    const { targetId } = (await this.send('Target.createTarget', { url: 'about:blank' })) as { targetId: string };
    const { sessionId } = (await this.send('Target.attachToTarget', { targetId, flatten: true })) as { sessionId: string };
    const problems: PageProblems = { errors: [] };
    let loaded: () => void = () => undefined;
    const load = new Promise<void>((resolve) => (loaded = resolve));
    this.listeners.push((m) => {
      if (m.sessionId !== sessionId) return;
      const p = m.params ?? {};
      if (m.method === 'Page.loadEventFired') loaded();
      if (m.method === 'Runtime.consoleAPICalled' && p.type === 'error') {
        problems.errors.push(`console.error: ${(p.args as { value?: unknown; description?: string }[]).map((a) => a.value ?? a.description).join(' ')}`);
      }
      if (m.method === 'Runtime.exceptionThrown') {
        const d = p.exceptionDetails as { text: string; exception?: { description?: string } };
        problems.errors.push(`exception: ${d.exception?.description ?? d.text}`);
      }
      if (m.method === 'Log.entryAdded') {
        const e = p.entry as { level: string; text: string; url?: string };
        if (e.level === 'error') problems.errors.push(`log: ${e.text}${e.url ? ` (${e.url})` : ''}`);
      }
    });
    await Promise.all(['Page.enable', 'Runtime.enable', 'Log.enable'].map((m) => this.send(m, {}, sessionId)));
    await this.send('Page.navigate', { url }, sessionId);
    await Promise.race([load, Bun.sleep(60_000).then(() => Promise.reject(new Error(`${url} did not load within 60 s`)))]);
    await Bun.sleep(settleMs);
    return { session: sessionId, problems };
  }

  /** The value of a JavaScript expression in the tab (promises awaited). */
  async evaluate<T>(session: string, expression: string): Promise<T> {
    const r = (await this.send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true }, session)) as {
      result: { value: T };
      exceptionDetails?: { text: string; exception?: { description?: string } };
    };
    if (r.exceptionDetails) throw new Error(`in the page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
    return r.result.value;
  }

  async screenshot(session: string): Promise<Uint8Array> {
    const { data } = (await this.send('Page.captureScreenshot', { format: 'png' }, session)) as { data: string };
    return Uint8Array.from(Buffer.from(data, 'base64'));
  }

  async close(): Promise<void> {
    this.socket.close();
    this.process.kill();
    await this.process.exited;
    await rm(this.profile, { recursive: true, force: true });
  }
}

/** The share of pixels that differ from the most common colour of an 8-bit RGB/RGBA PNG (0 = blank). */
export function nonBackgroundShare(png: Uint8Array): number {
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  let offset = 8;
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Uint8Array[] = [];
  while (offset < png.length) {
    const length = view.getUint32(offset);
    const type = new TextDecoder().decode(png.subarray(offset + 4, offset + 8));
    const body = png.subarray(offset + 8, offset + 8 + length);
    if (type === 'IHDR') {
      width = view.getUint32(offset + 8);
      height = view.getUint32(offset + 12);
      const [depth, colour] = [body[8], body[9]];
      if (depth !== 8 || (colour !== 2 && colour !== 6)) throw new Error(`PNG: expected 8-bit RGB or RGBA, got depth ${depth} colour type ${colour}`);
      channels = colour === 6 ? 4 : 3;
    } else if (type === 'IDAT') idat.push(body);
    offset += 12 + length;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const pixels = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]!;
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? pixels[y * stride + x - channels]! : 0;
      const b = y > 0 ? pixels[(y - 1) * stride + x]! : 0;
      const c = x >= channels && y > 0 ? pixels[(y - 1) * stride + x - channels]! : 0;
      const predictor = [0, a, b, (a + b) >> 1, paeth(a, b, c)][filter]!;
      pixels[y * stride + x] = (line[x]! + predictor) & 255;
    }
  }
  const counts = new Map<number, number>();
  for (let i = 0; i < pixels.length; i += channels) {
    const key = (pixels[i]! << 16) | (pixels[i + 1]! << 8) | pixels[i + 2]!;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  const most = Math.max(...counts.values());
  return 1 - most / (width * height);
}

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const [pa, pb, pc] = [Math.abs(p - a), Math.abs(p - b), Math.abs(p - c)];
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}
