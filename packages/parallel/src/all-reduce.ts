/**
 * The gradient all-reduce of data parallelism, through the host: for each set of workers holding
 * the same parameters (the replicas of one pipeline stage or expert shard), gradients are gathered
 * in buckets (DDP's reverse parameter order, about `bucketBytes` each), summed in rank order, and
 * the sum sent back to every worker of the set. Either after the backward ({@link run}: all
 * buckets of all sets in flight together) or during it ({@link reduction}: the workers send each
 * bucket as soon as its gradients are final, and it is summed while the backward goes on).
 */
import { HostTensor } from './host-tensor';
import type { WorkerGroup } from './worker-group';

/** A bucket of finished gradients a worker sends during its backward. */
export interface GradientBucket {
  readonly bucket: number;
  readonly grads: Record<string, HostTensor>;
}

/** The all-reduce of one rank set's buckets as its workers send them (see {@link GradientAllReduce.reduction}). */
export interface BucketReduction {
  /** Bucket `part.bucket` from the set's `member`-th worker. */
  receive(member: number, part: GradientBucket): void;
  /** Resolves when every bucket was summed and sent back. */
  done(): Promise<void>;
}

export class GradientAllReduce {
  private buckets: Map<number, string[][]> = new Map();

  constructor(
    private readonly group: WorkerGroup,
    /** Sets of ranks holding the same parameters (each summed separately). */
    readonly rankSets: readonly (readonly number[])[],
    private readonly bucketBytes: number,
  ) {}

  /** Trained parameter names of a set in buckets of about `bucketBytes`, last parameters first (the order backward produces them). */
  async bucketsOf(set: number): Promise<string[][]> {
    const cached = this.buckets.get(set);
    if (cached) return cached;
    const names = await this.group.call<{ name: string; shape: number[]; trained: boolean }[]>(this.rankSets[set]![0]!, 'names');
    const buckets: string[][] = [];
    let current: string[] = [];
    let bytes = 0;
    // Only what trains (LoRA: the adapters) is all-reduced.
    for (const t of names.filter((n) => n.trained).reverse()) {
      current.push(t.name);
      bytes += 4 * t.shape.reduce((n, d) => n * d, 1);
      if (bytes >= this.bucketBytes) {
        buckets.push(current);
        current = [];
        bytes = 0;
      }
    }
    if (current.length) buckets.push(current);
    this.buckets.set(set, buckets);
    return buckets;
  }

  /** Sums the gradients of every set's workers and gives each worker its set's sum (after the backward). */
  async run(): Promise<void> {
    await Promise.all(
      this.rankSets.map(async (ranks, set) => {
        if (ranks.length < 2) return;
        const buckets = await this.bucketsOf(set);
        await Promise.all(
          buckets.map(async (names, b) => {
            const step = this.step(set, b);
            const parts = await Promise.all(
              ranks.map((r) => this.group.call<Record<string, HostTensor>>(r, 'gradients', { names }, { step: `${step} (gather)` })),
            );
            await this.scatter(ranks, sumInRankOrder(parts), step);
          }),
        );
      }),
    );
  }

  /**
   * The all-reduce of set `set`'s `buckets` as its workers send them during their backward: when
   * every worker of the set has sent bucket b, its sum (in rank order) goes back to each of them
   * (queued behind their backward).
   */
  reduction(set: number, buckets: readonly string[][]): BucketReduction {
    const ranks = this.rankSets[set]!;
    // Filled with undefined, not holes (`some` skips holes); null once the bucket is reduced.
    const received: ((Record<string, HostTensor> | undefined)[] | null)[] = buckets.map(() => new Array(ranks.length).fill(undefined));
    const scatters: Promise<unknown>[] = [];
    let reduced = 0;
    return {
      receive: (member, { bucket, grads }) => {
        const parts = received[bucket];
        if (!parts || parts[member]) throw new Error(`all-reduce: rank ${ranks[member]} sent bucket ${bucket} twice or out of range`);
        parts[member] = grads;
        if (parts.some((p) => p === undefined)) return;
        received[bucket] = null;
        reduced++;
        scatters.push(this.scatter(ranks, sumInRankOrder(parts as Record<string, HostTensor>[]), this.step(set, bucket)));
      },
      done: async () => {
        await Promise.all(scatters);
        if (reduced !== buckets.length) throw new Error(`all-reduce: ${reduced} of ${buckets.length} gradient buckets arrived from every worker`);
      },
    };
  }

  private step(set: number, bucket: number): string {
    const where = this.rankSets.length > 1 ? ` of ranks ${this.rankSets[set]!.join(', ')}` : '';
    return `all-reduce bucket ${bucket}${where}`;
  }

  /** Every worker of `ranks` gets the bucket's sum. */
  private scatter(ranks: readonly number[], sums: Record<string, HostTensor>, step: string): Promise<unknown> {
    // Sending moves a tensor's buffer: each worker gets its own copy.
    return Promise.all(
      ranks.map((r) =>
        this.group.call(
          r,
          'setGradients',
          { grads: Object.fromEntries(Object.entries(sums).map(([name, t]) => [name, t.clone()])) },
          { step: `${step} (scatter)` },
        ),
      ),
    );
  }
}

/** The workers' gradients summed name by name, in rank order (a name some worker lacks sums over the others). */
function sumInRankOrder(parts: readonly Record<string, HostTensor>[]): Record<string, HostTensor> {
  const sums: Record<string, Float32Array> = {};
  const shapes: Record<string, readonly number[]> = {};
  for (const part of parts) {
    for (const [name, g] of Object.entries(part)) {
      const values = g.toFloat32();
      const sum = sums[name];
      if (!sum) {
        sums[name] = Float32Array.from(values);
        shapes[name] = g.shape;
      } else for (let i = 0; i < sum.length; i++) sum[i]! += values[i]!;
    }
  }
  return Object.fromEntries(Object.entries(sums).map(([name, v]) => [name, HostTensor.fromF32(v, shapes[name]!)]));
}
