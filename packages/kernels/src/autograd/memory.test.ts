import { describe, expect, test } from 'bun:test';
import { tensor } from '../creation';
import { mul, square, sub, tanh } from '../ops/elementwise/elementwise';
import { embedding } from '../ops/index/gather';
import { mean, sum } from '../ops/reduce/reduce';
import { AdamW } from '../optim/adamw';
import { clipGradNorm } from '../optim/clip';
import { tidy } from '../runtime/scope';
import type { Tensor } from '../tensor';
import { onDevice, randomData, testDevices } from '../testing';
import { backward } from './backward';
import { checkpoint } from './checkpoint';
import { defineFunction } from './function';

const devices = await testDevices();

/** x·w with a custom backward that saves both operands. */
const scale = defineFunction({
  name: 'scale',
  forward(ctx, x: Tensor, w: Tensor) {
    ctx.save(x, w);
    return mul(x, w);
  },
  backward(ctx, g) {
    const [x, w] = ctx.saved as [Tensor, Tensor];
    return [mul(g, w), sum(mul(g, x), 0)];
  },
});

describe('training steps do not leak', () => {
  for (const device of devices) {
    test(`${device.kind}: live bytes stay flat over 30 steps (embedding, checkpoint, custom function, clipping, AdamW)`, async () => {
      const table = onDevice(randomData([50, 24], 1), [50, 24], device).requiresGrad_();
      const w = onDevice(randomData([24], 2), [24], device).requiresGrad_();
      const v = onDevice(randomData([24], 3), [24], device).requiresGrad_();
      const ids = tensor(
        Int32Array.from({ length: 33 }, (_, i) => (i * 7) % 50),
        [33],
        { device },
      );
      const target = onDevice(randomData([33, 24], 4, { scale: 0.3 }), [33, 24], device);
      const params = [table, w, v];
      const opt = new AdamW(params, { lr: 0.01 });
      const live: number[] = [];
      const losses: number[] = [];
      for (let step = 0; step < 30; step++) {
        const loss = tidy(() => {
          const h = embedding(table, ids);
          const y = checkpoint((x) => tanh(mul(x, w)), h);
          const l = mean(square(sub(scale(y, v), target)), [0, 1]);
          backward(l);
          return l;
        });
        if (step % 10 === 0) losses.push(await loss.item());
        loss.dispose();
        clipGradNorm(params, 1).dispose();
        opt.step();
        opt.zeroGrad();
        live.push(device.memoryStats().liveBytes);
      }
      // From the second step on (optimizer state exists), nothing accumulates.
      expect(new Set(live.slice(1)).size).toBe(1);
      expect(losses[2]!).toBeLessThan(losses[0]!);
      opt.dispose();
    });
  }
});
