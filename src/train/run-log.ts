/**
 * The trainer's log in an output folder, `OUT/log.jsonl`: one JSON object per line — the run's
 * settings (`{"type":"settings",…}`), each update (`{"type":"step",step,loss,lr,grad_norm,tokens_per_s}`)
 * and each evaluation (`{"type":"eval",step,eval_loss}`). A resumed run appends to it; readers keep
 * the last record of each step, so the steps a resumed run repeats replace the earlier ones.
 */
import { appendFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { EvalLog, StepLog } from './trainer';

export const RUN_LOG_FILE = 'log.jsonl';

export type RunSettingsRecord = Record<string, string | number | boolean | null>;

export interface RunHistory {
  /** The latest settings record (a resumed run's own). */
  settings: RunSettingsRecord;
  /** Updates by step, ascending. */
  steps: StepLog[];
  /** Evaluations by step, ascending. */
  evals: EvalLog[];
}

export function appendRunLog(
  outDir: string,
  record: { type: 'settings'; settings: RunSettingsRecord } | ({ type: 'step' } & StepLog) | ({ type: 'eval' } & EvalLog),
): void {
  appendFileSync(join(outDir, RUN_LOG_FILE), `${JSON.stringify(record)}\n`);
}

/** Reads OUT/log.jsonl; errors name the file and line. A torn last line (a killed run) is skipped. */
export async function readRunLog(outDir: string): Promise<RunHistory> {
  const path = join(outDir, RUN_LOG_FILE);
  const text = await readFile(path, 'utf8').catch(() => {
    throw new Error(`${path}: no such file (a folder that \`nemotron train --out\` wrote holds one)`);
  });
  const lines = text.split('\n');
  let settings: RunSettingsRecord = {};
  const steps = new Map<number, StepLog>();
  const evals = new Map<number, EvalLog>();
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    let r: Record<string, unknown>;
    try {
      r = JSON.parse(line) as Record<string, unknown>;
    } catch (e) {
      if (i === lines.length - 1 || (i === lines.length - 2 && lines[lines.length - 1] === '')) return;
      throw new Error(`${path}:${i + 1}: not valid JSON (${(e as Error).message})`);
    }
    const num = (key: string) => {
      const v = r[key];
      if (typeof v !== 'number') throw new Error(`${path}:${i + 1}: "${key}" must be a number, got ${JSON.stringify(v)}`);
      return v;
    };
    if (r.type === 'settings') settings = (r.settings ?? {}) as RunSettingsRecord;
    else if (r.type === 'step')
      steps.set(num('step'), {
        step: num('step'),
        loss: num('loss'),
        lr: num('lr'),
        grad_norm: num('grad_norm'),
        tokens_per_s: num('tokens_per_s'),
        peak_bytes: typeof r.peak_bytes === 'number' ? r.peak_bytes : 0,
      });
    else if (r.type === 'eval') evals.set(num('step'), { step: num('step'), eval_loss: num('eval_loss') });
    else throw new Error(`${path}:${i + 1}: unknown record type ${JSON.stringify(r.type)}`);
  });
  const ascending = <T extends { step: number }>(m: Map<number, T>) => [...m.values()].sort((a, b) => a.step - b.step);
  return { settings, steps: ascending(steps), evals: ascending(evals) };
}
