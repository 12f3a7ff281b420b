#!/usr/bin/env node
// One-command setup for a fresh machine that has only Node and npm. `npm start` / `npm test` land here:
//   1. find bun, or install it from the npm registry into .tools/ (no global install);
//   2. `bun install` the workspace;
//   3. probe for a WebGPU adapter; when none is found, install Mesa's EGL/GL packages with apt (as
//      root), or print the exact apt command and fall back to the CPU backend;
//   4. for `test`: install Debian's `chromium` with apt (as root) when it is missing, for the docs-site
//      and browser tests (without it they skip with a message, and the apt command is printed);
//   5. run the main job (`start`) or the test suite (`test`, ending with "N passed, N failed").
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const BUN_VERSION = '1.4.5';
const MESA_PACKAGES = ['libegl1', 'libegl-mesa0', 'libgles2', 'libgl1-mesa-dri'];
const env = { ...process.env, EGL_PLATFORM: process.env.EGL_PLATFORM ?? 'surfaceless' };

function log(msg) {
  process.stderr.write(`[setup] ${msg}\n`);
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env, ...opts });
  return r.status === 0;
}

function works(cmd) {
  const r = spawnSync(cmd, ['--version'], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.trim().length > 0;
}

function findBun() {
  if (process.env.BUN_BIN && works(process.env.BUN_BIN)) return process.env.BUN_BIN;
  const local = join(root, '.tools', 'node_modules', '.bin', 'bun');
  if (existsSync(local) && works(local)) return local;
  if (works('bun')) return 'bun';
  log(`bun not found: installing bun@${BUN_VERSION} from the npm registry into .tools/`);
  if (!run('npm', ['install', '--prefix', join(root, '.tools'), '--no-audit', '--no-fund', '--loglevel=error', `bun@${BUN_VERSION}`])) {
    throw new Error('could not install bun from the npm registry');
  }
  if (!works(local)) throw new Error(`bun was installed into .tools but ${local} does not run`);
  return local;
}

function probe(bun) {
  const r = spawnSync(bun, ['scripts/probe-device.ts'], { cwd: root, env, encoding: 'utf8', timeout: 120_000 });
  const line = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line);
  } catch {
    return { ok: false, error: (r.stderr ?? '').trim().split('\n').slice(-3).join(' ') || `probe exited with ${r.status}` };
  }
}

function installMesa() {
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const command = `apt-get install -y ${MESA_PACKAGES.join(' ')}`;
  if (!isRoot || !works('apt-get')) {
    log(`no GPU adapter and Mesa's EGL packages are missing; to use the embedded llvmpipe device run:\n    sudo ${command}`);
    return false;
  }
  log(`no GPU adapter: installing Mesa's EGL/GL packages (${MESA_PACKAGES.join(', ')})`);
  const quiet = { stdio: ['ignore', 'ignore', 'inherit'] };
  if (run('apt-get', ['install', '-y', ...MESA_PACKAGES], quiet)) return true;
  return run('apt-get', ['update'], quiet) && run('apt-get', ['install', '-y', ...MESA_PACKAGES], quiet);
}

function hasChromium() {
  return ['chromium', 'chromium-browser', 'google-chrome'].some((name) => spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0);
}

/** The docs-site and browser tests drive headless Chromium; they skip without it. */
function ensureChromium() {
  if (process.env.CHROMIUM_BIN || hasChromium()) return;
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (!isRoot || !works('apt-get')) {
    log('Chromium is missing: the docs-site and browser tests will skip; to run them: sudo apt-get install -y chromium');
    return;
  }
  log('installing Chromium with apt for the docs-site and browser tests');
  const quiet = { stdio: ['ignore', 'ignore', 'inherit'] };
  if (!run('apt-get', ['install', '-y', 'chromium'], quiet) && !(run('apt-get', ['update'], quiet) && run('apt-get', ['install', '-y', 'chromium'], quiet))) {
    log('could not install Chromium: the docs-site and browser tests will skip');
  }
}

function ensureDevice(bun) {
  if (env.NEMOTRON_DEVICE === 'cpu') return;
  let p = probe(bun);
  if (!p.ok && installMesa()) p = probe(bun);
  if (p.ok) {
    log(`device: ${p.description}`);
    return;
  }
  log(`no WebGPU adapter (${p.error}); falling back to the CPU backend`);
  env.NEMOTRON_DEVICE = 'cpu';
  env.NEMOTRON_TEST_DEVICES = 'cpu';
}

function runTests(bun, extra) {
  return new Promise((resolve) => {
    const child = spawn(bun, ['test', '--timeout', '300000', ...extra], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let tail = '';
    const relay = (stream, sink) =>
      stream.on('data', (chunk) => {
        sink.write(chunk);
        tail = (tail + chunk.toString()).slice(-4000);
      });
    relay(child.stdout, process.stdout);
    relay(child.stderr, process.stderr);
    child.on('close', (code) => {
      const passed = Number(/(\d+) pass\b/.exec(tail)?.[1] ?? 0);
      const failed = Number(/(\d+) fail\b/.exec(tail)?.[1] ?? 0);
      process.stdout.write(`\n${passed} passed, ${failed} failed\n`);
      resolve(code === 0 && failed === 0 ? 0 : code || 1);
    });
  });
}

async function main() {
  const [task = 'start', ...rest] = process.argv.slice(2);
  const bun = findBun();
  // Child processes (tests spawning the CLI, `bun run` scripts) find the same bun.
  if (bun !== 'bun') env.PATH = `${dirname(bun)}:${env.PATH ?? ''}`;
  if (!run(bun, ['install', '--frozen-lockfile'], { stdio: ['ignore', 'ignore', 'inherit'] })) throw new Error('bun install failed');
  ensureDevice(bun);
  if (task === 'test') {
    ensureChromium();
    process.exit(await runTests(bun, rest));
  }
  if (task === 'start') process.exit(run(bun, ['src/cli/main.ts', 'demo', ...rest]) ? 0 : 1);
  process.exit(run(bun, ['src/cli/main.ts', task, ...rest]) ? 0 : 1);
}

main().catch((e) => {
  log(e instanceof Error ? e.message : String(e));
  process.exit(1);
});
