// Bundles the browser page (browser/generate-page.ts + browser/index.html) into OUT (default
// dist/browser/) with `Bun.build` for the browser: packages/kernels, core and hub's tokenizer and
// safetensors reader as they are; the Node/Bun-only modules they import for Dawn, files, downloads
// and bun:ffi are replaced by stubs that throw if called (the page never calls them: it hands the
// kernels a WebGpuDevice made from navigator.gpu and fetches the model files itself).
// Usage: bun scripts/build-browser.ts [OUT]
import { copyFile, mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { BunPlugin } from 'bun';

const root = join(import.meta.dir, '..');

/** Modules that exist only under Bun/Node; the page must not reach them. */
const SERVER_ONLY = /^(webgpu|bun|bun:ffi|node:.*|fs|fs\/promises|os|path|crypto|child_process|worker_threads|url|stream|zlib|@huggingface\/hub)$/;

const stubServerOnly: BunPlugin = {
  name: 'stub-server-only',
  setup(build) {
    build.onResolve({ filter: SERVER_ONLY }, (args) => ({ path: Bun.resolveSync(args.path, dirname(args.importer)), namespace: 'server-only' }));
    build.onLoad({ filter: /.*/, namespace: 'server-only' }, async (args) => {
      // The stub has the real module's export names (read here, under Bun), each a function that throws naming it.
      const names = Object.keys(await import(args.path)).filter((n) => n !== 'default' && /^[A-Za-z_$][\w$]*$/.test(n));
      const fail = (name: string) => `() => { throw new Error(${JSON.stringify(`${args.path}: ${name}() is not available in the browser`)}); }`;
      const exports = names.map((n) => (n === 'join' ? `export const join = (...p) => p.join('/').replace(/\\/+/g, '/');` : `export const ${n} = ${fail(n)};`));
      return { loader: 'js', contents: `${exports.join('\n')}\nexport default {};\n` };
    });
  },
};

export async function buildBrowserPage(out = join(root, 'dist', 'browser')): Promise<string> {
  await mkdir(out, { recursive: true });
  const result = await Bun.build({
    entrypoints: [join(root, 'browser', 'generate-page.ts')],
    outdir: out,
    target: 'browser',
    format: 'esm',
    minify: false,
    sourcemap: 'none',
    plugins: [stubServerOnly],
    define: { 'process.env.NODE_ENV': '"production"' },
  });
  if (!result.success) throw new Error(`bun build failed:\n${result.logs.map(String).join('\n')}`);
  await copyFile(join(root, 'browser', 'index.html'), join(out, 'index.html'));
  return out;
}

if (import.meta.main) console.log(await buildBrowserPage(process.argv[2]));
