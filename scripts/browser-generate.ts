// `bun run browser-generate --model DIR (--input FILE | --prompt TEXT) [--max-new-tokens N] [--greedy]
//  [--ignore-eos] [--json] [--screenshot PNG]`: runs generation inside headless Chromium on the page's
// WebGPU (SwiftShader here): bundles the page (scripts/build-browser.ts), serves it, the model
// folder and the input file on 127.0.0.1, lets the page fetch the weights and generate, and prints
// what `nemotron generate --json` prints ({"ids", "prompt_tokens_per_s", "decode_tokens_per_s"}).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { buildBrowserPage } from './build-browser';
import { CHROMIUM_MISSING, findChromium, HeadlessChromium } from './support/headless-chromium';
import { serveFolder } from './support/static-server';

/** Chromium flags that give headless Chromium a WebGPU adapter on SwiftShader (Vulkan through ANGLE). */
export const WEBGPU_FLAGS = ['--enable-unsafe-webgpu', '--use-angle=vulkan', '--enable-features=Vulkan,VulkanFromANGLE'];

export interface BrowserGenerateOptions {
  model: string;
  input?: string;
  prompt?: string;
  maxNewTokens?: number;
  greedy?: boolean;
  ignoreEos?: boolean;
  screenshot?: string;
  timeoutMs?: number;
}

export interface BrowserGenerateResult {
  ids: number[][];
  prompt_tokens_per_s: number;
  decode_tokens_per_s: number;
  device: string;
}

export async function browserGenerate(options: BrowserGenerateOptions): Promise<BrowserGenerateResult> {
  const chromium = findChromium();
  if (!chromium) throw new Error(CHROMIUM_MISSING.replace(/^skipped: /, ''));
  const site = await mkdtemp(join(tmpdir(), 'nemotron-browser-'));
  const modelDir = resolve(options.model);
  const inputFile = options.input ? resolve(options.input) : null;
  const server = serveFolder(await buildBrowserPage(site), (path) => {
    if (path === '/input.json' && inputFile) return new Response(Bun.file(inputFile));
    if (path.startsWith('/model/') && !path.includes('..')) return new Response(Bun.file(join(modelDir, path.slice('/model/'.length))));
    return null;
  });
  const browser = await HeadlessChromium.launch(chromium, WEBGPU_FLAGS);
  try {
    const query = new URLSearchParams({ model: './model/', max_new_tokens: String(options.maxNewTokens ?? 32) });
    if (inputFile) query.set('input', './input.json');
    if (options.prompt !== undefined) query.set('prompt', options.prompt);
    if (options.greedy) query.set('greedy', '1');
    if (options.ignoreEos) query.set('ignore_eos', '1');
    const { session, problems } = await browser.open(`${server.url}/index.html?${query}`, 0);
    const deadline = Date.now() + (options.timeoutMs ?? 300_000);
    for (;;) {
      const state = await browser.evaluate<{ result?: BrowserGenerateResult; error?: string }>(
        session,
        '({ result: window.nemotronResult, error: window.nemotronError })',
      );
      if (state.error) throw new Error(`the page failed: ${state.error}`);
      if (state.result) {
        if (options.screenshot) await writeFile(options.screenshot, await browser.screenshot(session));
        if (problems.errors.length > 0) throw new Error(`the page logged errors:\n${problems.errors.join('\n')}`);
        return state.result;
      }
      if (Date.now() > deadline) throw new Error(`the page did not finish within ${(options.timeoutMs ?? 300_000) / 1000} s`);
      await Bun.sleep(250);
    }
  } finally {
    await browser.close();
    server.stop();
    await rm(site, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const argv = process.argv.slice(2);
  const value = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    if (i < 0) return undefined;
    const v = argv[i + 1];
    if (v === undefined || v.startsWith('--')) throw new Error(`--${name} needs a value`);
    return v;
  };
  const known = new Set(['model', 'input', 'prompt', 'max-new-tokens', 'greedy', 'ignore-eos', 'json', 'screenshot']);
  for (const a of argv) if (a.startsWith('--') && !known.has(a.slice(2))) throw new Error(`browser-generate: unknown flag ${a}`);
  const model = value('model');
  if (!model) throw new Error('browser-generate: missing --model DIR');
  if ((value('input') === undefined) === (value('prompt') === undefined))
    throw new Error('browser-generate: give exactly one of --input FILE and --prompt TEXT');
  const maxNewTokens = Number(value('max-new-tokens') ?? 32);
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw new Error(`--max-new-tokens must be an integer ≥ 1, got ${value('max-new-tokens')}`);
  const result = await browserGenerate({
    model,
    input: value('input'),
    prompt: value('prompt'),
    maxNewTokens,
    greedy: argv.includes('--greedy'),
    ignoreEos: argv.includes('--ignore-eos'),
    screenshot: value('screenshot'),
  });
  if (argv.includes('--json'))
    console.log(JSON.stringify({ ids: result.ids, prompt_tokens_per_s: result.prompt_tokens_per_s, decode_tokens_per_s: result.decode_tokens_per_s }));
  else
    console.log(
      `${result.ids.map((row) => row.join(' ')).join('\n')}\n(${result.device}: prompt ${result.prompt_tokens_per_s} tokens/s, generation ${result.decode_tokens_per_s} tokens/s)`,
    );
}
