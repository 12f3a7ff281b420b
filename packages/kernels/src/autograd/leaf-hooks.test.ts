/**
 * `onLeafGrad`: each leaf requiring grad is reported once, when its gradient is complete (nothing
 * is added to it afterwards), in the order the backward finishes them; `backwardAsync`
 * gives `backward`'s gradients and awaits the hook's promises.
 */
import { describe, expect, test } from 'bun:test';
import { tensor } from '../creation';
import { getCpuDevice } from '../device/device';
import { add, mul, tanh } from '../ops/elementwise/elementwise';
import { sumAll } from '../ops/reduce/reduce';
import type { Tensor } from '../tensor';
import { backward, backwardAsync } from './backward';

const device = getCpuDevice();

/** Three "layers" w0 → w1 → w2 (w0 used twice, `frozen` without grad); the loss and the leaves. */
function graph(): { loss: Tensor; leaves: Tensor[]; frozen: Tensor } {
  const x = tensor([0.5, -1, 2], [3], { device });
  const frozen = tensor([1, 2, 3], [3], { device });
  const leaves = [
    [0.1, 0.2, 0.3],
    [-0.4, 0.5, 0.6],
    [0.7, -0.8, 0.9],
  ].map((v) => tensor(v, [3], { device }).requiresGrad_(true));
  const [w0, w1, w2] = leaves as [Tensor, Tensor, Tensor];
  const h0 = tanh(add(mul(x, w0), w0));
  const h1 = tanh(mul(add(h0, frozen), w1));
  const loss = sumAll(mul(h1, w2));
  return { loss, leaves, frozen };
}

describe('backward leaf hooks', () => {
  test('each leaf once, complete when reported, in reverse order of use', async () => {
    const { loss, leaves, frozen } = graph();
    const reported: { index: number; grad: Tensor | null }[] = [];
    backward(loss, { onLeafGrad: (leaf) => reported.push({ index: leaves.indexOf(leaf), grad: leaf.grad }) });
    expect(reported.map((r) => r.index)).toEqual([2, 1, 0]);
    // Complete when reported: nothing was added to it afterwards (an addition replaces the tensor).
    for (const r of reported) expect(r.grad).toBe(leaves[r.index]!.grad);
    expect(frozen.grad).toBeNull();
  });

  test('backwardAsync: the same gradients; each hook promise is awaited before the next node', async () => {
    const sync = graph();
    backward(sync.loss);
    const { loss, leaves } = graph();
    const order: string[] = [];
    await backwardAsync(loss, {
      onLeafGrad: async (leaf) => {
        order.push(`start ${leaves.indexOf(leaf)}`);
        await new Promise((resolve) => setTimeout(resolve, 1));
        order.push(`end ${leaves.indexOf(leaf)}`);
      },
    });
    expect(order).toEqual(['start 2', 'end 2', 'start 1', 'end 1', 'start 0', 'end 0']);
    for (const [i, leaf] of leaves.entries()) expect(await leaf.grad!.toFloat32()).toEqual(await sync.leaves[i]!.grad!.toFloat32());
  });
});
