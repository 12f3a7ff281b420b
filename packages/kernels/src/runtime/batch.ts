/**
 * Batched command recording: many dispatches share one encoder and one compute pass; their
 * parameters go into one uniform arena written right before the submit. A batch is submitted when
 * it is full, when the arena is full, or when someone needs the results (readback, upload).
 */
import type { CachedPipeline } from './pipelines';
import type { KernelProfiler } from './profiler';
import { RecordingRefusedError, type PreparedDispatch } from './recording';

export interface BufferRange {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

/** A sampled texture bound to a kernel (read with `textureLoad`). */
export interface TextureBinding {
  texture: GPUTextureView;
}

/** What a kernel binding (after the uniform) refers to. */
export type KernelBinding = BufferRange | TextureBinding;

export interface Dispatch {
  pipeline: CachedPipeline;
  /** Packed uniform parameters (binding 0), or null when the kernel takes none. */
  params: Uint8Array | null;
  /** Storage buffer and texture bindings 1..n in declaration order. */
  buffers: readonly KernelBinding[];
  workgroups: readonly [number, number, number];
  /** Kernel name and shapes; becomes the bind group label so Dawn's messages name it. */
  label: string;
}

const ARENA_BYTES = 1 << 20;
const MAX_DISPATCHES_PER_BATCH = 512;
/** Bind groups kept for reuse; decode steps rebind the same pooled buffers token after token. */
const MAX_CACHED_BIND_GROUPS = 4096;
const ARENA_COUNT = 4;

export class CommandBatch {
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private readonly arenaCpu = new Uint8Array(ARENA_BYTES);
  private readonly arenas: GPUBuffer[] = [];
  private arenaIndex = 0;
  private arenaUsed = 0;
  private count = 0;
  /** Labels of the dispatches of the batch being recorded and of the last submitted one. */
  private labels: string[] = [];
  lastSubmittedLabels: string[] = [];
  /** Total dispatches recorded since creation (for benchmarks and tests). */
  dispatchCount = 0;
  private readonly bindGroups = new Map<string, GPUBindGroup>();
  private readonly resourceIds = new WeakMap<object, number>();
  private nextResourceId = 1;
  /** Set while a device records a step: copies would run once at record time, not on replay, so they are refused. */
  recording = false;
  /** When set, every dispatch gets its own timed compute pass (profiler.ts). */
  profiler: KernelProfiler | null = null;

  constructor(
    private readonly device: GPUDevice,
    private readonly uniformAlign: number,
  ) {}

  private arena(): GPUBuffer {
    while (this.arenas.length <= this.arenaIndex) {
      this.arenas.push(this.device.createBuffer({ size: ARENA_BYTES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, label: 'param-arena' }));
    }
    return this.arenas[this.arenaIndex]!;
  }

  private ensurePass(label: string): GPUComputePassEncoder {
    if (!this.encoder) this.encoder = this.device.createCommandEncoder({ label: 'batch' });
    if (this.profiler) {
      // One pass per dispatch, so its timestamps time that kernel alone.
      this.pass?.end();
      this.pass = this.encoder.beginComputePass({ timestampWrites: this.profiler.slot(label) });
    }
    if (!this.pass) this.pass = this.encoder.beginComputePass();
    return this.pass;
  }

  get pending(): number {
    return this.count;
  }

  dispatch(d: Dispatch): void {
    const [x, y, z] = d.workgroups;
    if (x === 0 || y === 0 || z === 0) return;
    let paramSlot = -1;
    if (d.params) {
      const size = Math.ceil(d.params.byteLength / this.uniformAlign) * this.uniformAlign;
      if (this.arenaUsed + size > ARENA_BYTES) this.flush();
      paramSlot = this.arenaUsed;
      this.arenaCpu.set(d.params, paramSlot);
      this.arenaUsed += size;
    }
    const bindGroup = this.bindGroup(d);
    const pass = this.ensurePass(d.label);
    pass.setPipeline(d.pipeline.pipeline);
    if (d.params) pass.setBindGroup(0, bindGroup, [paramSlot]);
    else pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
    this.labels.push(d.label);
    this.count++;
    this.dispatchCount++;
    if (this.count >= MAX_DISPATCHES_PER_BATCH) this.flush();
  }

  private idOf(resource: object): number {
    let id = this.resourceIds.get(resource);
    if (id === undefined) this.resourceIds.set(resource, (id = this.nextResourceId++));
    return id;
  }

  /** The bind group for a dispatch's resources; the parameter slot is a dynamic offset, not part of it. */
  private bindGroup(d: Dispatch): GPUBindGroup {
    let key = `${d.pipeline.id}|${d.params ? `${this.arenaIndex}:${d.params.byteLength}` : '-'}`;
    for (const b of d.buffers) key += 'texture' in b ? `|t${this.idOf(b.texture)}` : `|${this.idOf(b.buffer)}:${b.offset}:${b.size}`;
    const hit = this.bindGroups.get(key);
    if (hit) return hit;
    const entries: GPUBindGroupEntry[] = [];
    if (d.params) entries.push({ binding: 0, resource: { buffer: this.arena(), offset: 0, size: d.params.byteLength } });
    d.buffers.forEach((b, i) => entries.push({ binding: i + 1, resource: 'texture' in b ? b.texture : { buffer: b.buffer, offset: b.offset, size: b.size } }));
    const group = this.device.createBindGroup({ layout: d.pipeline.layout, entries, label: d.label });
    if (this.bindGroups.size >= MAX_CACHED_BIND_GROUPS) this.bindGroups.delete(this.bindGroups.keys().next().value!);
    this.bindGroups.set(key, group);
    return group;
  }

  /** Forgets cached bind groups: call before destroying a buffer or texture they may reference. */
  invalidateBindGroups(): void {
    this.bindGroups.clear();
  }

  /** The encoder outside any compute pass, for copies and clears (ends the current pass). */
  private copyEncoder(): GPUCommandEncoder {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    if (!this.encoder) this.encoder = this.device.createCommandEncoder({ label: 'batch' });
    return this.encoder;
  }

  /** Encodes prepared (recorded) dispatches into the current pass, in order. */
  replay(list: readonly PreparedDispatch[]): void {
    if (this.count + list.length > MAX_DISPATCHES_PER_BATCH) this.flush();
    const offset = [0];
    for (const d of list) {
      const pass = this.ensurePass(d.label);
      pass.setPipeline(d.pipeline);
      if (d.paramOffset === null) pass.setBindGroup(0, d.bindGroup);
      else {
        offset[0] = d.paramOffset;
        pass.setBindGroup(0, d.bindGroup, offset);
      }
      const [x, y, z] = d.workgroups;
      pass.dispatchWorkgroups(x, y, z);
      this.labels.push(d.label);
    }
    this.count += list.length;
    this.dispatchCount += list.length;
  }

  private refuseWhileRecording(what: string): void {
    if (this.recording)
      throw new RecordingRefusedError(
        `${what} while recording a step: a recorded step may only dispatch kernels (run it once unrecorded first, so cached resources exist)`,
      );
  }

  /** Records a buffer-to-buffer copy (ends the current compute pass). */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, size: number): void {
    if (size === 0) return;
    this.refuseWhileRecording('a buffer copy');
    this.copyEncoder().copyBufferToBuffer(src, srcOffset, dst, dstOffset, size);
    this.labels.push('copy');
    this.count++;
  }

  /**
   * Records a copy of `width × height` texels from a buffer into a 2-D texture at texel (`x`, `y`)
   * (ends the current compute pass). Rows are `bytesPerRow` apart (a multiple of 256); a single row
   * may pass undefined.
   */
  copyToTexture(
    src: GPUBuffer,
    srcOffset: number,
    bytesPerRow: number | undefined,
    texture: GPUTexture,
    x: number,
    y: number,
    width: number,
    height: number,
  ): void {
    if (width === 0 || height === 0) return;
    this.refuseWhileRecording('a copy into a texture');
    const layout: GPUTexelCopyBufferInfo = { buffer: src, offset: srcOffset };
    if (bytesPerRow !== undefined) layout.bytesPerRow = bytesPerRow;
    this.copyEncoder().copyBufferToTexture(layout, { texture, origin: [x, y] }, [width, height]);
    this.labels.push('copy-to-texture');
    this.count++;
  }

  /** Submits everything recorded so far. */
  flush(): void {
    if (!this.encoder) return;
    if (this.pass) this.pass.end();
    if (this.arenaUsed > 0) this.device.queue.writeBuffer(this.arena(), 0, this.arenaCpu, 0, this.arenaUsed);
    const readTimes = this.profiler?.resolve(this.encoder) ?? null;
    this.device.queue.submit([this.encoder.finish()]);
    readTimes?.();
    this.encoder = null;
    this.pass = null;
    this.arenaUsed = 0;
    // Rotate arenas so the next batch's parameters never wait on this one.
    this.arenaIndex = (this.arenaIndex + 1) % ARENA_COUNT;
    this.lastSubmittedLabels = this.labels;
    this.labels = [];
    this.count = 0;
  }

  /** Labels of the recent dispatches, for error messages. */
  recentLabels(max = 8): string[] {
    const all = [...this.lastSubmittedLabels, ...this.labels];
    return all.slice(-max);
  }
}
