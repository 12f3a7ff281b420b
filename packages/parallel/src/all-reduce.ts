/**
 * The gradient all-reduce of data parallelism, through the host: for each set of workers holding
 * the same parameters (the replicas of one pipeline stage or expert shard), gradients are gathered
 * in buckets (DDP's reverse parameter order, about `bucketBytes` each), summed in rank order, and
 * the sum sent back to every worker of the set. All buckets of all sets are in flight together.
 */
import { HostTensor } from './host-tensor';
import type { WorkerGroup } from './worker-group';

export class GradientAllReduce {
  private buckets: Map<number, string[][]> = new Map();

  constructor(
    private readonly group: WorkerGroup,
    /** Sets of ranks holding the same parameters (each summed separately). */
    readonly rankSets: readonly (readonly number[])[],
    private readonly bucketBytes: number,
  ) {}

  /** Parameter names of a set in buckets of about `bucketBytes`, last parameters first (the order backward produces them). */
  private async bucketsOf(set: number): Promise<string[][]> {
    const cached = this.buckets.get(set);
    if (cached) return cached;
    const names = await this.group.call<{ name: string; shape: number[]; kind: string }[]>(this.rankSets[set]![0]!, 'names');
    const buckets: string[][] = [];
    let current: string[] = [];
    let bytes = 0;
    for (const t of names.filter((n) => n.kind === 'parameter').reverse()) {
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

  /** Sums the gradients of every set's workers and gives each worker its set's sum. */
  async run(): Promise<void> {
    await Promise.all(
      this.rankSets.map(async (ranks, set) => {
        if (ranks.length < 2) return;
        const buckets = await this.bucketsOf(set);
        const where = this.rankSets.length > 1 ? ` of ranks ${ranks.join(', ')}` : '';
        await Promise.all(buckets.map((names, b) => this.reduceBucket(ranks, names, `all-reduce bucket ${b}${where}`)));
      }),
    );
  }

  private async reduceBucket(ranks: readonly number[], names: string[], step: string): Promise<void> {
    const parts = await Promise.all(ranks.map((r) => this.group.call<Record<string, HostTensor>>(r, 'gradients', { names }, { step: `${step} (gather)` })));
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
    await Promise.all(
      ranks.map((r) =>
        this.group.call(
          r,
          'setGradients',
          { grads: Object.fromEntries(Object.entries(sums).map(([name, v]) => [name, HostTensor.fromF32(v.slice(), shapes[name]!)])) },
          { step: `${step} (scatter)` },
        ),
      ),
    );
  }
}
