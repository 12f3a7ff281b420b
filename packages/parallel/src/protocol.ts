/** Messages between {@link WorkerGroup} and a worker (before MessagePack encoding). */
export type HostToWorker = { readonly t: 'req'; readonly id: number; readonly method: string; readonly args: unknown };

export type WorkerToHost =
  | { readonly t: 'ready' }
  | { readonly t: 'hb' }
  /** A partial result of request `id`, sent while it runs (e.g. a gradient bucket finished during a backward). */
  | { readonly t: 'part'; readonly id: number; readonly value: unknown }
  | { readonly t: 'res'; readonly id: number; readonly ok: true; readonly value: unknown }
  | { readonly t: 'res'; readonly id: number; readonly ok: false; readonly error: string };

/** Milliseconds between a worker's heartbeats. */
export const HEARTBEAT_INTERVAL_MS = 200;

/** What a worker's first request (`init`) carries. */
/** What a worker opened (its `init` answer): the device label (`cpu`, `cpu:native`, `webgpu:vulkan`) and native threads. */
export interface OpenedDevice {
  readonly device: string;
  /** The native backend's threads in this worker; null on other devices. */
  readonly threads: number | null;
}

export interface InitArgs {
  /** The service the worker runs (see services.ts). */
  readonly service: string;
  /** Device spec (device-spec.ts). */
  readonly device: string;
  readonly rank: number;
  /** Service-specific settings. */
  readonly options: unknown;
}
