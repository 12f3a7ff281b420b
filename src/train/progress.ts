/**
 * Training progress for people: on a terminal, one line redrawn in place on stderr — a bar,
 * step/total, loss, learning rate, tokens/s and ETA; elsewhere (a pipe, a CI log), one plain line
 * per update. stdout is left to the JSON lines.
 */
import type { StepLog } from './trainer';

export interface ProgressOptions {
  totalSteps: number;
  /** Where it draws (default process.stderr). */
  stream?: NodeJS.WriteStream;
  /** Redraw in place (default: the stream is a TTY). */
  tty?: boolean;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (v: number) => String(v).padStart(2, '0');
  return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

/** The progress line of an update; `eta` in seconds. The bar shrinks (or goes) to fit `columns`; the numbers stay. */
export function progressLine(log: StepLog, totalSteps: number, eta: number, columns = 120): string {
  const text = `${log.step}/${totalSteps}  loss ${log.loss.toFixed(4)}  lr ${log.lr.toExponential(2)}  ${log.tokens_per_s.toFixed(0)} tok/s  ETA ${formatDuration(eta)}`;
  const barWidth = Math.min(24, columns - text.length - 2);
  if (barWidth < 5) return text;
  const filled = Math.round(Math.min(1, log.step / totalSteps) * barWidth);
  return `${'█'.repeat(filled)}${'░'.repeat(barWidth - filled)} ${text}`;
}

export class TrainingProgress {
  private readonly stream: NodeJS.WriteStream;
  private readonly tty: boolean;
  private readonly started = performance.now();
  private firstStep: number | null = null;
  private drawn = false;

  constructor(private readonly options: ProgressOptions) {
    this.stream = options.stream ?? process.stderr;
    this.tty = options.tty ?? this.stream.isTTY === true;
  }

  step(log: StepLog): void {
    this.firstStep ??= log.step - 1;
    const done = log.step - this.firstStep;
    const seconds = (performance.now() - this.started) / 1000;
    const eta = done > 0 ? (seconds / done) * (this.options.totalSteps - log.step) : NaN;
    if (this.tty) {
      // A pseudo-terminal may report 0 columns.
      this.stream.write(`\r\x1b[2K${progressLine(log, this.options.totalSteps, eta, this.stream.columns || 120)}`);
      this.drawn = true;
    } else {
      this.stream.write(
        `step ${log.step}/${this.options.totalSteps}  loss ${log.loss.toFixed(4)}  lr ${log.lr.toExponential(2)}  grad norm ${log.grad_norm.toFixed(3)}  ${log.tokens_per_s.toFixed(1)} tokens/s  ETA ${formatDuration(eta)}\n`,
      );
    }
  }

  /** Prints a message on its own line (above the bar on a terminal). */
  message(text: string): void {
    if (this.tty && this.drawn) this.stream.write('\r\x1b[2K');
    this.stream.write(`${text}\n`);
    this.drawn = false;
  }

  /** Ends the bar's line. */
  end(): void {
    if (this.tty && this.drawn) this.stream.write('\n');
    this.drawn = false;
  }
}
