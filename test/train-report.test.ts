/**
 * Training you can watch: the progress line, OUT/log.jsonl, OUT/report.html and OUT/loss.svg
 * (written atomically, redrawn by `nemotron plot`), and `nemotron train` leaving them in OUT.
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureTinyModel } from './support/tiny-model';
import { formatDuration, progressLine, TrainingProgress } from '../src/train/progress';
import { redrawReport, RunReporter } from '../src/train/report';
import { readRunLog } from '../src/train/run-log';

const ROOT = join(import.meta.dir, '..');
const scratch = await mkdtemp(join(tmpdir(), 'nemotron-train-report-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

const stepLog = (step: number, loss: number) => ({ step, loss, lr: 1e-3 * step, grad_norm: 0.5 + step / 10, tokens_per_s: 100 + step, peak_bytes: 1000 });

/** A stand-in for process.stderr that records what is written. */
function sink(isTTY: boolean): { stream: NodeJS.WriteStream; text: () => string } {
  let text = '';
  const stream = { isTTY, columns: 200, write: (s: string) => ((text += s), true) } as unknown as NodeJS.WriteStream;
  return { stream, text: () => text };
}

describe('progress', () => {
  test('the progress line has step/total, loss, lr, tokens/s and ETA', () => {
    const line = progressLine(stepLog(5, 2.5), 20, 75);
    expect(line).toContain('5/20');
    expect(line).toContain('loss 2.5000');
    expect(line).toContain('lr 5.00e-3');
    expect(line).toContain('105 tok/s');
    expect(line).toContain('ETA 1:15');
    expect(line.startsWith('█')).toBe(true);
    // A narrow terminal keeps the numbers and drops the bar.
    expect(progressLine(stepLog(5, 2.5), 20, 75, 60)).toBe('██░░░░░░ 5/20  loss 2.5000  lr 5.00e-3  105 tok/s  ETA 1:15');
    expect(progressLine(stepLog(5, 2.5), 20, 75, 55)).toBe('5/20  loss 2.5000  lr 5.00e-3  105 tok/s  ETA 1:15');
    expect(formatDuration(3725)).toBe('1:02:05');
    expect(formatDuration(NaN)).toBe('?');
  });

  test('a terminal gets one line redrawn in place; a pipe gets one line per update', () => {
    const tty = sink(true);
    const bar = new TrainingProgress({ totalSteps: 3, stream: tty.stream });
    bar.step(stepLog(1, 3));
    bar.step(stepLog(2, 2));
    bar.message('step 2: eval loss 2.1');
    bar.step(stepLog(3, 1));
    bar.end();
    expect(tty.text().split('\r\x1b[2K').length).toBeGreaterThan(3);
    expect(tty.text()).toContain('step 2: eval loss 2.1\n');
    expect(tty.text().endsWith('\n')).toBe(true);
    const pipe = sink(false);
    const lines = new TrainingProgress({ totalSteps: 3, stream: pipe.stream });
    lines.step(stepLog(1, 3));
    lines.step(stepLog(2, 2));
    expect(pipe.text()).not.toContain('\r');
    expect(pipe.text().trim().split('\n')).toHaveLength(2);
    expect(pipe.text()).toContain('step 2/3  loss 2.0000');
  });
});

describe('report', () => {
  test('the log, report.html and loss.svg follow the run; plot redraws the same files; a resumed run continues the history', async () => {
    const out = join(scratch, 'run');
    const reporter = new RunReporter({ outDir: out, settings: { steps: 4, lr: 1e-3, model: 'tiny <test>' } });
    await reporter.start();
    expect((await readdir(out)).sort()).toEqual(['log.jsonl', 'loss.svg', 'report.html']);
    expect(await readFile(join(out, 'loss.svg'), 'utf8')).toContain('no data yet');
    reporter.step(stepLog(1, 3));
    reporter.step(stepLog(2, 2.5));
    reporter.eval({ step: 2, eval_loss: 2.75 });
    const html = await readFile(join(out, 'report.html'), 'utf8');
    expect(html).toContain('<svg');
    expect(html).toContain('eval loss');
    expect(html).toContain('tiny &lt;test&gt;');
    expect(html).not.toMatch(/<script|src="http|href="http/);
    const svg = await readFile(join(out, 'loss.svg'), 'utf8');
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg).toContain('<path');
    expect((await readdir(out)).filter((f) => f.includes('.tmp'))).toEqual([]);

    await rm(join(out, 'report.html'));
    await redrawReport(out);
    expect(await readFile(join(out, 'report.html'), 'utf8')).toBe(html);

    // Resumed from step 1's checkpoint: step 2 is repeated with a new loss, and replaces the old one.
    const resumed = new RunReporter({ outDir: out, resume: true, settings: { steps: 4, lr: 1e-3 } });
    await resumed.start();
    resumed.step(stepLog(2, 2.4));
    resumed.step(stepLog(3, 2.2));
    const history = await readRunLog(out);
    expect(history.steps.map((s) => [s.step, s.loss])).toEqual([
      [1, 3],
      [2, 2.4],
      [3, 2.2],
    ]);
    expect(history.evals).toEqual([{ step: 2, eval_loss: 2.75 }]);
  });

  test('a bad log names the file and line; a torn last line is skipped', async () => {
    const out = join(scratch, 'bad');
    const reporter = new RunReporter({ outDir: out, settings: {} });
    await reporter.start();
    reporter.step(stepLog(1, 3));
    const log = join(out, 'log.jsonl');
    await writeFile(log, `${await readFile(log, 'utf8')}{"type":"step","st`);
    expect((await readRunLog(out)).steps).toHaveLength(1);
    await writeFile(log, `{"type":"step","step":1,"loss":"x","lr":1,"grad_norm":1,"tokens_per_s":1}\n`);
    await expect(readRunLog(out)).rejects.toThrow(`${log}:1: "loss" must be a number`);
    await expect(redrawReport(join(scratch, 'nothing'))).rejects.toThrow(`${join(scratch, 'nothing', 'log.jsonl')}: no such file`);
  });

  test('nemotron train leaves log.jsonl, report.html and loss.svg in OUT; nemotron plot redraws them', async () => {
    const modelDir = await ensureTinyModel(join(scratch, 'tiny'));
    const data = join(scratch, 'data.txt');
    await writeFile(data, 'the model writes words, the trainer draws curves. '.repeat(8));
    const out = join(scratch, 'cli-run');
    const run = (...args: string[]) => Bun.spawnSync([process.execPath, join(ROOT, 'src/cli/main.ts'), ...args], { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' });
    const train = run(
      'train',
      '--model',
      modelDir,
      '--data',
      data,
      '--out',
      out,
      '--steps',
      '2',
      '--seq-len',
      '16',
      '--batch-size',
      '1',
      '--lr',
      '1e-3',
      '--eval-every',
      '2',
      '--device',
      'cpu',
    );
    expect(train.stderr.toString()).toContain(`report: ${join(out, 'report.html')}`);
    expect(train.exitCode).toBe(0);
    // stdout stays JSON lines for pipes.
    for (const line of train.stdout.toString().trim().split('\n')) expect(() => JSON.parse(line)).not.toThrow();
    const history = await readRunLog(out);
    expect(history.steps.map((s) => s.step)).toEqual([1, 2]);
    expect(history.evals.map((e) => e.step)).toEqual([2]);
    expect(history.settings.steps).toBe(2);
    const before = await readFile(join(out, 'report.html'), 'utf8');
    await rm(join(out, 'loss.svg'));
    const plot = run('plot', out);
    expect(plot.exitCode).toBe(0);
    expect(await readFile(join(out, 'report.html'), 'utf8')).toBe(before);
    expect(await readFile(join(out, 'loss.svg'), 'utf8')).toContain('<path');
    const missing = run('plot', join(scratch, 'nowhere'));
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr.toString()).toContain(`${join(scratch, 'nowhere', 'log.jsonl')}: no such file`);
  }, 300_000);
});
