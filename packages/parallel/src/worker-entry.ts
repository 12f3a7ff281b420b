/**
 * The module every worker runs: opens its device on `init`, runs the requested service, answers
 * requests one at a time in arrival order (a request may send partial results before its answer), and sends heartbeats so the host can tell a busy worker
 * from a hung one.
 */
import { deviceLabel, initDevice, nativeKernels, type Device } from '@nemotron-ts/kernels';
import { parseWorkerDevice } from './device-spec';
import { HEARTBEAT_INTERVAL_MS, type HostToWorker, type InitArgs, type OpenedDevice, type WorkerToHost } from './protocol';
import type { WorkerService } from './service';
import { reportProgress, setProgressCounter } from './progress';
import { SERVICES } from './services';
import { decodeMessage, encodeMessage, type WireMessage } from './wire';

declare const self: Worker;

/** The worker's device, referenced for the worker's whole life (Dawn must not be collected while it runs). */
let device: Device | null = null;
let service: WorkerService | null = null;
let queue: Promise<void> = Promise.resolve();

function post(msg: WorkerToHost): void {
  const { message, transfer } = encodeMessage(msg);
  self.postMessage(message, transfer);
}

async function init(args: InitArgs): Promise<unknown> {
  if (service) throw new Error('init: the worker was already initialised');
  const factory = SERVICES[args.service];
  if (!factory) throw new Error(`init: no service '${args.service}' (known: ${Object.keys(SERVICES).join(', ')})`);
  const spec = parseWorkerDevice(args.device);
  device = await initDevice(spec.options);
  // This worker's share of the cores (the library is shared by the process; the count is per thread).
  const native = device.kind === 'cpu' && device.name === 'cpu:native' ? nativeKernels() : null;
  if (native && spec.threads !== undefined) native.setThreads(spec.threads);
  service = await factory({ device, rank: args.rank, options: args.options });
  const opened: OpenedDevice = { device: deviceLabel(device), threads: native ? native.threads : null };
  return opened;
}

async function handle(msg: Extract<HostToWorker, { t: 'req' }>): Promise<void> {
  reportProgress();
  try {
    const value =
      msg.method === 'init'
        ? await init(msg.args as InitArgs)
        : msg.method === 'shutdown'
          ? shutdown()
          : await requireService().handle(msg.method, msg.args, (value) => post({ t: 'part', id: msg.id, value }));
    post({ t: 'res', id: msg.id, ok: true, value: value ?? null });
  } catch (e) {
    post({ t: 'res', id: msg.id, ok: false, error: e instanceof Error ? e.message : String(e) });
  }
}

/** Frees the service's tensors and stops the heartbeat; the host terminates the worker next. */
function shutdown(): null {
  service?.dispose?.();
  service = null;
  clearInterval(heartbeat);
  return null;
}

function requireService(): WorkerService {
  if (!service) throw new Error('the worker has no service yet (init first)');
  return service;
}

self.onmessage = (event: MessageEvent) => {
  const wire = event.data as WireMessage;
  if (wire.shared) setProgressCounter(wire.shared);
  const msg = decodeMessage(wire) as HostToWorker;
  queue = queue.then(() => handle(msg));
};

const heartbeat = setInterval(() => post({ t: 'hb' }), HEARTBEAT_INTERVAL_MS);
post({ t: 'ready' });
