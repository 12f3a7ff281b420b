/**
 * Recorded dispatch sequences: the kernels of a step that repeats with identical parameters (a
 * decode step), captured once and replayed without running any op code again.
 *
 * On llvmpipe an op costs tens of µs of JavaScript (checks, allocation, parameter packing, bind
 * group lookup) on top of the driver's cost of the dispatch itself; a replay only re-encodes
 * `setPipeline`/`setBindGroup`/`dispatchWorkgroups` from prepared bind groups and a parameter
 * buffer written once. Whatever changes between steps must therefore live on the device (token ids,
 * positions, counters), read and written by the kernels themselves.
 *
 * While recording, the device records dispatches instead of encoding them, refuses uploads,
 * readbacks and copies (they would run once, at record time, not on every replay), and keeps every
 * storage freed during the recording out of the pool: the recording owns those buffers, so no later
 * tensor can be placed in memory a replay writes.
 */
import type { KernelBinding } from './batch';
import type { CachedPipeline } from './pipelines';
import type { Storage } from './storage';

/** Thrown when a step does something a recording cannot replay (an upload, a readback, a copy). */
export class RecordingRefusedError extends Error {
  override name = 'RecordingRefusedError';
}

/** One dispatch as recorded. */
export interface RecordedDispatch {
  readonly pipeline: CachedPipeline;
  readonly params: Uint8Array | null;
  readonly buffers: readonly KernelBinding[];
  readonly workgroups: readonly [number, number, number];
  readonly label: string;
}

/** What a device collects while recording. */
export class DispatchRecorder {
  readonly dispatches: RecordedDispatch[] = [];
  /** Storages allocated while recording (each must be freed again before the recording ends). */
  readonly allocated = new Set<Storage>();
  /** Storages released while recording: kept out of the pool, owned by the recording. */
  readonly released: Storage[] = [];

  allocate(storage: Storage): void {
    this.allocated.add(storage);
  }

  release(storage: Storage): void {
    this.allocated.delete(storage);
    this.released.push(storage);
  }

  /** The storages allocated while recording and still alive (a recorded step must not keep any). */
  leaked(): Storage[] {
    return [...this.allocated].filter((s) => s.alive);
  }
}

/** A dispatch ready to encode: bind group built, parameters at a dynamic offset of the recording's uniform buffer. */
export interface PreparedDispatch {
  readonly pipeline: GPUComputePipeline;
  readonly bindGroup: GPUBindGroup;
  /** Dynamic offset of the parameters, or null for a kernel without parameters. */
  readonly paramOffset: number | null;
  readonly workgroups: readonly [number, number, number];
  readonly label: string;
}

/**
 * Builds the bind groups of recorded dispatches against one uniform buffer holding every
 * dispatch's parameters (each at a multiple of `align`). Returns the buffer and the prepared list.
 */
export function prepareDispatches(
  device: GPUDevice,
  recorded: readonly RecordedDispatch[],
  align: number,
): { uniforms: GPUBuffer | null; prepared: PreparedDispatch[] } {
  let bytes = 0;
  const offsets = recorded.map((d) => {
    if (!d.params) return null;
    const at = bytes;
    bytes += Math.ceil(d.params.byteLength / align) * align;
    return at;
  });
  const uniforms = bytes > 0 ? device.createBuffer({ size: bytes, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: 'recorded-params' }) : null;
  if (uniforms) {
    const host = new Uint8Array(bytes);
    recorded.forEach((d, i) => d.params && host.set(d.params, offsets[i]!));
    device.queue.writeBuffer(uniforms, 0, host);
  }
  const prepared = recorded.map((d, i): PreparedDispatch => {
    const entries: GPUBindGroupEntry[] = [];
    if (d.params) entries.push({ binding: 0, resource: { buffer: uniforms!, offset: 0, size: d.params.byteLength } });
    d.buffers.forEach((b, j) => entries.push({ binding: j + 1, resource: 'texture' in b ? b.texture : { buffer: b.buffer, offset: b.offset, size: b.size } }));
    return {
      pipeline: d.pipeline.pipeline,
      bindGroup: device.createBindGroup({ layout: d.pipeline.layout, entries, label: d.label }),
      paramOffset: offsets[i]!,
      workgroups: d.workgroups,
      label: d.label,
    };
  });
  return { uniforms, prepared };
}
