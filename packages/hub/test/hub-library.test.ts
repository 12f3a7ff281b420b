/**
 * `@huggingface/hub` is loaded only to reach the Hub (hub-library.ts): no module imports it
 * eagerly, and the few values taken from it without loading it match the library's.
 */
import { afterEach, expect, test } from 'bun:test';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { getHFHubCachePath, getRepoFolderName, HUB_URL } from '@huggingface/hub';
import { defaultHubCacheDir, hubSettings, RepoCache } from '../src';

const CACHE_VARIABLES = ['HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'HF_HOME', 'XDG_CACHE_HOME'] as const;
const saved = Object.fromEntries(CACHE_VARIABLES.map((name) => [name, process.env[name]]));
afterEach(() => {
  for (const name of CACHE_VARIABLES) {
    if (saved[name] === undefined) delete process.env[name];
    else process.env[name] = saved[name];
  }
});

test('no module of the package imports @huggingface/hub at load time except hub-library.ts, lazily', () => {
  const folder = join(import.meta.dir, '..', 'src');
  const eager = readdirSync(folder, { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts'))
    .filter((f) => /^import (?!type )[^;]*from '@huggingface\/hub'/m.test(readFileSync(join(folder, f), 'utf8')));
  expect(eager).toEqual([]);
});

test('the default cache folder follows the environment as the library resolves it', () => {
  const cases: Partial<Record<(typeof CACHE_VARIABLES)[number], string>>[] = [
    {},
    { XDG_CACHE_HOME: '/x/cache' },
    { HF_HOME: '/h/home', XDG_CACHE_HOME: '/x/cache' },
    { HUGGINGFACE_HUB_CACHE: '/old/hub', HF_HOME: '/h/home' },
    { HF_HUB_CACHE: '/new/hub', HUGGINGFACE_HUB_CACHE: '/old/hub', HF_HOME: '/h/home' },
  ];
  for (const env of cases) {
    for (const name of CACHE_VARIABLES) delete process.env[name];
    Object.assign(process.env, env);
    expect(defaultHubCacheDir()).toBe(getHFHubCachePath());
  }
});

test("a repository's cache folder and the default endpoint are the library's", () => {
  for (const repoId of ['nvidia/NVIDIA-Nemotron-Nano-9B-v2', 'gpt2'])
    expect(new RepoCache('/c', repoId).folder).toBe(join('/c', getRepoFolderName({ type: 'model', name: repoId })));
  const endpoint = process.env.HF_ENDPOINT;
  delete process.env.HF_ENDPOINT;
  try {
    expect(hubSettings().endpoint).toBe(HUB_URL);
  } finally {
    if (endpoint !== undefined) process.env.HF_ENDPOINT = endpoint;
  }
});
