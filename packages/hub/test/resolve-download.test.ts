/**
 * resolveCheckpoint against a local Hub stand-in (127.0.0.1): downloads into the HF cache layout,
 * offline reuse, reuse of a cache laid out by Python tools, resumption after a cut connection and
 * across runs, checksum failures, and clear errors for tokens, missing repos and offline misses.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, test } from 'bun:test';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { getCpuDevice, tensor, type Tensor } from '@nemotron-ts/kernels';
import { Checkpoint, HubError, loadTokenizer, resolveCheckpoint, saveWeights, type DownloadProgress } from '../src';
import { FakeHub, gitBlobSha1, sha256, type FakeRepo } from './support/fake-hub';
import { tempDir } from './support/temp-dir';
import { writeTinyTokenizer } from './support/tiny-tokenizer';

const REPO = 'tiny-org/tiny-model';
const PRIVATE = 'tiny-org/private-model';
const COMMIT = `${'a'.repeat(39)}1`;
const TOKEN = 'hf_valid_token';
const cpu = getCpuDevice();

const savedEnv = { ...process.env };
let hub: FakeHub;
let files: Map<string, Uint8Array>;
let weights: Map<string, Float32Array>;

/** A small sharded checkpoint with tokenizer files, plus files the default patterns skip. */
async function buildRepoFiles(): Promise<Map<string, Uint8Array>> {
  const dir = tempDir('repo');
  weights = new Map();
  const tensors = new Map<string, Tensor>();
  for (let i = 0; i < 5; i++) {
    const values = Float32Array.from({ length: 6007 + i }, (_, k) => Math.sin(k * (i + 1)));
    weights.set(`layers.${i}.weight`, values);
    tensors.set(`layers.${i}.weight`, tensor(values, [values.length], { device: cpu }));
  }
  await saveWeights(dir, tensors, { maxShardSize: 50_000 });
  writeTinyTokenizer(dir);
  writeFileSync(join(dir, 'config.json'), '{"model_type": "tiny", "hidden_size": 8, "time_step_limit": [0.0, Infinity]}\n');
  const out = new Map<string, Uint8Array>();
  for (const name of readdirSync(dir)) out.set(name, readFileSync(join(dir, name)));
  out.set('README.md', new TextEncoder().encode('# tiny\n'));
  out.set('original/consolidated.safetensors', new Uint8Array(1000));
  return out;
}

function repo(overrides: Partial<FakeRepo> = {}): FakeRepo {
  return { commit: COMMIT, files, lfs: new Set([...files.keys()].filter((p) => p.endsWith('.safetensors'))), ...overrides };
}

beforeAll(async () => {
  files = await buildRepoFiles();
  hub = await FakeHub.start({ [REPO]: repo(), [PRIVATE]: repo({ private: true }) }, TOKEN);
});

afterAll(async () => {
  await hub.stop();
  process.env = savedEnv;
});

beforeEach(() => {
  // Nothing from the machine's own HF setup may leak in (tokens, cache, offline mode).
  for (const key of ['HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_HUB_OFFLINE', 'HF_ENDPOINT', 'HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'HF_TOKEN_PATH'])
    delete process.env[key];
  process.env.HF_HOME = tempDir('hf-home');
});

const options = (cacheDir: string, extra: object = {}) => ({ cacheDir, endpoint: hub.url, progressBar: false, ...extra });

async function expectWeights(folder: string): Promise<void> {
  const checkpoint = await Checkpoint.open(folder);
  expect(checkpoint.names().sort()).toEqual([...weights.keys()].sort());
  for (const [name, values] of weights) expect(await (await checkpoint.load(name, { device: cpu })).toFloat32()).toEqual(values);
}

describe('first download and reuse', () => {
  test('downloads into the HF cache layout, then works offline without a request', async () => {
    const cacheDir = tempDir('cache');
    const events: DownloadProgress[] = [];
    const folder = await resolveCheckpoint(REPO, options(cacheDir, { onProgress: (e: DownloadProgress) => events.push(e) }));
    const repoFolder = join(cacheDir, 'models--tiny-org--tiny-model');
    expect(folder).toBe(join(repoFolder, 'snapshots', COMMIT));
    expect(readFileSync(join(repoFolder, 'refs', 'main'), 'utf8')).toBe(COMMIT);
    const downloaded = readdirSync(folder).sort();
    expect(downloaded).toEqual([...files.keys()].filter((p) => !p.includes('/') && p !== 'README.md').sort());
    for (const name of downloaded) {
      const content = files.get(name)!;
      const etag = name.endsWith('.safetensors') ? sha256(content) : gitBlobSha1(content);
      expect(lstatSync(join(folder, name)).isSymbolicLink()).toBe(true);
      expect(readlinkSync(join(folder, name))).toBe(`../../blobs/${etag}`);
      expect(readFileSync(join(folder, name)).equals(content)).toBe(true);
    }
    expect(readdirSync(join(repoFolder, 'blobs')).some((b) => b.endsWith('.incomplete'))).toBe(false);
    await expectWeights(folder);
    expect((await loadTokenizer(folder)).encode('the')).toHaveLength(2);

    // Progress: every file ends complete, and the overall count reaches the total.
    for (const name of downloaded)
      expect(events.filter((e) => e.file === name).at(-1)).toMatchObject({ bytes: files.get(name)!.byteLength, total: files.get(name)!.byteLength });
    const last = events.at(-1)!;
    expect(last.overallBytes).toBe(last.overallTotal);
    expect(last.overallTotal).toBe(downloaded.reduce((s, n) => s + files.get(n)!.byteLength, 0));

    const before = hub.requests.length;
    expect(await resolveCheckpoint(REPO, options(cacheDir, { localFilesOnly: true }))).toBe(folder);
    process.env.HF_HUB_OFFLINE = '1';
    expect(await resolveCheckpoint(REPO, options(cacheDir))).toBe(folder);
    expect(hub.requests.length).toBe(before);
    delete process.env.HF_HUB_OFFLINE;

    // Online again: only the two API calls, no file transfer.
    const downloads = hub.downloads().length;
    expect(await resolveCheckpoint(REPO, options(cacheDir))).toBe(folder);
    expect(hub.downloads().length).toBe(downloads);
  });

  test('reuses a cache laid out by the Python tools (no file is fetched)', async () => {
    const cacheDir = tempDir('cache');
    const repoFolder = join(cacheDir, 'models--tiny-org--tiny-model');
    const snapshot = join(repoFolder, 'snapshots', COMMIT);
    mkdirSync(join(repoFolder, 'blobs'), { recursive: true });
    mkdirSync(join(repoFolder, 'refs'), { recursive: true });
    mkdirSync(snapshot, { recursive: true });
    writeFileSync(join(repoFolder, 'refs', 'main'), COMMIT);
    for (const [name, content] of files) {
      if (name.includes('/') || name === 'README.md') continue;
      const etag = name.endsWith('.safetensors') ? sha256(content) : gitBlobSha1(content);
      writeFileSync(join(repoFolder, 'blobs', etag), content);
      symlinkSync(`../../blobs/${etag}`, join(snapshot, name));
    }
    expect(await resolveCheckpoint(REPO, options(cacheDir, { localFilesOnly: true }))).toBe(snapshot);
    const downloads = hub.downloads().length;
    expect(await resolveCheckpoint(REPO, options(cacheDir))).toBe(snapshot);
    expect(hub.downloads().length).toBe(downloads);
    await expectWeights(snapshot);
  });

  test('a blob already present for another snapshot is linked, not downloaded', async () => {
    const cacheDir = tempDir('cache');
    await resolveCheckpoint(REPO, options(cacheDir, { allowPatterns: ['config.json'] }));
    const snapshot = join(cacheDir, 'models--tiny-org--tiny-model', 'snapshots', COMMIT);
    expect(readdirSync(snapshot)).toEqual(['config.json']);
    const downloads = hub.downloads('config.json').length;
    await resolveCheckpoint(REPO, options(cacheDir, { allowPatterns: ['config.json', 'original/'] }));
    expect(readdirSync(snapshot).sort()).toEqual(['config.json', 'original']);
    expect(hub.downloads('config.json').length).toBe(downloads);
  });

  test('HF_ENDPOINT, HF_HUB_CACHE and HF_TOKEN are honoured', async () => {
    const cacheDir = tempDir('cache');
    process.env.HF_ENDPOINT = hub.url;
    process.env.HF_HUB_CACHE = cacheDir;
    process.env.HF_TOKEN = TOKEN;
    const before = hub.requests.length;
    const folder = await resolveCheckpoint(PRIVATE, { progressBar: false });
    expect(folder).toBe(join(cacheDir, 'models--tiny-org--private-model', 'snapshots', COMMIT));
    await expectWeights(folder);
    // The token goes to the Hub, never to the CDN the weights are redirected to.
    const requests = hub.requests.slice(before);
    expect(requests.filter((r) => r.path.startsWith('/api/')).every((r) => r.authorization === `Bearer ${TOKEN}`)).toBe(true);
    const cdn = requests.filter((r) => r.path.startsWith('/cdn/'));
    expect(cdn.length).toBeGreaterThan(0);
    expect(cdn.every((r) => r.authorization === undefined && r.status !== 400)).toBe(true);
  });
});

describe('interrupted downloads', () => {
  test('a connection cut mid-file resumes with a Range request', async () => {
    const cacheDir = tempDir('cache');
    const shard = [...files.keys()].find((p) => p.startsWith('model-00002'))!;
    hub.cutOnce(shard, 12_345);
    const before = hub.downloads(shard).length;
    const folder = await resolveCheckpoint(REPO, options(cacheDir));
    const requests = hub.downloads(shard).slice(before);
    expect(requests.map((r) => r.range)).toHaveLength(2);
    expect(requests[0]!.range).toBe('bytes=0-');
    // The resumed request starts where the received bytes end (all 12345 of them, unless the
    // reset overtook some on a loaded machine).
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(requests[1]!.range!)![1]);
    expect(resumedAt).toBeGreaterThan(0);
    expect(resumedAt).toBeLessThanOrEqual(12_345);
    expect(readFileSync(join(folder, shard)).equals(files.get(shard)!)).toBe(true);
    await expectWeights(folder);
  });

  test('a partial file left by an earlier run is continued, not restarted', async () => {
    const cacheDir = tempDir('cache');
    const shard = [...files.keys()].find((p) => p.startsWith('model-00001'))!;
    const content = files.get(shard)!;
    const blobs = join(cacheDir, 'models--tiny-org--tiny-model', 'blobs');
    mkdirSync(blobs, { recursive: true });
    writeFileSync(join(blobs, `${sha256(content)}.incomplete`), content.subarray(0, 7000));
    const before = hub.downloads(shard).length;
    const folder = await resolveCheckpoint(REPO, options(cacheDir));
    expect(
      hub
        .downloads(shard)
        .slice(before)
        .map((r) => r.range),
    ).toEqual(['bytes=7000-']);
    expect(readFileSync(join(folder, shard)).equals(content)).toBe(true);
  });

  test('content that does not match its sha256 is rejected and leaves nothing that looks complete', async () => {
    const cacheDir = tempDir('cache');
    const corrupt = await FakeHub.start({ [REPO]: repo() });
    const shard = [...files.keys()].find((p) => p.startsWith('model-00003'))!;
    corrupt.corruptFile(shard);
    try {
      await expect(resolveCheckpoint(REPO, { ...options(cacheDir), endpoint: corrupt.url })).rejects.toThrow(
        `${REPO}/${shard}: the downloaded bytes do not match the file's sha256`,
      );
    } finally {
      await corrupt.stop();
    }
    const repoFolder = join(cacheDir, 'models--tiny-org--tiny-model');
    expect(existsSync(join(repoFolder, 'blobs', sha256(files.get(shard)!)))).toBe(false);
    expect(readdirSync(join(repoFolder, 'blobs')).filter((b) => b.endsWith('.incomplete'))).toEqual([]);
    expect(existsSync(join(repoFolder, 'snapshots', COMMIT, shard))).toBe(false);
    // Offline, the incomplete snapshot is not offered as a checkpoint.
    await expect(resolveCheckpoint(REPO, options(cacheDir, { localFilesOnly: true }))).rejects.toThrow('is not in the cache');
  });
});

describe('a cache shared by several processes', () => {
  const repoFolder = (cacheDir: string) => join(cacheDir, 'models--tiny-org--tiny-model');
  const etagOf = (name: string) => (name.endsWith('.safetensors') ? sha256(files.get(name)!) : gitBlobSha1(files.get(name)!));
  const wanted = () => [...files.keys()].filter((p) => !p.includes('/') && p !== 'README.md');

  function expectOneGoodBlobEach(cacheDir: string): void {
    const blobs = join(repoFolder(cacheDir), 'blobs');
    expect(readdirSync(blobs).sort()).toEqual(wanted().map(etagOf).sort());
    for (const name of wanted()) expect(readFileSync(join(blobs, etagOf(name))).equals(files.get(name)!)).toBe(true);
    // Released locks: gone, or (flock, as Python leaves them) empty files.
    const locks = join(cacheDir, '.locks', 'models--tiny-org--tiny-model');
    for (const name of readdirSync(locks))
      expect({ name, content: readFileSync(join(locks, name), 'utf8') }).toEqual({ name: expect.stringMatching(/^[0-9a-f]+\.lock$/), content: '' });
  }

  test('three processes resolving at once into an empty cache all succeed, leaving one verified blob per file', async () => {
    const cacheDir = tempDir('cache');
    // Slow bodies (about half a second per shard), so the three downloads overlap.
    hub.slowDown({ bytes: 2048, everyMs: 20 });
    const before = hub.requests.length;
    let results: { code: number; stdout: string; stderr: string }[];
    try {
      const child = join(import.meta.dir, 'support', 'resolve-child.ts');
      const runs = [0, 1, 2].map(() => Bun.spawn([process.execPath, child, REPO, cacheDir, hub.url], { stdout: 'pipe', stderr: 'pipe' }));
      results = await Promise.all(
        runs.map(async (p) => ({ code: await p.exited, stdout: await new Response(p.stdout).text(), stderr: await new Response(p.stderr).text() })),
      );
    } finally {
      hub.slowDown(null);
    }
    const snapshot = join(repoFolder(cacheDir), 'snapshots', COMMIT);
    for (const r of results) {
      expect({ code: r.code, stderr: r.code === 0 ? '' : r.stderr }).toEqual({ code: 0, stderr: '' });
      expect(r.stdout.trim()).toBe(snapshot);
    }
    expectOneGoodBlobEach(cacheDir);
    await expectWeights(snapshot);
    // Each file went over the wire once: the processes that waited used the finished blob.
    const transfers = hub.downloads().filter((r) => hub.requests.indexOf(r) >= before);
    for (const name of wanted()) expect({ name, count: transfers.filter((r) => r.path.endsWith(`/${name}`)).length }).toEqual({ name, count: 1 });
  });

  test('a blob of the wrong size already in the cache is downloaded again, online and not trusted', async () => {
    const cacheDir = tempDir('cache');
    const snapshot = await resolveCheckpoint(REPO, options(cacheDir));
    const [oversized, truncated] = wanted().filter((p) => p.endsWith('.safetensors'));
    const blobs = join(repoFolder(cacheDir), 'blobs');
    const big = files.get(oversized!)!;
    writeFileSync(join(blobs, etagOf(oversized!)), Buffer.concat([big, big.subarray(0, 999)]));
    // Offline, appended bytes are caught by the safetensors check (there is no listing to compare with).
    await expect(Checkpoint.open(snapshot)).rejects.toThrow(`${join(snapshot, oversized!)}: data: the file has 999 bytes after the last tensor`);
    writeFileSync(join(blobs, etagOf(truncated!)), files.get(truncated!)!.subarray(0, 5000));
    const before = { oversized: hub.downloads(oversized).length, truncated: hub.downloads(truncated).length };
    expect(await resolveCheckpoint(REPO, options(cacheDir))).toBe(snapshot);
    expect(hub.downloads(oversized).length).toBe(before.oversized + 1);
    expect(hub.downloads(truncated).length).toBe(before.truncated + 1);
    expectOneGoodBlobEach(cacheDir);
    await expectWeights(snapshot);
  });

  test('the lock of a process that died mid-download is taken over, and its partial file continued', async () => {
    const cacheDir = tempDir('cache');
    const shard = wanted().find((p) => p.startsWith('model-00001'))!;
    const content = files.get(shard)!;
    const dead = Bun.spawnSync(['true']).pid;
    const lock = join(cacheDir, '.locks', 'models--tiny-org--tiny-model', `${etagOf(shard)}.lock`);
    mkdirSync(join(lock, '..'), { recursive: true });
    writeFileSync(lock, JSON.stringify({ pid: dead, host: hostname() }));
    mkdirSync(join(repoFolder(cacheDir), 'blobs'), { recursive: true });
    writeFileSync(join(repoFolder(cacheDir), 'blobs', `${etagOf(shard)}.incomplete`), content.subarray(0, 3000));
    const before = hub.downloads(shard).length;
    const snapshot = await resolveCheckpoint(REPO, options(cacheDir));
    expect(
      hub
        .downloads(shard)
        .slice(before)
        .map((r) => r.range),
    ).toEqual(['bytes=3000-']);
    expectOneGoodBlobEach(cacheDir);
    await expectWeights(snapshot);
  });
});

describe('errors', () => {
  test('a wrong token gives a clear 401 message; no token says how to set one', async () => {
    const cacheDir = tempDir('cache');
    const wrong = await resolveCheckpoint(PRIVATE, options(cacheDir, { token: 'hf_wrong' })).catch((e: unknown) => e);
    expect(wrong).toBeInstanceOf(HubError);
    expect((wrong as HubError).status).toBe(401);
    expect((wrong as Error).message).toContain(
      `${PRIVATE}@main: the Hub at ${hub.url} answered 401 Unauthorized: the access token (token option or HF_TOKEN) was rejected`,
    );
    const none = await resolveCheckpoint(PRIVATE, options(cacheDir)).catch((e: unknown) => e);
    expect((none as Error).message).toContain('the repository is private or gated; set HF_TOKEN or pass a token');
    const malformed = await resolveCheckpoint(PRIVATE, options(cacheDir, { token: 'not-a-token' })).catch((e: unknown) => e);
    expect((malformed as Error).message).toContain("must start with 'hf_'");
    expect(await resolveCheckpoint(PRIVATE, options(cacheDir, { token: TOKEN, allowPatterns: ['config.json'] }))).toEndWith(COMMIT);
  });

  test('a missing repository, a revision, nothing cached offline, an unreachable Hub', async () => {
    const cacheDir = tempDir('cache');
    await expect(resolveCheckpoint('tiny-org/nope', options(cacheDir))).rejects.toThrow('tiny-org/nope@main: not found on the Hub');
    await expect(resolveCheckpoint(REPO, options(cacheDir, { revision: 'v9' }))).rejects.toThrow(`${REPO}@v9: not found on the Hub`);
    await expect(resolveCheckpoint(REPO, options(cacheDir, { revision: '../x' }))).rejects.toThrow('is not a valid branch, tag or commit name');
    await expect(resolveCheckpoint(REPO, options(cacheDir, { localFilesOnly: true }))).rejects.toThrow(
      `${REPO}@main is not in the cache at ${join(cacheDir, 'models--tiny-org--tiny-model')}, and downloads are off (localFilesOnly is set)`,
    );
    await expect(resolveCheckpoint(REPO, options(cacheDir, { endpoint: 'http://127.0.0.1:1' }))).rejects.toThrow('cannot reach the Hub at http://127.0.0.1:1');
  });

  test('an unreachable Hub falls back to a complete cached snapshot', async () => {
    const cacheDir = tempDir('cache');
    const folder = await resolveCheckpoint(REPO, options(cacheDir));
    expect(await resolveCheckpoint(REPO, options(cacheDir, { endpoint: 'http://127.0.0.1:1' }))).toBe(folder);
  });

  test('local folders are returned as they are; other paths are explained', async () => {
    const dir = tempDir('local');
    expect(await resolveCheckpoint(dir)).toBe(dir);
    await expect(resolveCheckpoint(join(dir, 'missing', 'deeper'))).rejects.toThrow('no such folder, and not a Hub repository id');
    writeFileSync(join(dir, 'file.txt'), '');
    await expect(resolveCheckpoint(join(dir, 'file.txt'))).rejects.toThrow('is a file');
  });
});
