/**
 * A group of Bun Workers, one device each, driven by request/response calls.
 *
 * - Ready handshake: Bun drops messages posted to a worker whose module is still loading, so
 *   nothing is posted before the worker says "ready".
 * - Failure: a worker that throws out of its event loop, exits (process.exit, terminate) or stops
 *   sending heartbeats fails the whole group: every pending call rejects with an error naming the
 *   worker and the step it was running, and every worker is terminated (no orphans). A request
 *   that throws inside its handler rejects just that call.
 * - Each call may carry a timeout; `close()` terminates everything.
 */
import { decodeMessage, encodeMessage, tensorBytes, type WireMessage } from './wire';
import { HEARTBEAT_INTERVAL_MS, type HostToWorker, type InitArgs, type OpenedDevice, type WorkerToHost } from './protocol';
import { resolveDevices } from './device-spec';

export interface WorkerGroupOptions {
  /** Number of workers. */
  readonly size: number;
  /** Service every worker runs (services.ts). */
  readonly service: string;
  /** Per-worker device specs (one repeats); default `cpu`. */
  readonly devices?: readonly string[];
  /** Service options per rank. */
  readonly options?: (rank: number) => unknown;
  /** A worker silent this long is declared hung (default 60 s; a CPU step that blocks longer needs more). */
  readonly heartbeatTimeoutMs?: number;
  /** How long a worker may take to load and open its device (default 120 s). */
  readonly startTimeoutMs?: number;
  /** Names workers in errors, e.g. rank → "stage 1". */
  readonly describe?: (rank: number) => string;
}

export interface CallOptions {
  /** What the call is doing, for errors ("forward microbatch 2"). */
  readonly step?: string;
  /** Reject (and fail the group) when no answer comes within this many ms. */
  readonly timeoutMs?: number;
  /** Receives the partial results the worker sends while the request runs, in order, before it settles. */
  readonly onPart?: (value: unknown) => void;
}

/** The group failed: a worker crashed, hung or timed out. */
export class WorkerFailure extends Error {
  constructor(
    message: string,
    readonly rank: number,
    readonly step: string | null,
  ) {
    super(message);
    this.name = 'WorkerFailure';
  }
}

interface Pending {
  readonly resolve: (v: unknown) => void;
  readonly reject: (e: Error) => void;
  readonly step: string;
  readonly timer: ReturnType<typeof setTimeout> | null;
  readonly onPart?: (value: unknown) => void;
}

interface Slot {
  readonly worker: Worker;
  readonly pending: Map<number, Pending>;
  lastSeen: number;
  closed: boolean;
  /** Bumped by the worker during long synchronous work (progress.ts). */
  readonly progress: Int32Array;
  lastProgress: number;
}

const WORKER_URL = new URL('./worker-entry.ts', import.meta.url).href;

export class WorkerGroup {
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private failure: WorkerFailure | null = null;
  private closed = false;
  private watchdog: ReturnType<typeof setInterval> | null = null;
  private lastTick = Date.now();
  /** Settles once every worker has been terminated (after {@link close}). */
  private terminated: Promise<void> = Promise.resolve();
  /** Tensor bytes posted to workers / received from them. */
  bytesSent = 0;
  bytesReceived = 0;

  private constructor(
    readonly size: number,
    /** Each worker's device spec (native shares resolved to `native:N`). */
    readonly devices: readonly string[],
    private readonly heartbeatTimeoutMs: number,
    private readonly describeRank: (rank: number) => string,
  ) {}

  /** What each worker opened: its device label and native threads. */
  opened: readonly OpenedDevice[] = [];

  /** Starts `size` workers, waits for each one's ready message, then initialises its service. */
  static async start(options: WorkerGroupOptions): Promise<WorkerGroup> {
    const { size, service } = options;
    if (!Number.isInteger(size) || size < 1) throw new Error(`WorkerGroup: size must be a positive integer, got ${size}`);
    const devices = resolveDevices(options.devices, size, 'cpu');
    const group = new WorkerGroup(size, devices, options.heartbeatTimeoutMs ?? 60_000, options.describe ?? ((r) => `worker ${r}`));
    const startTimeout = options.startTimeoutMs ?? 120_000;
    try {
      await Promise.all(Array.from({ length: size }, (_, rank) => group.spawn(rank, startTimeout)));
      group.startWatchdog();
      group.opened = await Promise.all(
        Array.from({ length: size }, (_, rank) => {
          const init: InitArgs = { service, device: devices[rank]!, rank, options: options.options?.(rank) ?? null };
          return group.call<OpenedDevice>(rank, 'init', init, { step: `init on ${devices[rank]}`, timeoutMs: startTimeout });
        }),
      );
    } catch (e) {
      group.close();
      throw e;
    }
    return group;
  }

  private spawn(rank: number, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const worker = new Worker(WORKER_URL);
      const slot: Slot = {
        worker,
        pending: new Map(),
        lastSeen: Date.now(),
        closed: false,
        progress: new Int32Array(new SharedArrayBuffer(4)),
        lastProgress: 0,
      };
      this.slots[rank] = slot;
      let ready = false;
      const timer = setTimeout(() => {
        if (!ready) reject(this.fail(rank, `${this.describeRank(rank)} did not start within ${timeoutMs} ms`));
      }, timeoutMs);
      worker.addEventListener('message', (event: MessageEvent) => {
        slot.lastSeen = Date.now();
        const wire = event.data as WireMessage;
        this.bytesReceived += tensorBytes(wire);
        const msg = decodeMessage(wire) as WorkerToHost;
        // A heartbeat also proves the module loaded (should the ready message itself be lost).
        if ((msg.t === 'ready' || msg.t === 'hb') && !ready) {
          ready = true;
          clearTimeout(timer);
          resolve();
        }
        if (msg.t === 'res') this.settle(slot, msg);
        else if (msg.t === 'part') this.deliverPart(rank, slot, msg);
      });
      worker.addEventListener('error', (event: Event) => {
        const message = (event as ErrorEvent).message || 'an uncaught error';
        const err = this.fail(rank, `${this.describeRank(rank)} crashed: ${message}`);
        if (!ready) reject(err);
      });
      worker.addEventListener('close', (event: Event) => {
        slot.closed = true;
        clearTimeout(timer);
        if (this.closed) return;
        const code = (event as CloseEvent).code;
        const err = this.fail(rank, `${this.describeRank(rank)} exited (code ${code})`);
        if (!ready) reject(err);
      });
    });
  }

  private settle(slot: Slot, msg: Extract<WorkerToHost, { t: 'res' }>): void {
    const p = slot.pending.get(msg.id);
    if (!p) return;
    slot.pending.delete(msg.id);
    if (p.timer) clearTimeout(p.timer);
    if (msg.ok) p.resolve(msg.value);
    else p.reject(new Error(msg.error));
  }

  private deliverPart(rank: number, slot: Slot, msg: Extract<WorkerToHost, { t: 'part' }>): void {
    const p = slot.pending.get(msg.id);
    if (!p?.onPart) return;
    try {
      p.onPart(msg.value);
    } catch (e) {
      // A host-side error in the handler fails the group: the worker would wait for its outcome.
      this.fail(rank, `handling a partial result of ${this.describeRank(rank)} failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  private startWatchdog(): void {
    this.lastTick = Date.now();
    this.watchdog = setInterval(() => {
      const now = Date.now();
      // When this thread itself was blocked, heartbeats are still queued: do not judge this tick.
      const blocked = now - this.lastTick > Math.max(4 * HEARTBEAT_INTERVAL_MS, this.heartbeatTimeoutMs / 4);
      this.lastTick = now;
      const silent: number[] = [];
      this.slots.forEach((slot, rank) => {
        const progress = Atomics.load(slot.progress, 0);
        if (progress !== slot.lastProgress) {
          slot.lastProgress = progress;
          slot.lastSeen = now;
        }
        if (blocked) slot.lastSeen = now;
        else if (!slot.closed && now - slot.lastSeen > this.heartbeatTimeoutMs) silent.push(rank);
      });
      if (silent.length === 0) return;
      // Blame a worker that is running a request, the longest silent first: a worker spinning in
      // a step can delay the other workers' heartbeats too (measured under Bun on a loaded host).
      const busy = silent.filter((r) => this.slots[r]!.pending.size > 0);
      const worst = (busy.length ? busy : silent).reduce((a, b) => (this.slots[b]!.lastSeen < this.slots[a]!.lastSeen ? b : a));
      this.fail(worst, `${this.describeRank(worst)} stopped responding (no heartbeat for ${now - this.slots[worst]!.lastSeen} ms)`);
    }, HEARTBEAT_INTERVAL_MS);
    (this.watchdog as { unref?: () => void }).unref?.();
  }

  /**
   * Fails the group: the error names the worker and the step it was running; every pending call
   * rejects, every worker is terminated. Returns the (first) failure.
   */
  private fail(rank: number, what: string): WorkerFailure {
    if (this.failure) return this.failure;
    const slot = this.slots[rank];
    const own = slot ? ([...slot.pending.values()][0]?.step ?? null) : null;
    // A worker between requests failed: name what the group was doing (another worker's step).
    const other = own ? -1 : this.slots.findIndex((s) => s && s.pending.size > 0);
    const running = own ?? (other >= 0 ? [...this.slots[other]!.pending.values()][0]!.step : null);
    const during = own ? ` during '${own}'` : running ? ` during '${running}' (on ${this.describeRank(other)})` : '';
    this.failure = new WorkerFailure(`${what}${during}`, rank, running);
    for (const s of this.slots) {
      if (!s) continue;
      for (const p of s.pending.values()) {
        if (p.timer) clearTimeout(p.timer);
        p.reject(this.failure);
      }
      s.pending.clear();
    }
    this.close();
    return this.failure;
  }

  /** Calls `method` on worker `rank`; requests to one worker run one at a time, in order. */
  call<T = unknown>(rank: number, method: string, args: unknown = null, options: CallOptions = {}): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.closed) return Promise.reject(new Error('WorkerGroup: the group was closed'));
    const slot = this.slots[rank];
    if (!slot) return Promise.reject(new Error(`WorkerGroup: no worker ${rank} (the group has ${this.size})`));
    const id = this.nextId++;
    const step = options.step ?? method;
    return new Promise<T>((resolve, reject) => {
      const timer =
        options.timeoutMs === undefined
          ? null
          : setTimeout(() => this.fail(rank, `${this.describeRank(rank)} timed out after ${options.timeoutMs} ms`), options.timeoutMs);
      slot.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, step, timer, onPart: options.onPart });
      const msg: HostToWorker = { t: 'req', id, method, args };
      try {
        const { message, transfer } = encodeMessage(msg);
        if (method === 'init') message.shared = slot.progress.buffer as SharedArrayBuffer;
        this.bytesSent += tensorBytes(message);
        slot.worker.postMessage(message, transfer);
      } catch (e) {
        slot.pending.delete(id);
        if (timer) clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
  }

  /** Calls `method` on every worker with per-rank arguments. */
  callAll<T = unknown>(method: string, args: (rank: number) => unknown = () => null, options: CallOptions = {}): Promise<T[]> {
    return Promise.all(this.slots.map((_, rank) => this.call<T>(rank, method, args(rank), options)));
  }

  /**
   * Terminates worker `rank` from outside, as a crash would (fault drills and tests): the group
   * fails as for any worker that exits.
   */
  kill(rank: number): void {
    this.slots[rank]?.worker.terminate();
  }

  /** The failure that ended the group, if any. */
  get failed(): WorkerFailure | null {
    return this.failure;
  }

  /**
   * The end of a run: each worker finishes its queued requests and frees its tensors (and stops
   * its heartbeat), then the workers are terminated one after another (see {@link close}).
   */
  async shutdown(timeoutMs = 10_000): Promise<void> {
    if (this.closed) return this.terminated;
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
    await this.callAll('shutdown', () => null, { step: 'shutdown', timeoutMs }).catch(() => undefined);
    this.close();
    await this.terminated;
  }

  /** Settles when every worker of a closed group has exited (starting new workers meanwhile has hung one under `bun test`). */
  whenTerminated(): Promise<void> {
    return this.terminated;
  }

  /** Terminates every worker (idempotent). Pending calls of a closed group reject. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.watchdog) clearInterval(this.watchdog);
    for (const slot of this.slots) {
      if (!slot) continue;
      for (const p of slot.pending.values()) {
        if (p.timer) clearTimeout(p.timer);
        p.reject(this.failure ?? new Error('WorkerGroup: the group was closed'));
      }
      slot.pending.clear();
    }
    this.terminateAll();
  }

  /**
   * Terminates the workers one at a time, each after the previous one closed: terminating several
   * workers that hold Dawn devices at once can segfault Bun (measured: 2 GL devices, 2 runs of 2).
   * The workers are unref'd first, so a process that ends meanwhile is not held up by them.
   */
  private terminateAll(): void {
    const live = this.slots.filter((s) => s && !s.closed);
    for (const s of live) (s.worker as Worker & { unref?: () => void }).unref?.();
    const gap = this.devices.some((d) => d !== 'cpu') ? 300 : 0;
    const sleep = (ms: number) => new Promise<void>((r) => (setTimeout(r, ms) as { unref?: () => void }).unref?.());
    this.terminated = (async () => {
      for (const s of live) {
        if (s.closed) continue;
        const closed = new Promise<void>((r) => s.worker.addEventListener('close', () => r()));
        s.worker.terminate();
        await Promise.race([closed, sleep(2000)]);
        if (gap) await sleep(gap);
      }
    })();
  }
}
