#!/usr/bin/env node
// One-command setup for a fresh machine that has only Node and npm. `npm start` / `npm test` land here:
//   1. find bun, or install it from the npm registry into .tools/ (no global install);
//   2. `bun install` the workspace;
//   3. build the native CPU kernels with the system C compiler (packages/kernels/native; OpenBLAS
//      from apt when root, else the command is printed): on a host without a hardware GPU they are
//      the default device; when the build fails the TypeScript CPU reference is used;
//   4. probe for a WebGPU adapter; when none is found, install Mesa's EGL/GL packages with apt (as
//      root), or print the exact apt command and fall back to the CPU backend;
//   5. probe for a Vulkan adapter; when none is found and the distro carries Mesa ≥ 24 (lavapipe, a
//      CPU Vulkan driver: Debian 12 in bookworm-backports, Debian 13 and Ubuntu 24.04 in their own
//      archive), install it with apt as root, saying each step; otherwise print a note and go on
//      with OpenGL only (NEMOTRON_SETUP_VULKAN=0 skips this step);
//   6. for `test`: install Debian's `chromium` with apt (as root) when it is missing, for the docs-site
//      and browser tests (without it they skip with a message, and the apt command is printed);
//   7. run the main job (`start`) or the test suite (`test`): every file on the default devices (the
//      CPU reference, the native CPU backend, WebGPU), then — where Vulkan opens — the Vulkan pass:
//      VULKAN_TESTS on Vulkan at the core feature level (NEMOTRON_TEST_VULKAN=all: every file; 0:
//      none). Ends with "N passed, N failed".
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const BUN_VERSION = '1.4.5';
const MESA_PACKAGES = ['libegl1', 'libegl-mesa0', 'libgles2', 'libgl1-mesa-dri'];
/** Mesa's Vulkan drivers (lavapipe) and the GL/EGL libraries of the same Mesa release (they must match). */
const LAVAPIPE_PACKAGES = ['mesa-vulkan-drivers', 'libgl1-mesa-dri', 'libegl-mesa0', 'libglx-mesa0', 'libgbm1'];
/** The Vulkan pass of `npm test` (what it holds and why: the file's `about`). */
const VULKAN_TESTS = JSON.parse(readFileSync(join(root, 'scripts', 'vulkan-tests.json'), 'utf8')).files;
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

function probe(bun, backend) {
  const r = spawnSync(bun, ['scripts/probe-device.ts', ...(backend ? ['--backend', backend] : [])], { cwd: root, env, encoding: 'utf8', timeout: 120_000 });
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
    log(
      `no C compiler: the native CPU kernels are not built (the TypeScript reference is used); to build them run:\n    sudo apt-get install -y ${NATIVE_PACKAGES.compiler.join(' ')}`,
    );
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

/** Whether Vulkan opens; installs lavapipe first where the distro allows (see the header). */
function ensureVulkan(bun) {
  let p = probe(bun, 'vulkan');
  if (p.ok) {
    log(`vulkan: ${p.description}`);
    return true;
  }
  if (env.NEMOTRON_SETUP_VULKAN === '0') {
    log(`no Vulkan adapter (${p.error}); NEMOTRON_SETUP_VULKAN=0, so tests run on OpenGL only`);
    return false;
  }
  const plan = lavapipePlan(osRelease());
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (!plan.steps) {
    log(`no Vulkan adapter (${p.error}); ${plan.note}; tests run on OpenGL only`);
    return false;
  }
  const shown = plan.steps.map((s) => s.show).join(' && ');
  if (!isRoot || !works('apt-get')) {
    log(`no Vulkan adapter; to test on Vulkan (Mesa's lavapipe) run as root:\n    ${shown}\n  tests run on OpenGL only until then`);
    return false;
  }
  log(`no Vulkan adapter: installing Mesa ≥ 24's lavapipe (a CPU Vulkan driver; this also upgrades llvmpipe's GL to the same Mesa):`);
  for (const step of plan.steps) {
    log(`  ${step.show}`);
    if (!step.run()) {
      log(`  that failed; tests run on OpenGL only`);
      return false;
    }
  }
  p = probe(bun, 'vulkan');
  if (!p.ok) log(`Vulkan still does not open (${p.error}); tests run on OpenGL only`);
  else log(`vulkan: ${p.description}`);
  return p.ok;
}

function osRelease() {
  try {
    const text = readFileSync('/etc/os-release', 'utf8');
    return Object.fromEntries(
      text
        .split('\n')
        .filter((l) => l.includes('='))
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).replace(/^"|"$/g, '')]),
    );
  } catch {
    return {};
  }
}

/** How this distro gets Mesa ≥ 24: apt steps (each shown before it runs), or a note why not. */
function lavapipePlan(os) {
  const quiet = { stdio: ['ignore', 'ignore', 'inherit'], env: { ...env, DEBIAN_FRONTEND: 'noninteractive' } };
  const apt = (args) => ({ show: `apt-get ${args.join(' ')}`, run: () => run('apt-get', args, quiet) });
  const install = (extra) => apt(['install', '-y', ...extra, ...LAVAPIPE_PACKAGES]);
  const version = Number(os.VERSION_ID);
  if (os.ID === 'debian' && os.VERSION_CODENAME === 'bookworm') {
    const steps = [];
    if (!hasAptSuite('bookworm-backports')) {
      const file = '/etc/apt/sources.list.d/bookworm-backports.sources';
      const body =
        'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n';
      steps.push({ show: `write ${file} (Debian's bookworm-backports suite, main)`, run: () => (writeFileSync(file, body), true) });
    }
    steps.push(apt(['update']), install(['-t', 'bookworm-backports']));
    return { steps };
  }
  if ((os.ID === 'debian' && version >= 13) || (os.ID === 'ubuntu' && version >= 24.04)) return { steps: [apt(['update']), install([])] };
  return { note: `${os.PRETTY_NAME ?? 'this system'} is not one where setup knows a Mesa ≥ 24 package (Debian 12 with backports, Debian 13, Ubuntu 24.04)` };
}

function hasAptSuite(suite) {
  const files = [
    '/etc/apt/sources.list',
    ...(existsSync('/etc/apt/sources.list.d') ? readdirSync('/etc/apt/sources.list.d').map((f) => join('/etc/apt/sources.list.d', f)) : []),
  ];
  return files.some(
    (f) =>
      (f.endsWith('.list') || f.endsWith('.sources')) &&
      existsSync(f) &&
      readFileSync(f, 'utf8')
        .split('\n')
        .some((l) => !l.trim().startsWith('#') && l.includes(suite)),
  );
}

/** Opens the default device (installing Mesa's GL if needed); returns whether a separate Vulkan pass applies. */
function ensureDevice(bun, native) {
  if (env.NEMOTRON_DEVICE === 'cpu' || env.NEMOTRON_DEVICE === 'native') return false;
  let p = probe(bun);
  if (!p.ok && installMesa()) p = probe(bun);
  if (p.ok) {
    log(`device: ${p.description}`);
    // Where the default device is Vulkan already (a GPU), the main pass covers it.
    return p.backend !== 'vulkan' && ensureVulkan(bun);
  }
  log(`no WebGPU adapter (${p.error}); falling back to the ${native ? 'native ' : ''}CPU backend`);
  env.NEMOTRON_DEVICE = native ? 'native' : 'cpu';
  env.NEMOTRON_TEST_DEVICES = native ? 'cpu,native' : 'cpu';
  return false;
}

/** One `bun test` run; resolves to its pass and fail counts and exit code. */
function runTests(bun, extra, runEnv = env) {
  return new Promise((resolve) => {
    const child = spawn(bun, ['test', '--timeout', '300000', ...extra], { cwd: root, env: runEnv, stdio: ['ignore', 'pipe', 'pipe'] });
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
      resolve({ passed, failed, ok: code === 0 && failed === 0 });
    });
  });
}

/** A static check counted as one test: the type checker or the formatter and linter. */
function staticCheck(bun, name, args) {
  log(`${name}: ${['bun', ...args].join(' ')}`);
  const ok = run(bun, args);
  log(`${name}: ${ok ? 'ok' : 'FAILED'}`);
  return { passed: ok ? 1 : 0, failed: ok ? 0 : 1, ok };
}

/** The static checks, the suite, then the Vulkan pass where Vulkan opens (see the header). */
async function testSuite(bun, extra, vulkan) {
  const results = [];
  // With no file arguments (the whole suite, as CI runs it) the types, formatting and lint are checked too.
  if (extra.length === 0) {
    results.push(staticCheck(bun, 'typecheck', ['x', 'tsc', '-b']));
    results.push(staticCheck(bun, 'format and lint', ['x', 'biome', 'ci', '--colors=off', '.']));
  }
  results.push(await runTests(bun, extra));
  const which = env.NEMOTRON_TEST_VULKAN ?? 'subset';
  const files = which === 'all' ? extra : which === '0' || extra.length > 0 ? null : VULKAN_TESTS;
  if (vulkan && files) {
    log(`Vulkan pass (lavapipe or a GPU, core feature level): ${files.length > 0 ? files.join(' ') : 'every test file'}`);
    results.push(await runTests(bun, files, { ...env, NEMOTRON_TEST_DEVICES: 'webgpu:vulkan', NEMOTRON_BACKEND: 'vulkan' }));
  } else if (!vulkan) log('no Vulkan pass (no Vulkan adapter, or the default device is Vulkan already)');
  const passed = results.reduce((a, r) => a + r.passed, 0);
  const failed = results.reduce((a, r) => a + r.failed, 0);
  process.stdout.write(`\n${passed} passed, ${failed} failed\n`);
  return results.every((r) => r.ok) ? 0 : 1;
}

async function main() {
  const [task = 'start', ...rest] = process.argv.slice(2);
  const bun = findBun();
  // Child processes (tests spawning the CLI, `bun run` scripts) find the same bun.
  if (bun !== 'bun') env.PATH = `${dirname(bun)}:${env.PATH ?? ''}`;
  if (!run(bun, ['install', '--frozen-lockfile'], { stdio: ['ignore', 'ignore', 'inherit'] })) throw new Error('bun install failed');
  const vulkan = ensureDevice(bun, buildNative(bun));
  if (task === 'test') {
    ensureChromium();
    process.exit(await testSuite(bun, rest, vulkan));
  }
  if (task === 'start') process.exit(run(bun, ['src/cli/main.ts', 'demo', ...rest]) ? 0 : 1);
  process.exit(run(bun, ['src/cli/main.ts', task, ...rest]) ? 0 : 1);
}

main().catch((e) => {
  log(e instanceof Error ? e.message : String(e));
  process.exit(1);
});
