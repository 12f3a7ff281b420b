import { describe, expect, test } from 'bun:test';
import { tensor } from '../creation';
import { getCpuDevice } from '../device/device';
import { exp, mul, sub, tanh } from '../ops/elementwise/elementwise';
import { sum, sumAll } from '../ops/reduce/reduce';
import { dispose, tidy } from '../runtime/scope';
import type { Tensor } from '../tensor';
import { expectClose, gradcheck, onDevice, randomData, testDevices } from '../testing';
import { backward } from './backward';
import { checkpoint } from './checkpoint';
import { detach, zeroGrad } from './detach';
import { defineFunction } from './function';
import { noGrad } from './graph';

const devices = await testDevices();
const cpu = getCpuDevice();

/** tanh(x)·w with a hand-written backward that reuses the saved tanh. */
const tanhScale = defineFunction({
  name: 'tanhScale',
  forward(ctx, x: Tensor, w: Tensor, label: string) {
    const t = tanh(x);
    ctx.save(t, w);
    ctx.state.label = label;
    return mul(t, w);
  },
  backward(ctx, g) {
    const [t, w] = ctx.saved as [Tensor, Tensor];
    const gx = ctx.needsInputGrad[0] ? mul(mul(g, w), sub(1, mul(t, t))) : null;
    const gw = ctx.needsInputGrad[1] ? sum(mul(g, t), 0) : null;
    return [gx, gw];
  },
});

describe('defineFunction', () => {
  test('gradcheck of a custom backward', async () => {
    await gradcheck(
      (x, w) => tanhScale(x!, w!, 'a'),
      [
        { values: randomData([5, 3], 1), shape: [5, 3] },
        { values: randomData([3], 2), shape: [3] },
      ],
    );
  });

  for (const device of devices) {
    test(`${device.kind}: matches the composed ops; forward temporaries and saved tensors are released`, async () => {
      const xv = randomData([7, 9], 3);
      const wv = randomData([9], 4);
      const run = async (custom: boolean) => {
        const x = onDevice(xv, [7, 9], device).requiresGrad_();
        const w = onDevice(wv, [9], device).requiresGrad_();
        const before = device.memoryStats().liveBytes;
        const y = custom ? tanhScale(x, w, 'b') : tidy(() => mul(tanh(x), w));
        // Kept for backward: the output and tanh(x) (x and w are shared, not copied).
        if (custom) expect(device.memoryStats().liveBytes - before).toBeLessThanOrEqual(2 * 512);
        const loss = tidy(() => sumAll(exp(y)));
        backward(loss);
        dispose([y, loss]);
        const grads = { x: (await x.grad!.data()) as Float32Array, w: (await w.grad!.data()) as Float32Array };
        zeroGrad([x, w]);
        expect(device.memoryStats().liveBytes, `custom=${custom}`).toBe(before);
        return grads;
      };
      const a = await run(true);
      const b = await run(false);
      expectClose(a.x, b.x, { rtol: 1e-6 });
      expectClose(a.w, b.w, { rtol: 1e-6 });
    });
  }

  test('needsInputGrad, wrong gradient counts, non-tensor results', () => {
    const x = tensor([1, 2], [2], { device: cpu }).requiresGrad_();
    const w = tensor([3, 4], [2], { device: cpu });
    let seen: readonly boolean[] = [];
    const probe = defineFunction({
      name: 'probe',
      forward: (ctx, a: Tensor, b: Tensor) => ((seen = ctx.needsInputGrad), mul(a, b)),
      backward: (_ctx, g) => [g],
    });
    const y = probe(x, w);
    expect(seen).toEqual([true, false]);
    noGrad(() => probe(x, w));
    expect(seen).toEqual([false, false]);
    expect(() => backward(sumAll(y))).toThrow(/probe: backward returned 1 gradients for 2 tensor inputs/);
    const bad = defineFunction({ name: 'bad', forward: () => 3 as unknown as Tensor, backward: () => [] });
    expect(() => bad()).toThrow(/bad: forward must return a Tensor/);
  });

  test('a forward that returns its input gets its own output tensor', async () => {
    const x = tensor([1, 2], [2], { device: cpu }).requiresGrad_();
    const identity = defineFunction({ name: 'identity', forward: (_ctx, a: Tensor) => a, backward: (_ctx, g) => [mul(g, 2)] });
    const y = identity(x);
    expect(y).not.toBe(x);
    expect(x.gradFn).toBeNull();
    backward(sumAll(y));
    expect(Array.from(await x.grad!.data())).toEqual([2, 2]);
  });
});

describe('detach and zeroGrad', () => {
  test('detach shares storage and stops gradients', async () => {
    const x = tensor([1, 2, 3], [3], { device: cpu }).requiresGrad_();
    const d = detach(x);
    expect(d.storage).toBe(x.storage);
    expect(d.requiresGrad).toBe(false);
    const loss = sumAll(mul(mul(x, d), 1));
    backward(loss);
    expect(Array.from(await x.grad!.data())).toEqual([1, 2, 3]);
    const before = cpu.memoryStats().liveBytes;
    zeroGrad([x]);
    expect(x.grad).toBeNull();
    expect(cpu.memoryStats().liveBytes).toBeLessThan(before);
  });
});

describe('checkpoint', () => {
  for (const device of devices) {
    test(`${device.kind}: same gradients for inputs and the parameters fn reads; fewer live bytes after forward`, async () => {
      const wv = randomData([33, 17], 5);
      const xv = randomData([33, 17], 6);
      const w = onDevice(wv, [33, 17], device).requiresGrad_();
      // A block with several large intermediates (checkpoint disposes them; plain autograd keeps them).
      const block = (x: Tensor) => tanh(mul(exp(mul(x, w)), sub(x, w)));
      const run = (useCheckpoint: boolean) => {
        const x = onDevice(xv, [33, 17], device).requiresGrad_();
        const before = device.memoryStats().liveBytes;
        const y = useCheckpoint ? checkpoint(block, x) : block(x);
        const held = device.memoryStats().liveBytes - before;
        backward(sumAll(mul(y, y)));
        const grads = { x: x.grad!, w: w.grad! };
        w.grad = null;
        return { grads, held };
      };
      const plain = run(false);
      const ckpt = run(true);
      expect(ckpt.held).toBeLessThan(plain.held);
      expectClose((await ckpt.grads.x.data()) as Float32Array, (await plain.grads.x.data()) as Float32Array, { rtol: 1e-6 });
      expectClose((await ckpt.grads.w.data()) as Float32Array, (await plain.grads.w.data()) as Float32Array, { rtol: 1e-6 });
    });
  }

  test('gradcheck through a checkpoint; nested checkpoints', async () => {
    await gradcheck(
      (x, w) =>
        checkpoint(
          (a, b) =>
            mul(
              tanh(a),
              checkpoint((c) => exp(c), b),
            ),
          x!,
          w!,
        ),
      [
        { values: randomData([4, 3], 7), shape: [4, 3] },
        { values: randomData([3], 8), shape: [3] },
      ],
    );
  });

  test('parameters get gradients even when no input requires grad', async () => {
    const w = tensor([0.5, -1], [2], { device: cpu }).requiresGrad_();
    const x = tensor([2, 3], [2], { device: cpu });
    backward(sumAll(checkpoint((a) => mul(a, w), x)));
    expect(Array.from(await w.grad!.data())).toEqual([2, 3]);
  });

  test('a tensor with history read from outside fn is an error', () => {
    const w = tensor([1, 2], [2], { device: cpu }).requiresGrad_();
    const h = mul(w, 2);
    expect(() => checkpoint((a) => mul(a, h), tensor([1, 1], [2], { device: cpu }))).toThrow(/checkpoint: fn reads .* pass it as an input/);
  });
});
