import { expect, test } from 'bun:test';
import { join } from 'node:path';
import { getHFHubCachePath, getRepoFolderName } from '@huggingface/hub';
import { defaultHubCacheDir, RepoCache } from '../src';

const VARIABLES = ['HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'HF_HOME', 'XDG_CACHE_HOME'] as const;

test('the cache folder and repo folder names follow @huggingface/hub for every variable combination', () => {
  const saved = Object.fromEntries(VARIABLES.map((v) => [v, process.env[v]]));
  try {
    for (let mask = 0; mask < 1 << VARIABLES.length; mask++) {
      VARIABLES.forEach((v, i) => {
        if (mask & (1 << i)) process.env[v] = `/tmp/${v.toLowerCase()}`;
        else delete process.env[v];
      });
      expect({ mask, dir: defaultHubCacheDir() }).toEqual({ mask, dir: getHFHubCachePath() });
    }
  } finally {
    for (const v of VARIABLES) {
      if (saved[v] === undefined) delete process.env[v];
      else process.env[v] = saved[v];
    }
  }
  for (const id of ['nvidia/Nemotron-H-8B-Base-8K', 'gpt2', 'org/name.with-dots_1'])
    expect(new RepoCache('/c', id).folder).toBe(join('/c', getRepoFolderName({ type: 'model', name: id })));
});

test('importing the package does not load @huggingface/hub (~8 MiB resident; only network paths need it)', () => {
  const probe =
    "await import('@nemotron-ts/hub'); console.log(Object.keys(require.cache).filter((k) => k.includes('huggingface+hub') || k.includes('@huggingface/hub')).length);";
  const run = Bun.spawnSync([process.execPath, '-e', probe], { cwd: join(import.meta.dir, '..'), stderr: 'pipe' });
  expect(run.stderr.toString()).toBe('');
  expect(run.stdout.toString().trim()).toBe('0');
});
