// `bun run demo:train`: about a minute of full fine-tuning of the shipped tiny model
// (models/tiny-nemotron) on the project's guides, on the default device (or --device cpu, ...),
// through the ordinary `nemotron train` command. Shows the progress bar, opens nothing, and ends by
// printing where the run's report (report.html, loss.svg, log.jsonl) is.
// Usage: bun run demo:train [--steps N] [device flags]
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { Glob } from 'bun';
import { TINY_TRAINED_DIR } from '../src/tiny-model';

const root = join(import.meta.dir, '..');
const args = process.argv.slice(2);
const stepsAt = args.indexOf('--steps');
const steps = stepsAt >= 0 ? args.splice(stepsAt, 2)[1]! : '100';
const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
const out = join(root, '.cache', 'demo-train', `run-${stamp}`);
await mkdir(out, { recursive: true });

// The README and the guides, one document per line of a .jsonl file.
const guides = [...new Glob('docs/guides/*.md').scanSync({ cwd: root })].sort();
const texts = await Promise.all(['README.md', ...guides].map((p) => readFile(join(root, p), 'utf8')));
const data = join(out, 'docs.jsonl');
await writeFile(data, `${texts.map((text) => JSON.stringify({ text })).join('\n')}\n`);

const command = [
  'src/cli/main.ts',
  'train',
  '--model',
  TINY_TRAINED_DIR,
  '--data',
  data,
  '--out',
  out,
  '--steps',
  steps,
  '--batch-size',
  '4',
  '--seq-len',
  '128',
  '--lr',
  '1e-3',
  '--min-lr',
  '1e-4',
  '--warmup',
  '4',
  '--eval-every',
  '20',
  ...args,
];
console.error(`demo:train: ${steps} steps of nemotron train on ${relative(root, TINY_TRAINED_DIR)}, into ${relative(root, out)}`);
const child = Bun.spawn([process.execPath, ...command], { cwd: root, stdout: 'ignore', stderr: 'inherit', stdin: 'ignore' });
const code = await child.exited;
if (code !== 0) process.exit(code);
// `nemotron train` has printed the report's path; the rest of the run's files:
console.log(`loss curve: ${join(out, 'loss.svg')}\nlog: ${join(out, 'log.jsonl')}\ncheckpoint: ${join(out, `checkpoint-${steps}`)}`);
