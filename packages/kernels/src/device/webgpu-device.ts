/**
 * The WebGPU backend: a Dawn device plus the runtime around it (buffer pool, batched encoder,
 * pipeline cache) and the error plumbing that turns Dawn's asynchronous errors into thrown ones.
 */
import { bytesPerElement, type DType } from '../dtype';
import { CommandBatch, type KernelBinding } from '../runtime/batch';
import { BindingTooLargeError, type BoundRange } from '../runtime/bindings';
import { Params } from '../runtime/params';
import { PipelineCache } from '../runtime/pipelines';
import { KernelProfiler, type KernelTime } from '../runtime/profiler';
import { BufferPool, type MemoryStats } from '../runtime/pool';
import { DispatchRecorder, RecordingRefusedError, prepareDispatches, type PreparedDispatch } from '../runtime/recording';
import { Storage, type StorageOwner } from '../runtime/storage';
import type { DawnHandles } from './dawn';
import { isSoftwareAdapter } from './dawn';
import { kernelTuningFor, type KernelTuning, type KernelTuningName } from './kernel-tuning';
import { DeviceLostError, KernelValidationError, OutOfMemoryError } from './errors';

export interface GpuLimits {
  maxStorageBufferBindingSize: number;
  maxBufferSize: number;
  maxComputeWorkgroupsPerDimension: number;
  maxComputeInvocationsPerWorkgroup: number;
  maxComputeWorkgroupStorageSize: number;
  maxStorageBuffersPerShaderStage: number;
  minStorageBufferOffsetAlignment: number;
  minUniformBufferOffsetAlignment: number;
  maxUniformBufferBindingSize: number;
}

/** A kernel launch as op code describes it. */
export interface KernelLaunch {
  /** Kernel name, e.g. `matmul`. */
  name: string;
  /** Full WGSL source; binding 0 is the `Params` uniform when `params` is given, storage bindings follow. */
  source: string;
  params?: Params;
  /** Storage buffer ranges and sampled textures, in binding order. */
  bindings: readonly KernelBinding[];
  workgroups: readonly [number, number, number];
  /** Shapes / dtypes involved, for error messages. */
  detail?: string;
}

const FILL_SOURCE = `
struct Params { count: u32, value: u32, _p0: u32, _p1: u32, }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i < P.count) { out[i] = P.value; }
}`;

export class WebGpuDevice implements StorageOwner {
  readonly kind = 'webgpu' as const;
  readonly gpu: GPUDevice;
  readonly limits: GpuLimits;
  readonly batch: CommandBatch;
  readonly pipelines: PipelineCache;
  private readonly pool: BufferPool<GPUBuffer>;
  private errors: Error[] = [];
  private lostReason: string | null = null;
  private recorder: DispatchRecorder | null = null;
  /** Usage of every pooled buffer (uniform too on software devices, see the constructor). */
  private readonly bufferUsage: GPUBufferUsageFlags;
  /** When set, fresh allocations are filled with all-ones bits (NaN as f32) so tests catch unwritten outputs. */
  poisonAllocations = false;

  /** The kernel paths and launch shapes this device runs (see kernel-tuning.ts for why). */
  readonly tuning: KernelTuning;

  constructor(readonly handles: DawnHandles) {
    this.gpu = handles.device;
    this.tuning = kernelTuningFor(handles.adapter.info);
    const l = this.gpu.limits;
    this.limits = {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      // Kernels work with the portable 256-byte alignment even where the adapter allows less.
      minStorageBufferOffsetAlignment: Math.max(256, l.minStorageBufferOffsetAlignment),
      minUniformBufferOffsetAlignment: Math.max(256, l.minUniformBufferOffsetAlignment),
      maxUniformBufferBindingSize: l.maxUniformBufferBindingSize,
    };
    // Kernels may bind small tensors (a decode step's activations) as uniforms where the tuning says so.
    this.bufferUsage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST | (this.tuning.uniformOperands ? GPUBufferUsage.UNIFORM : 0);
    const poolLimit = Number(process.env.NEMOTRON_POOL_LIMIT_BYTES ?? 4 * 1024 ** 3);
    this.pool = new BufferPool<GPUBuffer>(
      {
        create: (size) => this.createBuffer(size),
        destroy: (b) => {
          this.batch.invalidateBindGroups();
          b.destroy();
        },
      },
      this.limits.maxBufferSize,
      poolLimit,
    );
    this.batch = new CommandBatch(this.gpu, this.limits.minUniformBufferOffsetAlignment);
    this.pipelines = new PipelineCache(this.gpu, (m) => this.errors.push(new KernelValidationError(m)));
    this.gpu.addEventListener('uncapturederror', (ev) => {
      const error = (ev as GPUUncapturedErrorEvent).error;
      const where = `recent kernels: ${this.batch.recentLabels().join(' | ') || '(none)'}`;
      if (error instanceof GPUOutOfMemoryError) this.errors.push(new OutOfMemoryError(`GPU out of memory: ${error.message} (${where})`));
      else this.errors.push(new KernelValidationError(`WebGPU error: ${error.message} (${where})`));
    });
    void this.gpu.lost.then((info) => {
      this.lostReason = `${info.reason}: ${info.message}`;
    });
  }

  get name(): string {
    return this.handles.adapter.info.description || this.handles.adapter.info.device || 'webgpu';
  }

  /** The name of the tuning row in force (`software` or `hardware`). */
  get kernelTuning(): KernelTuningName {
    return this.tuning.name;
  }

  /** Whether the adapter itself is a software rasteriser (whatever the kernel tuning). */
  get isSoftwareAdapter(): boolean {
    return isSoftwareAdapter(this.handles.adapter.info);
  }

  describe(): string {
    const info = this.handles.adapter.info;
    return `${info.description || info.device} (${this.handles.backend}, ${this.handles.featureLevel}${this.isSoftwareAdapter ? ', software' : ''}${(this.kernelTuning === 'software') !== this.isSoftwareAdapter ? `, ${this.kernelTuning} kernels` : ''})`;
  }

  private createBuffer(size: number): GPUBuffer {
    this.checkAlive();
    return this.gpu.createBuffer({ size, usage: this.bufferUsage });
  }

  checkAlive(): void {
    if (this.lostReason !== null) throw new DeviceLostError(`the WebGPU device was lost (${this.lostReason})`);
  }

  /** Throws the first error Dawn reported since the last check, naming the kernels involved. */
  throwPendingErrors(): void {
    this.checkAlive();
    if (this.errors.length > 0) {
      // A shader that failed to build explains the "invalid pipeline" errors that follow it.
      const built = this.errors.findIndex((e) => e.message.includes('failed to build'));
      if (built > 0) this.errors.unshift(...this.errors.splice(built, 1));
      const [first, ...rest] = this.errors;
      this.errors = [];
      if (rest.length > 0) first!.message += `\n(+${rest.length} more errors)`;
      throw first!;
    }
  }

  allocate(dtype: DType, length: number): Storage {
    const bytes = Math.max(4, Math.ceil((length * bytesPerElement(dtype)) / 4) * 4);
    if (bytes > this.limits.maxBufferSize) {
      throw new OutOfMemoryError(
        `a ${dtype} tensor of ${length} elements needs ${bytes} bytes, above this device's maxBufferSize of ${this.limits.maxBufferSize}`,
      );
    }
    const buffer = this.pool.acquire(bytes);
    const storage = new Storage(this, dtype, length, buffer, null);
    this.recorder?.allocate(storage);
    if (this.poisonAllocations) this.fillWords(buffer, 0, buffer.size / 4, 0xffffffff);
    return storage;
  }

  freeStorage(storage: Storage): void {
    // A recording owns what is freed while it is made: its replays write that memory.
    if (this.recorder) this.recorder.release(storage);
    else this.pool.release(storage.gpu!);
  }

  /**
   * Records the kernels `fn` dispatches instead of running them (see runtime/recording.ts). `fn`
   * must not upload, read back or copy, and must free every tensor it creates. The result replays
   * them with {@link replay}; {@link releaseRecording} frees the buffers it owns.
   */
  record(fn: () => void): DeviceRecording {
    if (this.recorder) throw new Error('record: already recording (recordings do not nest)');
    this.checkAlive();
    const recorder = new DispatchRecorder();
    this.recorder = recorder;
    this.batch.recording = true;
    try {
      fn();
    } catch (e) {
      this.endRecording(recorder);
      throw e;
    } finally {
      this.recorder = null;
      this.batch.recording = false;
    }
    const leaked = recorder.leaked();
    if (leaked.length > 0) {
      this.endRecording(recorder);
      throw new Error(
        `record: the step kept ${leaked.length} tensor${leaked.length === 1 ? '' : 's'} it created alive (${leaked.map((s) => `${s.dtype}[${s.length}]`).join(', ')}); a recorded step must communicate through tensors created before it`,
      );
    }
    const { uniforms, prepared } = prepareDispatches(this.gpu, recorder.dispatches, this.limits.minUniformBufferOffsetAlignment);
    return { prepared, uniforms, owned: recorder.released };
  }

  /** Encodes a recording's dispatches after the work recorded so far. */
  replay(recording: DeviceRecording): void {
    this.checkAlive();
    if (this.recorder) throw new Error('replay: cannot replay while recording');
    this.batch.replay(recording.prepared);
  }

  /** Frees the buffers a recording owns (its replays must all have been encoded before). */
  releaseRecording(recording: DeviceRecording): void {
    this.endRecording({ released: recording.owned });
    if (recording.uniforms) {
      this.batch.flush();
      recording.uniforms.destroy();
    }
  }

  private endRecording(r: { released: readonly Storage[] }): void {
    for (const s of r.released) this.pool.release(s.gpu!);
  }

  memoryStats(): MemoryStats {
    return this.pool.memoryStats();
  }

  resetPeak(): void {
    this.pool.resetPeak();
  }

  /** Destroys pooled buffers no tensor uses. */
  trimPool(): void {
    this.pool.trim();
  }

  /** Fills `count` 32-bit words from `wordOffset` with `value`, in queue order. */
  fillWords(buffer: GPUBuffer, wordOffset: number, count: number, value: number): void {
    // Zeros too go through the kernel: Dawn's GL backend clears buffers ~10× slower (131 MB: 850 ms vs 70 ms on llvmpipe).
    // One binding per chunk keeps large buffers under maxStorageBufferBindingSize.
    const chunkWords = Math.floor(this.limits.maxStorageBufferBindingSize / 4 / 64) * 64;
    for (let start = 0; start < count; start += chunkWords) {
      const n = Math.min(chunkWords, count - start);
      this.run({
        name: 'fill',
        source: FILL_SOURCE,
        params: new Params()
          .u32('count', n)
          .u32('value', value >>> 0)
          .u32('_p0', 0)
          .u32('_p1', 0),
        bindings: [{ buffer, offset: (wordOffset + start) * 4, size: n * 4 }],
        workgroups: this.grid(n, 256),
      });
    }
  }

  /** Workgroup counts for `n` invocations of a 1-D kernel with `size` lanes: spills into y past the per-dimension limit. */
  grid(n: number, size: number): [number, number, number] {
    const groups = Math.ceil(n / size);
    const max = this.limits.maxComputeWorkgroupsPerDimension;
    if (groups <= max) return [groups, 1, 1];
    const y = Math.ceil(groups / max);
    return [Math.ceil(groups / y), y, 1];
  }

  /**
   * Binds elements [start, start+count) of a storage. The binding starts at the aligned byte below
   * `start`; kernels add `elementOffset` to their indices.
   */
  bind(storage: Storage, start: number, count: number, what = 'tensor'): BoundRange {
    const bpe = bytesPerElement(storage.dtype);
    const byteStart = start * bpe;
    const align = this.limits.minStorageBufferOffsetAlignment;
    const alignedStart = Math.floor(byteStart / align) * align;
    const byteEnd = Math.max(alignedStart + 4, Math.ceil(((start + count) * bpe) / 4) * 4);
    const size = byteEnd - alignedStart;
    if (size > this.limits.maxStorageBufferBindingSize) {
      throw new BindingTooLargeError(
        `${what} needs a ${size}-byte binding, above maxStorageBufferBindingSize (${this.limits.maxStorageBufferBindingSize}); this op does not split it`,
      );
    }
    return { range: { buffer: storage.gpu!, offset: alignedStart, size }, elementOffset: (byteStart - alignedStart) / bpe };
  }

  run(k: KernelLaunch): void {
    this.checkAlive();
    const pipeline = this.pipelines.get(k.name, k.source);
    if (this.recorder) {
      const [x, y, z] = k.workgroups;
      if (x > 0 && y > 0 && z > 0) {
        this.recorder.dispatches.push({
          pipeline,
          params: k.params ? k.params.bytes() : null,
          buffers: [...k.bindings],
          workgroups: k.workgroups,
          label: k.detail ? `${k.name} ${k.detail}` : k.name,
        });
      }
      return;
    }
    this.batch.dispatch({
      pipeline,
      params: k.params ? k.params.bytes() : null,
      buffers: k.bindings,
      workgroups: k.workgroups,
      label: k.detail ? `${k.name} ${k.detail}` : k.name,
    });
  }

  /** Writes bytes into a storage at a byte offset (4-byte aligned). */
  write(storage: Storage, byteOffset: number, data: ArrayBufferView): void {
    this.checkAlive();
    if (this.recorder) throw new RecordingRefusedError('an upload while recording a step: a recorded step must read changing values from device tensors');
    // queue.writeBuffer runs before commands still being recorded: submit them first so a reused
    // pool buffer is not overwritten under a pending kernel.
    this.batch.flush();
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const padded = bytes.byteLength % 4 === 0 ? bytes : padTo4(bytes);
    this.gpu.queue.writeBuffer(storage.gpu!, byteOffset, padded);
    storage.invalidateDerived();
  }

  /** Reads `byteLength` bytes at `byteOffset`; the only path by which data leaves the GPU. */
  async read(storage: Storage, byteOffset: number, byteLength: number): Promise<Uint8Array> {
    this.checkAlive();
    if (this.recorder) throw new RecordingRefusedError('a readback while recording a step');
    const start = Math.floor(byteOffset / 4) * 4;
    const end = Math.ceil((byteOffset + byteLength) / 4) * 4;
    const size = Math.max(4, end - start);
    const staging = this.gpu.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'readback' });
    this.batch.copy(storage.gpu!, start, staging, 0, size);
    this.batch.flush();
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (e) {
      this.throwPendingErrors();
      throw e;
    }
    const out = new Uint8Array(byteLength);
    out.set(new Uint8Array(staging.getMappedRange(), byteOffset - start, byteLength));
    staging.unmap();
    staging.destroy();
    this.throwPendingErrors();
    return out;
  }

  /** Submits pending work and waits for the GPU to finish it. */
  async sync(): Promise<void> {
    this.batch.flush();
    await this.gpu.queue.onSubmittedWorkDone();
    this.throwPendingErrors();
  }

  /** Whether {@link profileKernels} works here (the device has the `timestamp-query` feature). */
  get canProfileKernels(): boolean {
    return this.gpu.features.has('timestamp-query');
  }

  /**
   * Runs `fn` with every dispatch timed on the GPU (timestamp queries, one pass per dispatch; see
   * runtime/profiler.ts) and returns its result with the GPU time per kernel name, largest first.
   */
  async profileKernels<T>(fn: () => T | Promise<T>): Promise<{ result: T; kernels: KernelTime[] }> {
    this.batch.flush();
    const profiler = new KernelProfiler(this.gpu);
    this.batch.profiler = profiler;
    try {
      const result = await fn();
      await this.sync();
      return { result, kernels: await profiler.report() };
    } finally {
      this.batch.profiler = null;
      profiler.destroy();
    }
  }
}

/** A recorded step (see {@link WebGpuDevice.record}). */
export interface DeviceRecording {
  readonly prepared: readonly PreparedDispatch[];
  readonly uniforms: GPUBuffer | null;
  /** Buffers freed during the recording, which its replays write. */
  readonly owned: readonly Storage[];
}

function padTo4(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
  out.set(bytes);
  return out;
}
