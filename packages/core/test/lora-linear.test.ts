/**
 * A LoRA adapter on one Linear (odd sizes, bias): every path — forward, per-part rows, the fused
 * decode projection with each prologue/epilogue — adds the same term; the row slices share one
 * dropout mask; the f64 reference is W x + b + (alpha / r) B A x.
 */
import { describe, expect, test } from 'bun:test';
import { concat, getCpuDevice, noGrad, tensor, type Device } from '@nemotron-ts/kernels';
import { expectClose, randomData, testDevices } from '@nemotron-ts/kernels/testing';
import { Linear, LoraAdapter, RMSNorm } from '../src';

const devices = await testDevices();
const [IN, OUT, R, ROWS] = [13, 19, 3, 5];

function layer(device: Device, dropout = 0, seed = 1): { linear: Linear; adapter: LoraAdapter } {
  const linear = new Linear(IN, OUT, { bias: true, device });
  const set = (module: Linear, name: string, shape: number[], s: number) => {
    const t = tensor(randomData(shape, s, { scale: 0.5 }), shape, { device });
    module.setTensor(name, t);
    t.dispose();
  };
  set(linear, 'weight', [OUT, IN], 2);
  set(linear, 'bias', [OUT], 3);
  const adapter = new LoraAdapter(linear, { r: R, alpha: 5, dropout, seed });
  set(adapter.loraB, 'weight', [OUT, R], 4);
  linear.attachAdapter(adapter);
  return { linear, adapter };
}

/** f64 W x + b + (alpha / r) B A x per row. */
async function reference(linear: Linear, adapter: LoraAdapter, x: Float32Array): Promise<Float64Array> {
  const [w, b, a, bb] = await Promise.all([linear.weight, linear.bias!, adapter.loraA.weight, adapter.loraB.weight].map((t) => t.toFloat32()));
  const out = new Float64Array(ROWS * OUT);
  for (let n = 0; n < ROWS; n++) {
    const ax = Array.from({ length: R }, (_, k) => {
      let s = 0;
      for (let i = 0; i < IN; i++) s += a![k * IN + i]! * x[n * IN + i]!;
      return s;
    });
    for (let o = 0; o < OUT; o++) {
      let s = b![o]!;
      for (let i = 0; i < IN; i++) s += w![o * IN + i]! * x[n * IN + i]!;
      for (let k = 0; k < R; k++) s += adapter.scale * bb![o * R + k]! * ax[k]!;
      out[n * OUT + o] = s;
    }
  }
  return out;
}

describe('Linear with a LoRA adapter', () => {
  for (const device of devices) {
    test(`${device.kind}: forward, rows and fused (norm, relu2, residual) add the term`, async () => {
      const { linear, adapter } = layer(device);
      const xv = randomData([ROWS, IN], 5);
      const x = tensor(xv, [ROWS, IN], { device });
      const expected = await reference(linear, adapter, xv);
      const forward = noGrad(() => linear.forward(x));
      expectClose(await forward.toFloat32(), expected, { rtol: 1e-5, what: 'forward' });
      const parts = noGrad(() => {
        const rows = linear.rows(x);
        return concat([rows(0, 4), rows(4, 11), rows(15, 4)], -1);
      });
      expectClose(await parts.toFloat32(), expected, { rtol: 1e-5, what: 'rows' });
      // fused with a norm prologue, relu2 and a residual: against the unfused composition.
      const norm = new RMSNorm(IN, 1e-5, { device });
      const nw = tensor(randomData([IN], 6, { positive: true }), [IN], { device });
      norm.setTensor('weight', nw);
      const residual = tensor(randomData([ROWS, OUT], 7), [ROWS, OUT], { device });
      const normed = noGrad(() => norm.forward(x));
      const plain = await reference(linear, adapter, await normed.toFloat32());
      const residualValues = await residual.toFloat32();
      const fusedNorm = noGrad(() => linear.fused(x, { norm: { weight: norm.weight, eps: norm.eps } }));
      expectClose(await fusedNorm.toFloat32(), plain, { rtol: 1e-4, what: 'fused norm' });
      const fusedAll = noGrad(() => linear.fused(x, { norm: { weight: norm.weight, eps: norm.eps }, activation: 'relu2', residual }));
      expectClose(
        await fusedAll.toFloat32(),
        plain.map((v, i) => residualValues[i]! + Math.max(v, 0) ** 2),
        { rtol: 1e-4, what: 'fused relu2 + residual' },
      );
      const fusedResidual = noGrad(() => linear.fused(x, { residual }));
      expectClose(
        await fusedResidual.toFloat32(),
        expected.map((v, i) => v + residualValues[i]!),
        { rtol: 1e-5, what: 'fused residual' },
      );
      for (const t of [x, forward, parts, nw, residual, normed, fusedNorm, fusedAll, fusedResidual]) t.dispose();
      norm.dispose();
      linear.dispose();
    });
  }

  test('in training mode the row slices share one dropout mask; eval mode drops nothing', async () => {
    const cpu = getCpuDevice();
    const one = layer(cpu, 0.5, 9);
    const two = layer(cpu, 0.5, 9);
    const x = tensor(randomData([ROWS, IN], 5), [ROWS, IN], { device: cpu });
    const whole = noGrad(() => one.linear.forward(x));
    const parts = noGrad(() => {
      const rows = two.linear.rows(x);
      return concat([rows(0, 7), rows(7, 12)], -1);
    });
    expectClose(await parts.toFloat32(), await whole.toFloat32(), { rtol: 1e-6, what: 'rows vs forward, same seed' });
    const again = noGrad(() => one.linear.forward(x));
    expect(await again.toFloat32()).not.toEqual(await whole.toFloat32());
    one.linear.eval();
    const evaluated = noGrad(() => one.linear.forward(x));
    expectClose(await evaluated.toFloat32(), await reference(one.linear, one.adapter, await x.toFloat32()), { rtol: 1e-5, what: 'eval' });
    for (const t of [x, whole, parts, again, evaluated]) t.dispose();
    one.linear.dispose();
    two.linear.dispose();
  });

  test('one adapter per layer; detach returns it and the layer is plain again', async () => {
    const { linear, adapter } = layer(getCpuDevice());
    expect(() => linear.attachAdapter(adapter)).toThrow(/already has an adapter/);
    expect(linear.namedParameters().map(([n]) => n)).toEqual(['weight', 'bias', 'lora_A.weight', 'lora_B.weight']);
    expect(linear.detachAdapter()).toBe(adapter);
    expect(linear.adapter).toBeNull();
    expect(linear.namedParameters().map(([n]) => n)).toEqual(['weight', 'bias']);
    expect(() => linear.detachAdapter()).toThrow(/has no adapter/);
    adapter.dispose();
    linear.dispose();
  });
});
