/**
 * Nemotron-H in the browser: the bundled page (scripts/build-browser.ts) loads a model folder over
 * HTTP and generates on headless Chromium's WebGPU (SwiftShader); its greedy ids must equal the CLI's
 * (`nemotron generate --greedy --ignore-eos --json` on the CPU reference). Skips with a message when
 * Chromium is not installed. UPDATE_SCREENSHOTS=1 also writes docs/images/browser-page.png.
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { browserGenerate } from '../scripts/browser-generate';
import { CHROMIUM_MISSING, findChromium } from '../scripts/support/headless-chromium';
import { TINY_TRAINED_DIR } from '../src/tiny-model';
import { ensureTinyModel } from './support/tiny-model';

const ROOT = join(import.meta.dir, '..');
const scratch = await mkdtemp(join(tmpdir(), 'nemotron-browser-test-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));
const chromium = findChromium();

describe('browser generation', () => {
  test.skipIf(!chromium)(
    'the page on WebGPU generates the same greedy ids as the CLI',
    async () => {
      // The shipped model when present, else the project's random tiny model.
      const shipped = await stat(join(TINY_TRAINED_DIR, 'model.safetensors')).then(
        () => true,
        () => false,
      );
      const model = shipped ? TINY_TRAINED_DIR : await ensureTinyModel(join(scratch, 'tiny'));
      const input = join(scratch, 'input.json');
      // "<s>The model " in the byte-level tokenizer.
      await writeFile(input, JSON.stringify({ input_ids: [[257, ...new TextEncoder().encode('The model ')]] }));
      const cli = Bun.spawnSync(
        [
          process.execPath,
          join(ROOT, 'src/cli/main.ts'),
          'generate',
          '--device',
          'cpu',
          '--model',
          model,
          '--input',
          input,
          '--max-new-tokens',
          '12',
          '--greedy',
          '--ignore-eos',
          '--json',
        ],
        { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' },
      );
      expect(cli.stderr.toString()).toBe('');
      const expected = (JSON.parse(cli.stdout.toString()) as { ids: number[][] }).ids;
      const screenshot = process.env.UPDATE_SCREENSHOTS === '1' ? join(ROOT, 'docs', 'images', 'browser-page.png') : undefined;
      const page = await browserGenerate({ model, input, maxNewTokens: 12, greedy: true, ignoreEos: true, screenshot });
      expect(page.device).toContain('WebGPU in the browser');
      expect(page.ids).toEqual(expected);
      expect(expected[0]).toHaveLength(12);
    },
    300_000,
  );
  if (!chromium) test.skip(`browser generation: ${CHROMIUM_MISSING}`, () => undefined);
});
