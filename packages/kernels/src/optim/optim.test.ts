import { describe, expect, test } from 'bun:test';
import { tensor } from '../creation';
import { getCpuDevice, type Device } from '../device/device';
import type { WebGpuDevice } from '../device/webgpu-device';
import type { Tensor } from '../tensor';
import { noGrad } from '../autograd/graph';
import { narrow, transpose } from '../ops/layout/layout';
import { linear } from '../ops/matmul/matmul';
import { expectClose, randomData, testDevices, withBindingLimit } from '../testing';
import { AdamW } from './adamw';
import { clipCoefficient, clipGradNorm } from './clip';
import { decayGroups, disposeStateDict } from './optimizer';
import { SGD } from './sgd';

const devices = await testDevices();
const cpu = getCpuDevice();

const SHAPES = [[13, 7], [7]] as const;
const STEPS = 4;

/** Seeded parameters and per-step gradients (the third step's are tiny, so clipping is off there). */
function problem() {
  const params = SHAPES.map((s, i) => randomData(s, 100 + i));
  const grads = Array.from({ length: STEPS }, (_, t) => SHAPES.map((s, i) => randomData(s, 200 + 10 * t + i, { scale: t === 2 ? 0.01 : 1 })));
  return { params, grads };
}

function setGrads(ps: readonly Tensor[], values: readonly Float32Array[]): void {
  ps.forEach((p, i) => {
    p.grad?.dispose();
    p.grad = tensor(values[i]!, p.shape, { device: p.device });
  });
}

/** Clipping coefficient of PyTorch's clip_grad_norm_, in f64. */
function clipCoef(grads: readonly Float64Array[], maxNorm: number): { norm: number; coef: number } {
  const norm = Math.sqrt(grads.reduce((s, g) => s + g.reduce((a, x) => a + x * x, 0), 0));
  return { norm, coef: Math.min(1, maxNorm / (norm + 1e-6)) };
}

interface Hyper {
  lr: number;
  wd: number;
}

/** f64 AdamW written out from the paper / PyTorch docs, independent of the kernels. */
function adamwReference(p0: Float32Array[], grads: Float32Array[][], hyper: Hyper[], b1: number, b2: number, eps: number, maxNorm: number) {
  const p = p0.map((v) => Float64Array.from(v));
  const m = p0.map((v) => new Float64Array(v.length));
  const v = p0.map((x) => new Float64Array(x.length));
  const norms: number[] = [];
  grads.forEach((gs, s) => {
    const t = s + 1;
    const g64 = gs.map((g) => Float64Array.from(g));
    const { norm, coef } = clipCoef(g64, maxNorm);
    norms.push(norm);
    p.forEach((pk, k) => {
      const { lr, wd } = hyper[k]!;
      for (let i = 0; i < pk.length; i++) {
        const g = g64[k]![i]! * coef;
        pk[i] = pk[i]! * (1 - lr * wd);
        m[k]![i] = b1 * m[k]![i]! + (1 - b1) * g;
        v[k]![i] = b2 * v[k]![i]! + (1 - b2) * g * g;
        const mHat = m[k]![i]! / (1 - b1 ** t);
        const vHat = v[k]![i]! / (1 - b2 ** t);
        pk[i] = pk[i]! - (lr * mHat) / (Math.sqrt(vHat) + eps);
      }
    });
  });
  return { p, m, v, norms };
}

/** f64 SGD with momentum (PyTorch semantics). */
function sgdReference(p0: Float32Array[], grads: Float32Array[][], lr: number, mu: number, damp: number, wd: number, nesterov: boolean) {
  const p = p0.map((v) => Float64Array.from(v));
  const b = p0.map((v) => new Float64Array(v.length));
  grads.forEach((gs, s) => {
    p.forEach((pk, k) => {
      for (let i = 0; i < pk.length; i++) {
        let d = gs[k]![i]! + wd * pk[i]!;
        b[k]![i] = s === 0 ? d : mu * b[k]![i]! + (1 - damp) * d;
        d = nesterov ? d + mu * b[k]![i]! : b[k]![i]!;
        pk[i] = pk[i]! - lr * d;
      }
    });
  });
  return { p, b };
}

/** Compares parameter updates (p − p0): a wrong update is then large against the tolerance. */
function expectUpdates(got: Float32Array, want: Float64Array, p0: Float32Array, what: string): void {
  expectClose(
    got.map((x, i) => x - p0[i]!),
    want.map((x, i) => x - p0[i]!),
    { rtol: 2e-5, what },
  );
}

describe('AdamW', () => {
  test('one scalar step computed by hand', async () => {
    const p = tensor([1], [1], { device: cpu });
    p.grad = tensor([0.5], [1], { device: cpu });
    new AdamW([p], { lr: 0.1, weightDecay: 0.01 }).step();
    // p·(1 − 0.1·0.01) − 0.1 · (0.05/0.1) / (sqrt(0.00025/0.001) + 1e-8) = 0.999 − 0.0999999980
    expect((await p.data())[0]).toBeCloseTo(0.899000002, 6);
  });

  for (const device of devices) {
    test(`${device.kind}: ${STEPS} steps with clipping, decay and no-decay groups match an f64 reference`, async () => {
      const { params, grads } = problem();
      const ps = params.map((v, i) => tensor(v, SHAPES[i]!, { device }));
      const groups = decayGroups(ps, 0.1);
      groups[1] = { ...groups[1]!, lr: 0.03 } as (typeof groups)[1];
      const opt = new AdamW(groups, { lr: 0.01, beta1: 0.8, beta2: 0.95, eps: 1e-6 });
      const norms: number[] = [];
      for (const g of grads) {
        setGrads(ps, g);
        norms.push(await clipGradNorm(ps, 2.5).item());
        opt.step();
      }
      const ref = adamwReference(
        params,
        grads,
        [
          { lr: 0.01, wd: 0.1 },
          { lr: 0.03, wd: 0 },
        ],
        0.8,
        0.95,
        1e-6,
        2.5,
      );
      expect(ref.norms.some((n) => n < 2.5) && ref.norms.some((n) => n > 2.5)).toBe(true);
      expectClose(norms, ref.norms, { rtol: 1e-6, what: 'norms' });
      for (let k = 0; k < ps.length; k++) {
        expectUpdates((await ps[k]!.data()) as Float32Array, ref.p[k]!, params[k]!, `param ${k}`);
        const state = opt.stateOf(ps[k]!)!;
        expect(state.step).toBe(STEPS);
        expectClose((await state.buffers.expAvg!.data()) as Float32Array, ref.m[k]!, { rtol: 1e-5, what: `m ${k}` });
        expectClose((await state.buffers.expAvgSq!.data()) as Float32Array, ref.v[k]!, { rtol: 1e-5, what: `v ${k}` });
      }
      opt.dispose();
    });
  }

  test('bf16 parameters and bad hyperparameters are rejected with clear errors', () => {
    const p = tensor([1, 2], [2], { dtype: 'bf16', device: cpu });
    expect(() => new AdamW([p])).toThrow(/AdamW: parameter .* is bf16; optimizers update f32 parameters/);
    expect(() => new AdamW([tensor([1], [1], { device: cpu })], { beta1: 1 })).toThrow(/AdamW: group 0: beta1 must be in \[0, 1\)/);
  });
});

describe('SGD', () => {
  for (const device of devices) {
    for (const nesterov of [false, true]) {
      test(`${device.kind}: momentum${nesterov ? ' + Nesterov' : ' + dampening'} and weight decay match an f64 reference`, async () => {
        const { params, grads } = problem();
        const ps = params.map((v, i) => tensor(v, SHAPES[i]!, { device }));
        const damp = nesterov ? 0 : 0.3;
        const opt = new SGD(ps, { lr: 0.05, momentum: 0.9, dampening: damp, weightDecay: 0.01, nesterov });
        for (const g of grads) {
          setGrads(ps, g);
          opt.step();
        }
        const ref = sgdReference(params, grads, 0.05, 0.9, damp, 0.01, nesterov);
        for (let k = 0; k < ps.length; k++) {
          expectUpdates((await ps[k]!.data()) as Float32Array, ref.p[k]!, params[k]!, `param ${k}`);
          expectClose((await opt.stateOf(ps[k]!)!.buffers.momentum!.data()) as Float32Array, ref.b[k]!, { rtol: 1e-5 });
        }
        opt.dispose();
      });
    }
  }

  test('plain SGD keeps no state buffers; lrScale scales the step', async () => {
    const p = tensor([1, 2], [2], { device: cpu });
    p.grad = tensor([1, -1], [2], { device: cpu });
    const opt = new SGD([p], { lr: 0.5 });
    opt.step({ lrScale: 0.5 });
    expect(Array.from(await p.data())).toEqual([0.75, 2.25]);
    expect(Object.keys(opt.stateOf(p)!.buffers)).toEqual([]);
    expect(() => new SGD([p], { lr: 0.1, nesterov: true })).toThrow(/nesterov needs momentum > 0/);
  });
});

describe('in-place updates', () => {
  for (const device of devices) {
    test(`${device.kind}: a step drops copies kept for the parameter (a frozen weight's packed matmul texture)`, async () => {
      const w = tensor(randomData([300, 40], 7), [300, 40], { device });
      const x = tensor(randomData([1, 40], 8), [1, 40], { device });
      const product = async () => {
        w.requiresGrad_(false); // frozen: matmul keeps a packed copy of it
        const y = (await noGrad(() => linear(x, w)).data()) as Float32Array;
        w.requiresGrad_(true);
        return y;
      };
      await product();
      const sgd = new SGD([w], { lr: 0.5 });
      w.grad = tensor(randomData([300, 40], 9), [300, 40], { device });
      sgd.step();
      const after = await product();
      const [wHost, xHost] = [await w.data(), await x.data()];
      const expected = (await noGrad(() => linear(tensor(wHost, [300, 40], { device: cpu }), tensor(xHost, [1, 40], { device: cpu }))).data()) as Float32Array;
      expectClose(after, expected, { rtol: 1e-5, what: 'after the step' });
    });
  }
});

describe('clipGradNorm', () => {
  for (const device of devices) {
    test(`${device.kind}: global norm over shared and strided gradients; no scaling below maxNorm`, async () => {
      const a = tensor(new Float32Array(4), [2, 2], { device });
      const b = tensor(new Float32Array(4), [2, 2], { device });
      // Both gradients are handles to one storage (as autograd can produce); b's is a transposed view.
      const shared = tensor(Float32Array.from([3, 0, 4, 0]), [2, 2], { device });
      a.grad = shared.share();
      b.grad = transpose(shared);
      const norm = clipGradNorm([a, b], 1);
      expect(await norm.item()).toBeCloseTo(Math.sqrt(50), 5);
      const s = 1 / (Math.sqrt(50) + 1e-6);
      expectClose((await a.grad!.data()) as Float32Array, [3 * s, 0, 4 * s, 0], { rtol: 1e-6 });
      expectClose((await b.grad!.data()) as Float32Array, [3 * s, 4 * s, 0, 0], { rtol: 1e-6 });
      // Scaling in place would have scaled the shared storage twice.
      expect(Array.from(await shared.data())).toEqual([3, 0, 4, 0]);
      const again = clipGradNorm([a, b], 10);
      expect(await again.item()).toBeCloseTo(1, 5);
      expectClose((await b.grad!.data()) as Float32Array, [3 * s, 4 * s, 0, 0], { rtol: 1e-6 });
    });
  }

  for (const device of devices) {
    test(`${device.kind}${device.kind === 'cpu' && device.native ? ':native' : ''}: scale: false only measures; AdamW's gradScale equals stepping on scaled gradients`, async () => {
      const { params, grads } = problem();
      const run = async (fold: boolean) => {
        const ps = params.map((v, i) => tensor(v, SHAPES[i]!, { device }));
        const opt = new AdamW(ps, { lr: 0.05, weightDecay: 0.1 });
        const norms: number[] = [];
        for (let t = 0; t < STEPS; t++) {
          setGrads(ps, grads[t]!);
          const norm = clipGradNorm(ps, 1, { scale: false });
          norms.push(await norm.item());
          norm.dispose();
          // scale: false left the gradients as they were.
          for (const [i, p] of ps.entries()) expect(Array.from(await p.grad!.toFloat32())).toEqual(Array.from(grads[t]![i]!));
          const coef = clipCoefficient(norms[t]!, 1);
          if (fold) opt.step({ gradScale: coef });
          else {
            // As the clip's kernels scale: the reference in f64, native and WebGPU by the coefficient as an f32.
            const f32Coef = device.kind === 'cpu' && !device.native ? coef : Math.fround(coef);
            setGrads(
              ps,
              grads[t]!.map((g) => g.map((v) => Math.fround(v * f32Coef))),
            );
            opt.step();
          }
        }
        return { norms, values: await Promise.all(ps.map((p) => p.toFloat32())) };
      };
      const [folded, scaled] = [await run(true), await run(false)];
      expect(folded.norms.some((n) => n > 1) && folded.norms.some((n) => n < 1)).toBe(true);
      // Bit for bit on the CPU kernels (the same f32 products); WebGPU scales a copy first.
      folded.values.forEach((v, i) => expect(Array.from(v)).toEqual(Array.from(scaled.values[i]!)));
      expect(() => new AdamW([tensor([1], [1], { device })]).step({ gradScale: -1 })).toThrow(/gradScale must be finite and ≥ 0, got -1/);
    });
  }

  for (const device of devices.filter((d) => d.kind === 'cpu' && d.native)) {
    test('native: gradients large enough to split across threads, at an offset, match the reference', async () => {
      // 300 001 elements: above the native kernels' threading threshold, odd, and read at offset 3.
      const values = randomData([300_004], 7);
      const run = (d: Device) => {
        const p = tensor(new Float32Array(300_001), [300_001], { device: d });
        const storage = tensor(values, [300_004], { device: d });
        p.grad = narrow(storage, 0, 3, 300_001);
        storage.dispose();
        return { norm: clipGradNorm([p], 3), p };
      };
      const ref = run(cpu);
      const got = run(device);
      expect(await got.norm.item()).toBeCloseTo(await ref.norm.item(), 3);
      expectClose((await got.p.grad!.data()) as Float32Array, (await ref.p.grad!.data()) as Float32Array, { rtol: 1e-6 });
    });
  }

  test.if(devices.some((d) => d.kind === 'webgpu'))('webgpu: gradients above one storage binding are reduced and scaled window by window', async () => {
    const g = devices.find((d) => d.kind === 'webgpu') as WebGpuDevice;
    const values = randomData([5000], 3);
    const run = (d: Device) => {
      const p = tensor(new Float32Array(5000), [5000], { device: d });
      p.grad = tensor(values, [5000], { device: d });
      return { norm: clipGradNorm([p], 3), p };
    };
    const ref = run(cpu);
    const got = await withBindingLimit(g, 4096, () => run(g));
    expectClose([await got.norm.item()], [await ref.norm.item()], { rtol: 1e-6 });
    expectClose((await got.p.grad!.data()) as Float32Array, (await ref.p.grad!.data()) as Float32Array, { rtol: 1e-6 });
  });
});

describe('state dict', () => {
  for (const device of devices) {
    test(`${device.kind}: save → load into a fresh optimizer → identical subsequent steps`, async () => {
      const { params, grads } = problem();
      const make = (values: Float32Array[]) => values.map((v, i) => tensor(v, SHAPES[i]!, { device }));
      const a = make(params);
      const optA = new AdamW(decayGroups(a, 0.05), { lr: 0.02 });
      for (const g of grads.slice(0, 2)) {
        setGrads(a, g);
        optA.step();
      }
      const dict = optA.stateDict();
      const snapshot = await dict.params[0]!.buffers.expAvg!.data();
      const b = make(await Promise.all(a.map(async (p) => (await p.data()) as Float32Array)));
      const optB = new AdamW(decayGroups(b, 0.5), { lr: 1 });
      optB.loadStateDict(dict);
      expect(optB.stepCount).toBe(2);
      expect(optB.groups[0]!.lr).toBe(0.02);
      expect(optB.groups[0]!.weightDecay).toBe(0.05);
      for (const g of grads.slice(2)) {
        setGrads(a, g);
        setGrads(b, g);
        optA.step();
        optB.step();
      }
      // The snapshot did not move with the live state.
      expect(Array.from(await dict.params[0]!.buffers.expAvg!.data())).toEqual(Array.from(snapshot));
      disposeStateDict(dict);
      for (let k = 0; k < a.length; k++) expect(Array.from(await b[k]!.data())).toEqual(Array.from(await a[k]!.data()));
      expect(optB.stateOf(b[0]!)!.step).toBe(STEPS);
      optA.dispose();
      optB.dispose();
    });
  }

  test('mismatched state is rejected', () => {
    const p = tensor([1, 2], [2], { device: cpu });
    p.grad = tensor([1, 1], [2], { device: cpu });
    const opt = new AdamW([p]);
    opt.step();
    const q = tensor([1, 2, 3], [3], { device: cpu });
    expect(() => new AdamW([q]).loadStateDict(opt.stateDict())).toThrow(/AdamW.loadStateDict: state 'expAvg' of parameter 0 is .*, expected f32 \[3\]/);
    expect(() => new AdamW([q, p]).loadStateDict(opt.stateDict())).toThrow(/1 groups \/ 1 parameters, expected 1 \/ 2/);
  });
});
