/**
 * The main job (`npm start` → `nemotron demo`) with the shipped model: it names the device, streams
 * text made of words from the project's docs (the model was trained on them), and prints prompt and
 * generation tokens/s.
 */
import { expect, test } from 'bun:test';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

const ROOT = join(import.meta.dir, '..');

test('npm start writes words from the docs and prints the speeds and the device', async () => {
  const r = Bun.spawnSync([process.execPath, join(ROOT, 'src/cli/main.ts'), 'demo', '--device', 'cpu'], { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' });
  const out = r.stdout.toString();
  expect(r.exitCode).toBe(0);
  expect(out).toMatch(/^device: CPU/m);
  expect(out).toMatch(/prompt \d+ tokens: \d+ tokens\/s · generation \d+ tokens: \d+ tokens\/s · device: CPU/);
  const text = out.split('\n\n')[1]!;
  const vocabulary = new Set(
    (await readFile(join(ROOT, 'models', 'tiny-corpus.jsonl'), 'utf8'))
      .split('\n')
      .filter(Boolean)
      .flatMap((line) => (JSON.parse(line) as { text: string }).text.toLowerCase().match(/[a-z]+/g) ?? []),
  );
  // Words of three letters or more (one- and two-letter runs match by chance).
  const words = text.toLowerCase().match(/[a-z]{3,}/g) ?? [];
  expect(words.length).toBeGreaterThan(15);
  // About half of what it writes are words of the docs; the old random model with bigram embeddings
  // ("a la latoke at t s a foke t frere okerye") writes almost none.
  const known = words.filter((w) => vocabulary.has(w)).length / words.length;
  expect(known).toBeGreaterThan(0.45);
}, 300_000);
