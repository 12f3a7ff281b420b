/**
 * Per-kernel GPU time from timestamp queries, for devices that offer the `timestamp-query`
 * feature (chosen by the feature, never by the adapter's name). While a profiler is attached to a
 * `CommandBatch` (runtime/batch.ts), every dispatch runs in its own compute pass whose beginning and end write
 * timestamps; each submit resolves them into a buffer that is read back asynchronously. Costs a pass
 * per dispatch, so it is for `--profile` runs, not for timing totals.
 */

export interface KernelTime {
  /** Kernel name (the label up to its first space). */
  kernel: string;
  calls: number;
  /** Summed GPU time between the pass's beginning and end timestamps. */
  gpuMs: number;
}

/** Dispatches one submit can time; a batch holds at most 512 (see batch.ts). */
const SLOTS = 1024;

export class KernelProfiler {
  private readonly querySet: GPUQuerySet;
  private names: string[] = [];
  private readonly pending: Promise<void>[] = [];
  private readonly totals = new Map<string, { calls: number; ns: bigint }>();

  constructor(private readonly device: GPUDevice) {
    if (!device.features.has('timestamp-query'))
      throw new Error("kernel profiling needs the 'timestamp-query' feature, which this WebGPU device does not offer");
    this.querySet = device.createQuerySet({ type: 'timestamp', count: 2 * SLOTS, label: 'kernel-profile' });
  }

  /** Timestamp writes for the next dispatch's pass, or undefined once this submit's slots are used up. */
  slot(label: string): GPUComputePassTimestampWrites | undefined {
    const i = this.names.length;
    if (i >= SLOTS) return undefined;
    this.names.push(label.split(' ')[0]!);
    return { querySet: this.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 };
  }

  /** Encodes the resolve of this submit's timestamps; call before `encoder.finish()`. Returns the readback to start after the submit. */
  resolve(encoder: GPUCommandEncoder): (() => void) | null {
    const count = this.names.length;
    if (count === 0) return null;
    const bytes = 2 * count * 8;
    const resolved = this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC, label: 'profile-resolve' });
    const readback = this.device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, label: 'profile-readback' });
    encoder.resolveQuerySet(this.querySet, 0, 2 * count, resolved, 0);
    encoder.copyBufferToBuffer(resolved, 0, readback, 0, bytes);
    const names = this.names;
    this.names = [];
    return () => {
      this.pending.push(
        readback.mapAsync(GPUMapMode.READ).then(() => {
          const stamps = new BigUint64Array(readback.getMappedRange().slice(0));
          readback.destroy();
          resolved.destroy();
          names.forEach((kernel, i) => {
            const begin = stamps[2 * i]!;
            const end = stamps[2 * i + 1]!;
            const t = this.totals.get(kernel) ?? { calls: 0, ns: 0n };
            t.calls++;
            if (end > begin) t.ns += end - begin;
            this.totals.set(kernel, t);
          });
        }),
      );
    };
  }

  /** Per-kernel totals of everything submitted so far (waits for the readbacks), largest first. */
  async report(): Promise<KernelTime[]> {
    await Promise.all(this.pending.splice(0));
    return [...this.totals].map(([kernel, t]) => ({ kernel, calls: t.calls, gpuMs: Number(t.ns) / 1e6 })).sort((a, b) => b.gpuMs - a.gpuMs);
  }

  destroy(): void {
    this.querySet.destroy();
  }
}
