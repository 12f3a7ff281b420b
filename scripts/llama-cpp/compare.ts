// Ours against llama.cpp, interleaved: each round runs our bench-generate rows for one dtype and then
// llama-bench's for the same model and dtype, so both see the same minutes of a machine whose speed
// drifts (a shared VM moved 2× between passes minutes apart). Both sides report their best of 3
// (llama-bench's fastest sample), and the summary gives the median ratio over the rounds with its
// range, for prefill 512 and decode at depths 128 and 2048 (2 threads unless THREADS is set).
// Needs scripts/llama-cpp/bench.sh to have built llama-bench and the GGUFs (BUILD_ONLY=1 does only that).
// One JSON line per measurement and per summary:
//   {"bench":"compare","model":…,"dtype":…,"row":"prefill"|"decode","depth":…,"round":…,"ours":…,"llama_cpp":…,"ratio":…,
//    "ours_peak_rss_mib":…,"llama_cpp_peak_rss_mib":…}
//   {"bench":"compare_summary",…,"rounds":…,"ratio_median":…,"ratio_min":…,"ratio_max":…,"ours_median":…,"llama_cpp_median":…,
//    "rss_ratio_max":…,"cpu":…}
// Peak RSS: each side's process high-water mark for the row alone (ours: one bench-generate process
// per row; a decode row's includes its prompt's prefill, as llama-bench's -d does; llama.cpp: GNU
// time's %M of the row's llama-bench run).
// --busy N runs N busy-looping processes at nice 10 meanwhile, the same for both sides: a host shared
// with other work (a build, another job), where threads that spin at barriers lose their core.
// Usage: bun scripts/llama-cpp/compare.ts [--model small|moe] [--dtype f32|bf16] [--rounds N] [--busy N] [--work DIR]
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const root = join(import.meta.dir, '..', '..');
const arg = (name: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const model = arg('model') ?? 'small';
if (model !== 'small' && model !== 'moe') throw new Error(`--model must be small or moe, got '${model}'`);
const dtypes = arg('dtype') ? [arg('dtype')!] : ['f32', 'bf16'];
if (dtypes.some((d) => d !== 'f32' && d !== 'bf16')) throw new Error(`--dtype must be f32 or bf16, got '${arg('dtype')}'`);
const rounds = Number(arg('rounds') ?? 3);
if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds must be a positive integer, got '${arg('rounds')}'`);
const busy = Number(arg('busy') ?? 0);
if (!Number.isInteger(busy) || busy < 0) throw new Error(`--busy must be an integer ≥ 0, got '${arg('busy')}'`);
const work = arg('work') ?? join(root, '.cache', 'llama-cpp');
const threads = process.env.THREADS ?? '2';
const llamaBench = join(work, 'src', 'build', 'bin', 'llama-bench');
if (!existsSync(llamaBench)) throw new Error(`${llamaBench} is missing: run BUILD_ONLY=1 scripts/llama-cpp/bench.sh first`);

type Row = { row: 'prefill' | 'decode'; depth: number };
type Measured = { tokensPerS: number; peakRssMiB: number };
const ROWS: Row[] = [
  { row: 'prefill', depth: 512 },
  { row: 'decode', depth: 128 },
  { row: 'decode', depth: 2048 },
];
const key = (dtype: string, r: Row) => `${dtype} ${r.row} ${r.depth}`;

function run(cmd: string[], env: Record<string, string> = {}): string {
  const p = Bun.spawnSync(cmd, { cwd: root, env: { ...process.env, ...env }, stderr: 'pipe' });
  if (p.exitCode !== 0) throw new Error(`${cmd.join(' ')} failed (exit ${p.exitCode}): ${p.stderr.toString().slice(-2000)}`);
  return p.stdout.toString();
}
const jsonLines = (text: string) =>
  text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);

const MIB = 1024 * 1024;
/**
 * Our tokens/s per row (bench-generate: best of 3 after a warm-up) and peak RSS, one process per row
 * (--prefill-only, --decode-only --depth N), so each peak covers what llama-bench's run for the row does.
 */
function ours(dtype: string): Map<string, Measured> {
  const out = new Map<string, Measured>();
  for (const r of ROWS) {
    const only = r.row === 'prefill' ? ['--prefill-only'] : ['--decode-only', '--depth', String(r.depth)];
    const rows = jsonLines(run(['bun', 'scripts/bench-generate.ts', '--model', model, '--dtype', dtype, ...only], { NEMOTRON_THREADS: threads }));
    const row = rows.find((x) => x.bench === r.row && x.depth === r.depth);
    if (row) out.set(key(dtype, r), { tokensPerS: row.tokens_per_s as number, peakRssMiB: (row.peak_rss_bytes as number) / MIB });
  }
  return out;
}

let cpu = '';
/** llama.cpp's tokens/s per row (the fastest of 3 samples, like ours) and the run's peak RSS. */
function llama(dtype: string): Map<string, Measured> {
  const out = new Map<string, Measured>();
  const gguf = join(work, `bench-${model}-${dtype}.gguf`);
  const rssFile = join(work, 'compare-rss');
  for (const r of ROWS) {
    const shape = r.row === 'prefill' ? ['-p', '512', '-n', '0'] : ['-p', '0', '-n', '64', '-d', String(r.depth)];
    const [row] = jsonLines(run(['/usr/bin/time', '-f', '%M', '-o', rssFile, llamaBench, '-m', gguf, '-t', threads, '-r', '3', ...shape, '-o', 'jsonl']));
    cpu = String(row!.cpu_info);
    const rssKiB = Number(readFileSync(rssFile, 'utf8').trim().split(/\s+/).at(-1));
    out.set(key(dtype, r), { tokensPerS: Math.max(...(row!.samples_ts as number[])), peakRssMiB: rssKiB / 1024 });
  }
  return out;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const round2 = (v: number) => Math.round(v * 100) / 100;
const seen = new Map<string, { ours: number[]; llama: number[]; ratio: number[]; rssRatio: number[] }>();
const spinners = Array.from({ length: busy }, () => Bun.spawn(['nice', '-n', '10', process.execPath, '-e', 'for (;;) {}'], { stdout: 'ignore' }));
const stopSpinners = () => {
  for (const p of spinners) p.kill();
};
process.on('exit', stopSpinners);
process.on('SIGINT', () => process.exit(130));
try {
  for (let i = 0; i < rounds; i++) {
    for (const dtype of dtypes) {
      const a = ours(dtype);
      const b = llama(dtype);
      for (const r of ROWS) {
        const k = key(dtype, r);
        const o = a.get(k);
        const l = b.get(k);
        if (o === undefined || l === undefined) throw new Error(`no ${k} row from ${o === undefined ? 'bench-generate' : 'llama-bench'}`);
        const s = seen.get(k) ?? { ours: [], llama: [], ratio: [], rssRatio: [] };
        s.ours.push(o.tokensPerS);
        s.llama.push(l.tokensPerS);
        s.ratio.push(o.tokensPerS / l.tokensPerS);
        s.rssRatio.push(o.peakRssMiB / l.peakRssMiB);
        seen.set(k, s);
        console.log(
          JSON.stringify({
            bench: 'compare',
            model: `bench-${model}`,
            dtype,
            ...r,
            round: i,
            ours: o.tokensPerS,
            llama_cpp: round2(l.tokensPerS),
            ratio: round2(o.tokensPerS / l.tokensPerS),
            ours_peak_rss_mib: Math.round(o.peakRssMiB),
            llama_cpp_peak_rss_mib: Math.round(l.peakRssMiB),
          }),
        );
      }
    }
  }
} finally {
  stopSpinners();
}
for (const dtype of dtypes) {
  for (const r of ROWS) {
    const s = seen.get(key(dtype, r))!;
    console.log(
      JSON.stringify({
        bench: 'compare_summary',
        model: `bench-${model}`,
        dtype,
        ...r,
        threads: Number(threads),
        busy,
        rounds,
        ratio_median: round2(median(s.ratio)),
        ratio_min: round2(Math.min(...s.ratio)),
        ratio_max: round2(Math.max(...s.ratio)),
        ours_median: round2(median(s.ours)),
        llama_cpp_median: round2(median(s.llama)),
        rss_ratio_max: round2(Math.max(...s.rssRatio)),
        cpu,
      }),
    );
  }
}
