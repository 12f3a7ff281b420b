#!/usr/bin/env node
// One-command setup for a fresh machine that has only Node and npm. `npm start` / `npm test` land here:
//   1. find bun, or install it from the npm registry into .tools/ (no global install);
//   2. `bun install` the workspace;
//   3. build the native CPU kernels with the system C compiler (packages/kernels/native; OpenBLAS
//      from apt when root, else the command is printed): on a host without a hardware GPU they are
//      the default device; when the build fails the TypeScript CPU reference is used;
//   4. probe for a WebGPU adapter; when none is found, install Mesa's EGL/GL packages with apt (as
//      root), or print the exact apt command and fall back to the CPU backend;
//   5. run the main job (`start`) or the test suite (`test`, ending with "N passed, N failed").
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const BUN_VERSION = '1.4.5';
const MESA_PACKAGES = ['libegl1', 'libegl-mesa0', 'libgles2', 'libgl1-mesa-dri'];
const NATIVE_PACKAGES = { compiler: ['gcc', 'libgomp1'], blas: ['libopenblas0-pthread'] };
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

function isRoot() {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** apt-get install as root (quietly, with one `apt-get update` retry); false when not root or it fails. */
function aptInstall(packages) {
  if (!isRoot() || !works('apt-get')) return false;
  const quiet = { stdio: ['ignore', 'ignore', 'inherit'] };
  if (run('apt-get', ['install', '-y', ...packages], quiet)) return true;
  return run('apt-get', ['update'], quiet) && run('apt-get', ['install', '-y', ...packages], quiet);
}

function hasOpenBlas() {
  const r = spawnSync('ldconfig', ['-p'], { encoding: 'utf8' });
  return (r.stdout ?? '').includes('libopenblas.so.0');
}

/** Builds the native CPU kernels (scripts/build-native.ts); on failure says why and what to install. */
function buildNative(bun) {
  if (process.platform !== 'linux' || env.NEMOTRON_DEVICE === 'cpu') return false;
  if (!works(env.CC ?? 'gcc') && !aptInstall(NATIVE_PACKAGES.compiler)) {
    log(`no C compiler: the native CPU kernels are not built (the TypeScript reference is used); to build them run:\n    sudo apt-get install -y ${NATIVE_PACKAGES.compiler.join(' ')}`);
    return false;
  }
  if (!hasOpenBlas() && !aptInstall(NATIVE_PACKAGES.blas)) {
    log(`OpenBLAS not found: f32 products use the built-in kernels; for the faster sgemv run:\n    sudo apt-get install -y ${NATIVE_PACKAGES.blas.join(' ')}`);
  }
  const r = spawnSync(bun, ['scripts/build-native.ts'], { cwd: root, env, encoding: 'utf8', timeout: 300_000 });
  let result;
  try {
    result = JSON.parse((r.stdout ?? '').trim().split('\n').pop() ?? '');
  } catch {
    result = { ok: false, error: (r.stderr ?? '').trim().split('\n').slice(-3).join(' ') || `exited with ${r.status}` };
  }
  if (result.ok && result.backend) {
    log(`native CPU kernels: ${result.backend}`);
    return true;
  }
  log(`native CPU kernels not available (the TypeScript reference is used): ${result.error ?? 'the library did not load'}`);
  return false;
}

function installMesa() {
  const command = `apt-get install -y ${MESA_PACKAGES.join(' ')}`;
  if (!isRoot() || !works('apt-get')) {
    log(`no GPU adapter and Mesa's EGL packages are missing; to use the embedded llvmpipe device run:\n    sudo ${command}`);
    return false;
  }
  log(`no GPU adapter: installing Mesa's EGL/GL packages (${MESA_PACKAGES.join(', ')})`);
  const quiet = { stdio: ['ignore', 'ignore', 'inherit'] };
  if (run('apt-get', ['install', '-y', ...MESA_PACKAGES], quiet)) return true;
  return run('apt-get', ['update'], quiet) && run('apt-get', ['install', '-y', ...MESA_PACKAGES], quiet);
}

function ensureDevice(bun, native) {
  if (env.NEMOTRON_DEVICE === 'cpu' || env.NEMOTRON_DEVICE === 'native') return;
  let p = probe(bun);
  if (!p.ok && installMesa()) p = probe(bun);
  if (p.ok) {
    log(`device: ${p.description}`);
    return;
  }
  log(`no WebGPU adapter (${p.error}); falling back to the ${native ? 'native ' : ''}CPU backend`);
  env.NEMOTRON_DEVICE = native ? 'native' : 'cpu';
  env.NEMOTRON_TEST_DEVICES = native ? 'cpu,native' : 'cpu';
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
  ensureDevice(bun, buildNative(bun));
  if (task === 'test') process.exit(await runTests(bun, rest));
  if (task === 'start') process.exit(run(bun, ['src/cli/main.ts', 'demo', ...rest]) ? 0 : 1);
  process.exit(run(bun, ['src/cli/main.ts', task, ...rest]) ? 0 : 1);
}

main().catch((e) => {
  log(e instanceof Error ? e.message : String(e));
  process.exit(1);
});
