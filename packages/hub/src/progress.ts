/**
 * Download progress: the events library users receive, and a two-line terminal bar (current file;
 * all files) with bytes, speed and time left, drawn on stderr when it is a TTY.
 */

/** One progress event: `bytes` of `total` of `file` are on disk; `overall*` counts every file of the call. */
export interface DownloadProgress {
  readonly file: string;
  readonly bytes: number;
  readonly total: number;
  readonly overallBytes: number;
  readonly overallTotal: number;
}

/** The part of a TTY write stream the bar uses. */
export interface ProgressStream {
  write(text: string): unknown;
  readonly columns?: number;
}

/** Redraws at most every this many milliseconds. */
const REDRAW_MS = 100;

/** The terminal bar; fed {@link DownloadProgress} events. */
export class ProgressBar {
  private drawn = false;
  private lastDraw = -Infinity;
  private readonly started: number;
  private speed = 0;
  private lastSample: { at: number; bytes: number } | null = null;
  private pending: DownloadProgress | null = null;

  constructor(
    private readonly stream: ProgressStream = process.stderr,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.started = now();
  }

  /** Records an event; redraws when the last draw is old enough, or the file is done. */
  update(event: DownloadProgress): void {
    const at = this.now();
    if (this.lastSample && at > this.lastSample.at) {
      const instant = ((event.overallBytes - this.lastSample.bytes) / (at - this.lastSample.at)) * 1000;
      // Smoothed over about a second, so the ETA does not jump with every chunk.
      const weight = Math.min(1, (at - this.lastSample.at) / 1000);
      this.speed = this.speed === 0 ? instant : this.speed + weight * (instant - this.speed);
    }
    this.lastSample = { at, bytes: event.overallBytes };
    this.pending = event;
    if (at - this.lastDraw >= REDRAW_MS || event.bytes === event.total) this.draw(at);
  }

  /** Draws the final state and moves below the bar. */
  finish(): void {
    if (this.pending) this.draw(this.now());
    if (this.drawn) this.stream.write('\n');
    this.drawn = false;
  }

  private draw(at: number): void {
    const e = this.pending;
    if (!e) return;
    this.lastDraw = at;
    const width = Math.max(40, this.stream.columns ?? 80);
    const elapsed = (at - this.started) / 1000;
    const speed = this.speed > 0 ? this.speed : elapsed > 0 ? e.overallBytes / elapsed : 0;
    const left = speed > 0 ? (e.overallTotal - e.overallBytes) / speed : NaN;
    const fileLine = line(e.file, e.bytes, e.total, '', width);
    const totalLine = line('total', e.overallBytes, e.overallTotal, `  ${formatBytes(speed)}/s  ETA ${formatDuration(left)}`, width);
    this.stream.write(`${this.drawn ? '\x1b[1A\r' : ''}\x1b[2K${fileLine}\n\x1b[2K${totalLine}`);
    this.drawn = true;
  }
}

function line(label: string, bytes: number, total: number, tail: string, width: number): string {
  const fraction = total > 0 ? Math.min(1, bytes / total) : 1;
  const numbers = ` ${String(Math.floor(fraction * 100)).padStart(3)}% ${formatBytes(bytes)}/${formatBytes(total)}${tail}`;
  const labelWidth = Math.min(32, Math.max(8, width - numbers.length - 22));
  const name = label.length > labelWidth ? `…${label.slice(label.length - labelWidth + 1)}` : label.padEnd(labelWidth);
  const barWidth = Math.max(10, width - labelWidth - numbers.length - 3);
  const filled = Math.round(fraction * barWidth);
  return `${name} ${'█'.repeat(filled)}${'░'.repeat(barWidth - filled)}${numbers}`.slice(0, width - 1);
}

/** 1.23 GB style, decimal units as the Hub shows sizes. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${unit === 0 ? value.toFixed(0) : value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

/** h:mm:ss or m:ss; "--:--" when unknown. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}
