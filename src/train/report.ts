/**
 * The training report of an output folder: `OUT/report.html` (self-contained: inline SVG curves of
 * training and eval loss, learning rate, gradient norm and tokens/s, plus the run's settings) and
 * `OUT/loss.svg`, drawn from the run's history (OUT/log.jsonl, see run-log.ts). Both are written
 * atomically (temp file, then rename), so a browser or a crash never sees half a file.
 *
 * `RunReporter` is what the trainer's callers hook in: it appends every update and evaluation to
 * the log and redraws the report at each evaluation, checkpoint and at the end.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { lineChartSvg } from './svg-chart';
import { appendRunLog, readRunLog, RUN_LOG_FILE, type RunHistory, type RunSettingsRecord } from './run-log';
import type { EvalLog, StepLog } from './trainer';

export const REPORT_FILE = 'report.html';
export const LOSS_SVG_FILE = 'loss.svg';

const escapeHtml = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

/** The loss chart: training loss (and a moving average when noisy) with the eval loss. */
export function lossSvg(history: RunHistory, width = 640, height = 300): string {
  const train = history.steps.map((s) => [s.step, s.loss] as const);
  return lineChartSvg(
    [
      { name: 'train loss', color: '#76b900', points: train },
      { name: 'eval loss', color: '#1f5fbf', points: history.evals.map((e) => [e.step, e.eval_loss] as const) },
    ],
    { title: 'loss', width, height },
  );
}

export function reportHtml(history: RunHistory, title = 'nemotron-ts training run'): string {
  const last = history.steps.at(-1);
  const lastEval = history.evals.at(-1);
  const total = typeof history.settings.steps === 'number' ? history.settings.steps : null;
  const chart = (name: string, key: 'lr' | 'grad_norm' | 'tokens_per_s', color: string) =>
    lineChartSvg([{ name, color, points: history.steps.map((s) => [s.step, s[key]] as const) }], { title: name, width: 390, height: 220 });
  const summary: [string, string][] = [
    ['step', last ? `${last.step}${total !== null ? ` / ${total}` : ''}` : '—'],
    ['training loss', last ? last.loss.toFixed(4) : '—'],
    ['eval loss', lastEval ? `${lastEval.eval_loss.toFixed(4)} (step ${lastEval.step})` : '—'],
    ['tokens/s (last update)', last ? last.tokens_per_s.toFixed(1) : '—'],
  ];
  const rows = (pairs: readonly (readonly [string, unknown])[]) =>
    pairs.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(String(v))}</td></tr>`).join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1320px}
h1{font-size:20px;margin:0 0 4px}p.sub{color:#666;margin:0 0 16px}
.grid{display:flex;flex-wrap:wrap;gap:16px}.card{border:1px solid #ddd;border-radius:6px;padding:8px;background:#fff}
table{border-collapse:collapse;font-size:13px}th{text-align:left;padding:2px 12px 2px 0;color:#555;font-weight:600}td{padding:2px 0;font-family:ui-monospace,monospace}
</style></head><body>
<h1>${escapeHtml(title)}</h1>
<p class="sub">Drawn from ${RUN_LOG_FILE} in this folder; refreshed at every evaluation and checkpoint (redraw: <code>nemotron plot DIR</code>).</p>
<div class="grid">
<div class="card">${lossSvg(history)}</div>
<div class="card"><table>${rows(summary)}</table><h2 style="font-size:14px">settings</h2><table>${rows(Object.entries(history.settings))}</table></div>
<div class="card">${chart('learning rate', 'lr', '#b35900')}</div>
<div class="card">${chart('gradient norm (before clipping)', 'grad_norm', '#8a2be2')}</div>
<div class="card">${chart('tokens/s', 'tokens_per_s', '#008b8b')}</div>
</div></body></html>
`;
}

function writeAtomic(path: string, text: string): void {
  const temp = `${path}.tmp-${process.pid}`;
  writeFileSync(temp, text);
  renameSync(temp, path);
}

/** Writes OUT/report.html and OUT/loss.svg from `history` (synchronously: small files, written from the trainer's callbacks). */
export function writeReport(outDir: string, history: RunHistory): void {
  writeAtomic(join(outDir, LOSS_SVG_FILE), lossSvg(history));
  writeAtomic(join(outDir, REPORT_FILE), reportHtml(history));
}

/** `nemotron plot OUT`: redraws OUT/report.html and OUT/loss.svg from OUT/log.jsonl. */
export async function redrawReport(outDir: string): Promise<RunHistory> {
  const history = await readRunLog(outDir);
  writeReport(outDir, history);
  return history;
}

export interface RunReporterOptions {
  outDir: string;
  /** The run's settings, shown in the report (flat values). */
  settings: RunSettingsRecord;
  /** Continue the history already in OUT/log.jsonl (a resumed run). */
  resume?: boolean;
}

/** Keeps OUT/log.jsonl and the report of a run up to date. */
export class RunReporter {
  private history: RunHistory;

  constructor(private readonly options: RunReporterOptions) {
    this.history = { settings: options.settings, steps: [], evals: [] };
  }

  /** Creates OUT, picks up an earlier history when resuming, logs the settings, draws an empty report. */
  async start(): Promise<void> {
    const { outDir, settings, resume } = this.options;
    mkdirSync(outDir, { recursive: true });
    if (resume) {
      const earlier = await readRunLog(outDir).catch(() => null);
      if (earlier) this.history = { settings, steps: earlier.steps, evals: earlier.evals };
    }
    appendRunLog(outDir, { type: 'settings', settings });
    writeReport(outDir, this.history);
  }

  step(log: StepLog): void {
    appendRunLog(this.options.outDir, { type: 'step', ...log });
    // A resumed run repeats no step, but drop any later ones it may have logged before a crash.
    this.history.steps = [...this.history.steps.filter((s) => s.step < log.step), log];
  }

  eval(log: EvalLog): void {
    appendRunLog(this.options.outDir, { type: 'eval', ...log });
    this.history.evals = [...this.history.evals.filter((e) => e.step < log.step), log];
    writeReport(this.options.outDir, this.history);
  }

  /** Redraws the report (at a checkpoint and at the end of the run). */
  refresh(): void {
    writeReport(this.options.outDir, this.history);
  }

  get reportPath(): string {
    return join(this.options.outDir, REPORT_FILE);
  }
}
