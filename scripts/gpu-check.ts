// `bun run gpu-check`: the one command to run on a machine with a real GPU (Vulkan, Metal, D3D12).
// Prints JSON lines only: the adapter (`nemotron info`), the WebGPU tests and the golden fixtures
// on that adapter, then the benchmarks (their own JSON lines, tagged with the script), each step
// under a time limit so the whole run stays under 10 minutes; a last line sums it up.
//   bun run gpu-check [--backend vulkan|metal|d3d12|opengl] [--tests all|subset|none] [--no-bench] [--profile]
// On a machine without a GPU it runs on the software adapter and says so (`software: true`);
// `--tests subset` takes the Vulkan pass of `npm test` instead of every WebGPU test.
import { spawn } from 'node:child_process';
import { join } from 'node:path';

const root = join(import.meta.dir, '..');
const args = process.argv.slice(2);
const option = (name: string, fallback: string): string => {
  const at = args.indexOf(name);
  return at >= 0 && args[at + 1] ? args[at + 1]! : fallback;
};
const backend = option('--backend', process.env.NEMOTRON_BACKEND ?? '');
const testsMode = option('--tests', 'all');
const bench = !args.includes('--no-bench');
const env: Record<string, string | undefined> = { ...process.env, EGL_PLATFORM: process.env.EGL_PLATFORM ?? 'surfaceless', NEMOTRON_DEVICE: 'webgpu' };
if (backend) env.NEMOTRON_BACKEND = backend;

/** The WebGPU tests: every kernel and model test plus the fixtures, on the chosen adapter only. */
const ALL_TESTS = ['packages/kernels', 'packages/core', 'test/forward-fixtures.test.ts', 'test/gradient-fixtures.test.ts'];
/** The Vulkan pass of `npm test` (scripts/vulkan-tests.json). */
const SUBSET_TESTS = ((await Bun.file(join(root, 'scripts', 'vulkan-tests.json')).json()) as { files: string[] }).files;
/** Benchmarks and their time limits (seconds); `--profile` adds bench:forward's per-kernel GPU times (timestamp-query devices). */
const BENCHES: [string, string[], number][] = [
  ['bench-kernels', ['--quick'], 60],
  ['bench-forward', ['--small-only', ...(args.includes('--profile') ? ['--profile'] : [])], 60],
  ['bench-generate', ['--dtype', 'bf16'], 75],
  ['bench-train-small', [], 45],
];
/** The tests' limit: with the benchmarks' 240 s and `info`, the run stays under 10 minutes. */
const TESTS_LIMIT_S = 300;

function emit(line: Record<string, unknown>): void {
  console.log(JSON.stringify(line));
}

interface Ran {
  code: number | null;
  seconds: number;
  timedOut: boolean;
  stdout: string;
  stderr: string;
}

/** Runs bun with `argv` under a time limit; stdout lines go to `onLine` as they come. */
function runBun(argv: string[], limitS: number, runEnv: Record<string, string | undefined>, onLine?: (line: string) => void): Promise<Ran> {
  return new Promise((resolve) => {
    const start = performance.now();
    const child = spawn(process.execPath, argv, { cwd: root, env: runEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let pending = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, limitS * 1000);
    child.stdout.on('data', (chunk: Buffer) => {
      const text = chunk.toString();
      stdout += text;
      pending += text;
      const lines = pending.split('\n');
      pending = lines.pop()!;
      for (const l of lines) onLine?.(l);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-2_000_000);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (pending) onLine?.(pending);
      resolve({ code, seconds: Number(((performance.now() - start) / 1000).toFixed(1)), timedOut, stdout, stderr });
    });
  });
}

const summary: Record<string, unknown> = { check: 'summary' };
const started = performance.now();

const info = await runBun(['src/cli/main.ts', 'info', '--json'], 60, env);
let report: Record<string, unknown> = {};
try {
  report = JSON.parse(info.stdout.trim().split('\n').pop() ?? '') as Record<string, unknown>;
} catch {
  report = { error: info.stderr.trim().split('\n').slice(-3).join(' ') };
}
emit({ check: 'info', seconds: info.seconds, ...report });
if (report.device !== 'webgpu') {
  emit({ check: 'summary', ok: false, reason: 'no WebGPU adapter opened (see the info line)' });
  process.exit(1);
}
if (report.software) emit({ check: 'note', message: `software adapter '${String(report.adapter)}': correctness only, its numbers are not a GPU's` });

if (testsMode !== 'none') {
  const files = testsMode === 'subset' ? SUBSET_TESTS : ALL_TESTS;
  const testEnv = { ...env, NEMOTRON_TEST_DEVICES: 'webgpu' };
  const ran = await runBun(['test', '--timeout', '300000', ...files], TESTS_LIMIT_S, testEnv);
  const tail = ran.stderr + ran.stdout;
  // Bun's summary, or (a run cut off by its limit) the per-test lines seen so far.
  const count = (what: string) =>
    Number(new RegExp(`(\\d+) ${what}\\b`).exec(tail.slice(-4000))?.[1] ?? [...tail.matchAll(new RegExp(`^\\(${what}\\) `, 'gm'))].length);
  const failures = [...tail.matchAll(/^\(fail\) (.*)$/gm)].map((m) => m[1]);
  const line = { check: 'tests', files, passed: count('pass'), failed: count('fail'), seconds: ran.seconds, timed_out: ran.timedOut, failures };
  emit(line);
  summary.tests_ok = !ran.timedOut && ran.code === 0 && line.failed === 0;
}

if (bench) {
  for (const [script, extra, limit] of BENCHES) {
    const ran = await runBun([`scripts/${script}.ts`, ...extra], limit, env, (l) => {
      if (!l.startsWith('{')) return;
      try {
        emit({ check: 'bench', script, ...(JSON.parse(l) as Record<string, unknown>) });
      } catch {
        // a progress line that only looks like JSON
      }
    });
    emit({ check: 'bench_done', script, seconds: ran.seconds, timed_out: ran.timedOut, exit: ran.code });
  }
}

summary.seconds = Number(((performance.now() - started) / 1000).toFixed(1));
summary.adapter = report.adapter;
summary.backend = report.backend;
summary.ok = summary.tests_ok !== false;
emit(summary);
process.exit(summary.ok ? 0 : 1);
