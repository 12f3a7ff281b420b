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

/** Which of the three HF libraries a Bun process running `code` (in this package's folder) loaded. */
function librariesLoadedBy(code: string): string[] {
  const probe = `${code}; const loaded = Object.keys(require.cache); console.log(JSON.stringify(['hub', 'tokenizers', 'jinja'].filter((name) => loaded.some((k) => k.includes(\`huggingface+\${name}@\`) || k.includes(\`@huggingface/\${name}/\`)))));`;
  const run = Bun.spawnSync([process.execPath, '-e', probe], { cwd: join(import.meta.dir, '..'), stderr: 'pipe' });
  expect(run.stderr.toString()).toBe('');
  return JSON.parse(run.stdout.toString()) as string[];
}

test('importing the package loads none of the HF libraries (~18, 8 and 3 MiB resident); each comes with its first use', () => {
  expect(librariesLoadedBy("await import('@nemotron-ts/hub')")).toEqual([]);
  // A chat template needs jinja alone; the tokenizer's constructor needs tokenizers.
  const template =
    "const { ChatTemplates } = await import('@nemotron-ts/hub'); ChatTemplates.fromConfigValue('{{ messages[0].content }}', 'x').render([{ role: 'user', content: 'hi' }], {}, {})";
  expect(librariesLoadedBy(template)).toEqual(['jinja']);
  const tokenizer = `const { HfTokenizer } = await import('@nemotron-ts/hub'); new HfTokenizer(${JSON.stringify(TINY_TOKENIZER)}, {}, null, 'x')`;
  expect(librariesLoadedBy(tokenizer)).toEqual(['tokenizers']);
});

/** The smallest tokenizer.json @huggingface/tokenizers accepts: a word-level vocabulary of one token. */
const TINY_TOKENIZER = {
  version: '1.0',
  added_tokens: [],
  normalizer: null,
  pre_tokenizer: null,
  post_processor: null,
  decoder: null,
  model: { type: 'WordLevel', vocab: { hi: 0 }, unk_token: 'hi' },
};
