/**
 * The docs site (`bun run docs`: typedoc API of every package plus the guides in docs/guides)
 * builds on its own (no prior `tsc -b`) without a warning (an exported type naming one that is not
 * exported, a broken doc link), every internal link and asset resolves, and headless
 * Chromium renders the index, a guide and an API page with no console errors and a non-blank index.
 * Skips the browser part, with a message, when Chromium is not installed.
 * UPDATE_SCREENSHOTS=1 also writes docs/images/docs-index.png.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { CHROMIUM_MISSING, findChromium, HeadlessChromium, nonBackgroundShare } from '../scripts/support/headless-chromium';
import { serveFolder } from '../scripts/support/static-server';

const ROOT = join(import.meta.dir, '..');
const site = await mkdtemp(join(tmpdir(), 'nemotron-docs-'));
afterAll(() => rm(site, { recursive: true, force: true }));

async function htmlFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true });
  return entries.filter((e) => e.endsWith('.html')).map((e) => join(dir, e));
}

describe('docs site', () => {
  beforeAll(() => {
    const r = Bun.spawnSync([process.execPath, 'x', 'typedoc', '--out', site, '--logLevel', 'Warn', '--treatWarningsAsErrors'], {
      cwd: ROOT,
      stdout: 'pipe',
      stderr: 'pipe',
    });
    if (r.exitCode !== 0) throw new Error(`typedoc failed (${r.exitCode}):\n${r.stdout}\n${r.stderr}`);
  }, 600_000);

  test('has the API of every package and every guide; internal links resolve', async () => {
    const pages = await htmlFiles(site);
    const names = pages.map((p) => relative(site, p));
    for (const pkg of ['_nemotron-ts_kernels', '_nemotron-ts_core', '_nemotron-ts_hub', 'nemotron-ts']) expect(names.some((n) => n.includes(pkg))).toBe(true);
    const guides = (await readdir(join(ROOT, 'docs', 'guides'))).filter((f) => f.endsWith('.md'));
    const titles = await Promise.all(guides.map(async (g) => /^title: (.+)$/m.exec(await readFile(join(ROOT, 'docs', 'guides', g), 'utf8'))![1]!));
    const documentTitles = await Promise.all(
      pages.filter((p) => relative(site, p).startsWith('documents')).map(async (p) => /<title>([^<]*)<\/title>/.exec(await readFile(p, 'utf8'))?.[1] ?? ''),
    );
    for (const t of titles) expect(documentTitles.some((d) => d.startsWith(t.replace(/&/g, '&amp;')))).toBe(true);
    const broken: string[] = [];
    for (const page of pages) {
      const html = await readFile(page, 'utf8');
      for (const [, link] of html.matchAll(/(?:href|src)="([^"#?]+)[^"]*"/g)) {
        if (/^(?:[a-z]+:|\/\/)/i.test(link!)) continue;
        const target = join(dirname(page), decodeURIComponent(link!));
        if (
          !(await Bun.file(target).exists()) &&
          !(await readdir(target).then(
            () => true,
            () => false,
          ))
        )
          broken.push(`${relative(site, page)} → ${link}`);
      }
    }
    expect(broken).toEqual([]);
  });

  const chromium = findChromium();
  test.skipIf(!chromium)(
    'renders in headless Chromium: no console errors, a non-blank index',
    async () => {
      const server = serveFolder(site, (path) => (path === '/favicon.ico' ? new Response(null, { status: 204 }) : null));
      const browser = await HeadlessChromium.launch(chromium!);
      try {
        const quickstart = (await htmlFiles(site)).find((p) => p.includes('Quickstart'))!;
        const api = (await htmlFiles(site)).find((p) => p.includes('classes') && p.includes('NemotronHForCausalLM'))!;
        for (const page of ['index.html', relative(site, quickstart), relative(site, api)]) {
          const { problems } = await browser.open(`${server.url}/${page}`);
          expect({ page, errors: problems.errors }).toEqual({ page, errors: [] });
        }
        const { session } = await browser.open(`${server.url}/index.html`, 800);
        const png = await browser.screenshot(session);
        expect(nonBackgroundShare(png)).toBeGreaterThan(0.02);
        if (process.env.UPDATE_SCREENSHOTS === '1') await writeFile(join(ROOT, 'docs', 'images', 'docs-index.png'), png);
      } finally {
        await browser.close();
        server.stop();
      }
    },
    120_000,
  );
  if (!chromium) test.skip(`Chromium: ${CHROMIUM_MISSING}`, () => undefined);
});
