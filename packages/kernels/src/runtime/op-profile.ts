/**
 * Wall time per op on the CPU backends, on when `NEMOTRON_PROFILE_OPS=1` (for finding where a
 * training step's time goes; off, each hook costs one boolean test). Three kinds of rows:
 *
 * - `<phase> native <symbol>`: each call into the native library (library.ts wraps the symbols),
 *   under the phase ({@link profilePhase}: forward, backward, clip, optimizer …) it ran in;
 * - `backward <op>`: each autograd rule, its self time being what ran outside native kernels
 *   (TypeScript reference fallbacks, copies, allocation, zero-fills, accumulation);
 * - `forward <op>`: the time outside native kernels between one recorded op and the next, named by
 *   the op that ends the interval (the forward's TypeScript work, fallbacks included).
 *
 * Spans nest; a row's total includes nested spans, its self time does not. `cpu ms` is the process's
 * CPU time (all threads) over a row's spans, nested ones included: on a machine shared with other
 * work it moves less than wall time, so it compares builds better (a spinning thread counts too).
 */

export const opProfiling = process.env.NEMOTRON_PROFILE_OPS === '1';

export interface OpProfileRow {
  name: string;
  calls: number;
  totalMs: number;
  selfMs: number;
  cpuMs: number;
}

const rows = new Map<string, OpProfileRow>();
const stack: { start: number; child: number }[] = [];
let phase = 'other';
/** Start of the current forward interval and the span time nested in it since. */
let markAt = 0;
let markChild = 0;

function add(name: string, totalMs: number, selfMs: number, cpuMs = 0): void {
  let r = rows.get(name);
  if (!r) rows.set(name, (r = { name, calls: 0, totalMs: 0, selfMs: 0, cpuMs: 0 }));
  r.calls++;
  r.totalMs += totalMs;
  r.selfMs += selfMs;
  r.cpuMs += cpuMs;
}

/** Process CPU time (user + system, all threads) in ms. */
function cpuNow(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** Runs `fn` as a timed span named `name` (only `fn()` when profiling is off). */
export function profileSpan<T>(name: string, fn: () => T): T {
  if (!opProfiling) return fn();
  const frame = { start: performance.now(), child: 0 };
  const cpu = cpuNow();
  stack.push(frame);
  try {
    return fn();
  } finally {
    stack.pop();
    const dt = performance.now() - frame.start;
    add(name, dt, dt - frame.child, cpuNow() - cpu);
    const parent = stack[stack.length - 1];
    if (parent) parent.child += dt;
    else markChild += dt;
  }
}

/** Runs `fn` as the phase `name`: native rows inside it are keyed by it. */
export function profilePhase<T>(name: string, fn: () => T): T {
  if (!opProfiling) return fn();
  const prev = phase;
  phase = name;
  const start = performance.now();
  const cpu = cpuNow();
  markAt = start;
  markChild = 0;
  try {
    return fn();
  } finally {
    add(`phase ${name}`, performance.now() - start, 0, cpuNow() - cpu);
    phase = prev;
  }
}

/** The row name of a native call made now. */
export function nativeRowName(symbol: string): string {
  return `${phase} native ${symbol}`;
}

/** Called by autograd's `record`: charges the forward time since the previous op to `op`. */
export function markForwardOp(op: string): void {
  if (!opProfiling || stack.length > 0) return;
  const now = performance.now();
  add(`forward ${op}`, now - markAt, now - markAt - markChild);
  markAt = now;
  markChild = 0;
}

export function resetOpProfile(): void {
  rows.clear();
}

/** The rows so far, largest self time first (phases last, by total). */
export function opProfileRows(): OpProfileRow[] {
  return [...rows.values()].sort((a, b) => b.selfMs - a.selfMs || b.totalMs - a.totalMs);
}

/** A plain-text table of {@link opProfileRows}, times divided by `steps`. */
export function formatOpProfile(steps = 1): string {
  const all = opProfileRows();
  const phases = all.filter((r) => r.name.startsWith('phase '));
  const ops = all.filter((r) => !r.name.startsWith('phase ') && r.totalMs / steps >= 0.5);
  const ms = (v: number) => (v / steps).toFixed(1).padStart(10);
  const line = (r: OpProfileRow, self: boolean) =>
    `${r.name.padEnd(48)} ${String(Math.round(r.calls / steps)).padStart(7)} ${ms(r.totalMs)} ${self ? ms(r.selfMs) : ''.padStart(10)} ${ms(r.cpuMs)}`;
  return [
    `${'op (per step)'.padEnd(48)} ${'calls'.padStart(7)} ${'total ms'.padStart(10)} ${'self ms'.padStart(10)} ${'cpu ms'.padStart(10)}`,
    ...ops.map((r) => line(r, true)),
    ...phases.map((r) => line(r, false)),
  ].join('\n');
}
