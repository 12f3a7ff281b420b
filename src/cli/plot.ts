/**
 * `nemotron plot OUT`: redraws OUT/report.html and OUT/loss.svg from the log a training run keeps
 * in OUT (OUT/log.jsonl) — after a crash, or to see a run another process is writing.
 */
import { join } from 'node:path';
import { LOSS_SVG_FILE, redrawReport, REPORT_FILE } from '../train/report';
import { UsageError, type ParsedArgs } from './args';

export async function runPlot(args: ParsedArgs): Promise<void> {
  const outDir = args.positional[0];
  if (!outDir || args.positional.length > 1) throw new UsageError('plot takes one folder: nemotron plot OUT (a --out folder of nemotron train)');
  const history = await redrawReport(outDir);
  console.error(`${history.steps.length} updates, ${history.evals.length} evaluations: wrote ${join(outDir, REPORT_FILE)} and ${join(outDir, LOSS_SVG_FILE)}`);
}
