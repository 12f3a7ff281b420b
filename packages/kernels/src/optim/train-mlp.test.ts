/**
 * End to end: a small MLP learns a non-trivial 2-D classification (XOR of the quadrants, with a
 * third class inside a ring) with linear + relu + crossEntropy + AdamW + clipping and a warmup /
 * cosine schedule. Everything is seeded, so the loss after a fixed number of steps is a fixed
 * number on each device (checked by re-running a prefix bit for bit).
 */
import { describe, expect, test } from 'bun:test';
import type { Device } from '../device/device';
import { backward, crossEntropy, dispose, Generator, keep, linear, randn, relu, tensor, tidy, zeros, type Tensor } from '../index';
import { testDevices } from '../testing';
import { AdamW } from './adamw';
import { clipGradNorm } from './clip';
import { decayGroups } from './optimizer';
import { warmupCosineSchedule } from './schedule';

const devices = await testDevices();

const POINTS = 256;
const HIDDEN = 32;
const STEPS = 100;
/** Mean cross-entropy the model must reach (it starts near ln 3 ≈ 1.1). */
const TARGET_LOSS = 0.1;

/** Points in [-1, 1]²: class 2 inside radius 0.45, else 1 when the quadrant signs agree, else 0. */
function dataset(seed: number): { x: Float32Array; labels: Int32Array } {
  const g = new Generator(seed);
  const x = new Float32Array(POINTS * 2);
  const labels = new Int32Array(POINTS);
  for (let i = 0; i < POINTS; i++) {
    const a = 2 * g.uniform() - 1;
    const b = 2 * g.uniform() - 1;
    x[2 * i] = a;
    x[2 * i + 1] = b;
    labels[i] = a * a + b * b < 0.45 ** 2 ? 2 : a * b > 0 ? 1 : 0;
  }
  return { x, labels };
}

/** Runs the first `steps` steps of the STEPS-step schedule; returns each step's loss (read back once at the end). */
async function train(device: Device, steps: number): Promise<number[]> {
  const g = new Generator(7);
  const layer = (inF: number, outF: number) => ({
    w: randn([outF, inF], { std: Math.sqrt(2 / inF), generator: g, device }).requiresGrad_(),
    b: zeros([outF], { device }).requiresGrad_(),
  });
  const l1 = layer(2, HIDDEN);
  const l2 = layer(HIDDEN, HIDDEN);
  const l3 = layer(HIDDEN, 3);
  const params = [l1.w, l1.b, l2.w, l2.b, l3.w, l3.b];
  const { x: xv, labels: lv } = dataset(3);
  const x = tensor(xv, [POINTS, 2], { device });
  const labels = tensor(lv, [POINTS], { device });
  const opt = new AdamW(decayGroups(params, 1e-4), { lr: 0.02 });
  const schedule = warmupCosineSchedule({ warmupSteps: 10, totalSteps: STEPS, minRatio: 0.1 });
  const losses: Tensor[] = [];
  for (let s = 0; s < steps; s++) {
    losses.push(
      tidy(() => {
        const h1 = relu(linear(x, l1.w, l1.b));
        const h2 = relu(linear(h1, l2.w, l2.b));
        const loss = crossEntropy(linear(h2, l3.w, l3.b), labels);
        backward(loss);
        return keep(loss);
      }),
    );
    clipGradNorm(params, 1).dispose();
    opt.step({ lrScale: schedule(opt.stepCount) });
    opt.zeroGrad();
  }
  const values = await Promise.all(losses.map((l) => l.item()));
  dispose([losses, params, x, labels]);
  opt.dispose();
  return values;
}

describe('training a small MLP', () => {
  for (const device of devices) {
    test(`${device.kind}: loss falls below ${TARGET_LOSS} within ${STEPS} steps, deterministically`, async () => {
      const before = device.memoryStats().liveBytes;
      const losses = await train(device, STEPS);
      expect(losses[0]!).toBeGreaterThan(0.9);
      expect(losses[STEPS - 1]!).toBeLessThan(TARGET_LOSS);
      expect(device.memoryStats().liveBytes).toBe(before);
      // Same seed, same device: the same losses bit for bit.
      const again = await train(device, 15);
      expect(again).toEqual(losses.slice(0, 15));
    }, 60_000);
  }
});
