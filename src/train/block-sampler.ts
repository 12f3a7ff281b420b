/**
 * Deterministic shuffled order over a list of blocks: epoch e visits every block once, in a
 * Fisher–Yates permutation drawn from a generator seeded by (seed, e). The whole sampling state is
 * one integer, the number of blocks handed out so far, which is what a checkpoint stores.
 */
import { Generator } from '@nemotron-ts/kernels';
import { rowBatch, type RowBatch, type RowTargets } from './row-batch';

export class BlockSampler {
  private epochOrder: { epoch: number; order: Uint32Array } | null = null;

  constructor(
    readonly blocks: readonly Int32Array[],
    readonly seed: number,
    /** Per block, its labels and documents (chat and packed rows); absent: each block is its own labels. */
    readonly targets: readonly RowTargets[] | null = null,
  ) {
    if (blocks.length === 0) throw new Error('BlockSampler: no blocks');
    if (targets && targets.length !== blocks.length) throw new Error(`BlockSampler: ${targets.length} targets for ${blocks.length} blocks`);
  }

  /** `count` rows starting at position `position` of the endless shuffled sequence. */
  rows(position: number, count: number): number[][] {
    return Array.from({ length: count }, (_, i) => Array.from(this.blocks[this.indexAt(position + i)]!));
  }

  /** The same rows as {@link rows}, with their labels and documents, as one micro-batch. */
  batch(position: number, count: number): RowBatch {
    const picked = Array.from({ length: count }, (_, i) => this.indexAt(position + i));
    return rowBatch(
      picked.map((k) => this.blocks[k]!),
      picked.map((k) => this.targets?.[k] ?? null),
    );
  }

  private indexAt(position: number): number {
    const n = this.blocks.length;
    const epoch = Math.floor(position / n);
    if (this.epochOrder?.epoch !== epoch) this.epochOrder = { epoch, order: permutation(n, new Generator(mix(this.seed, epoch))) };
    return this.epochOrder.order[position % n]!;
  }
}

function permutation(n: number, g: Generator): Uint32Array {
  const order = Uint32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = g.nextU32() % (i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/** One 32-bit seed from (seed, epoch), so epochs get unrelated orders. */
function mix(seed: number, epoch: number): number {
  return (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(epoch + 1, 0x85ebca6b)) >>> 0;
}
