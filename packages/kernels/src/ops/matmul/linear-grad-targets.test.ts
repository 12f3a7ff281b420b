/**
 * linear's backward writing its products where they end up (autograd's GradTargets): the input
 * gradients of several projections of one x summed by the GEMM itself (beta = 1), and the weight
 * gradient of a row slice (Mamba's in_proj) written into those rows of the weight's gradient.
 * Checked against the gradient worked out in plain f64 loops, on odd sizes, with overlapping
 * slices, x also read by another op, a non-leaf x, a bf16 weight, a second backward accumulating
 * into the first's gradient (which must keep its values), and on the native backend with and
 * without the system BLAS (each GEMM path takes `accumulate`).
 */
import { describe, expect, test } from 'bun:test';
import { backward } from '../../autograd/backward';
import { tensor } from '../../creation';
import { deviceLabel, type Device } from '../../device/device';
import type { DType } from '../../dtype';
import type { Tensor } from '../../tensor';
import { expectClose, randomData, testDevices } from '../../testing';
import { add, mul } from '../elementwise/elementwise';
import { cast, narrow } from '../layout/layout';
import { sumAll } from '../reduce/reduce';
import { linear } from './matmul';

const OUT = 37;
const IN = 19;
const BATCH = 2;
// 34 rows: ≥ 32, so a bf16 weight's products take the widen-then-BLAS path on the native backend.
const SEQ = 17;
const ROWS = BATCH * SEQ;
/** Row slices of the weight, each projected from x on its own; the last overlaps two others. */
const SLICES = [
  { start: 0, size: 7 },
  { start: 7, size: 13 },
  { start: 20, size: 17 },
  { start: 5, size: 4 },
];
const xData = randomData([BATCH, SEQ, IN], 1);
const wData = randomData([OUT, IN], 2);
const coef = SLICES.map(({ size }, k) => randomData([BATCH, SEQ, size], 10 + k));
const xCoef = randomData([BATCH, SEQ, IN], 3);
const X_SCALE = 3;

/** loss = Σ_k sum(linear(x, W[slice k]) ⊙ c_k) + sum(x ⊙ c_x), x = X_SCALE·x0 when `nonLeaf`. */
function loss(x0: Tensor, w: Tensor, nonLeaf: boolean): Tensor {
  const device = x0.device;
  const x = nonLeaf ? mul(x0, X_SCALE) : x0;
  const terms = SLICES.map(({ start, size }, k) => sumAll(mul(linear(x, narrow(w, 0, start, size)), tensor(coef[k]!, [BATCH, SEQ, size], { device }))));
  terms.push(sumAll(mul(x, tensor(xCoef, [BATCH, SEQ, IN], { device }))));
  return terms.reduce((a, b) => add(a, b));
}

/** ∂loss/∂x0 and ∂loss/∂W in f64 (W as stored: bf16-rounded when `weights` are). */
function expected(weights: Float32Array, nonLeaf: boolean): { dx: Float64Array; dw: Float64Array } {
  const dx = new Float64Array(ROWS * IN);
  const dw = new Float64Array(OUT * IN);
  SLICES.forEach(({ start, size }, k) => {
    const c = coef[k]!;
    for (let r = 0; r < ROWS; r++) {
      for (let o = 0; o < size; o++) {
        const g = c[r * size + o]!;
        for (let i = 0; i < IN; i++) {
          dx[r * IN + i]! += g * weights[(start + o) * IN + i]!;
          dw[(start + o) * IN + i]! += g * xData[r * IN + i]! * (nonLeaf ? X_SCALE : 1);
        }
      }
    }
  });
  for (let i = 0; i < dx.length; i++) dx[i] = (dx[i]! + xCoef[i]!) * (nonLeaf ? X_SCALE : 1);
  return { dx, dw };
}

async function check(device: Device, dtype: DType, nonLeaf: boolean): Promise<void> {
  const x0 = tensor(xData, [BATCH, SEQ, IN], { device }).requiresGrad_(true);
  const w32 = tensor(wData, [OUT, IN], { device });
  const w = (dtype === 'f32' ? w32 : cast(w32, dtype)).requiresGrad_(true);
  const ref = expected(await w.toFloat32(), nonLeaf);
  const what = `${deviceLabel(device)} ${dtype}${nonLeaf ? ' non-leaf x' : ''}`;
  backward(loss(x0, w, nonLeaf));
  expectClose(await x0.grad!.toFloat32(), ref.dx, { rtol: 1e-5, what: `${what}: dx` });
  expectClose(await w.grad!.toFloat32(), ref.dw, { rtol: 1e-5, what: `${what}: dW` });
  // A second backward adds to the first's gradients without writing them in place.
  const first = [x0.grad!.share(), w.grad!.share()] as const;
  backward(loss(x0, w, nonLeaf));
  expectClose(
    await x0.grad!.toFloat32(),
    ref.dx.map((v) => 2 * v),
    { rtol: 1e-5, what: `${what}: dx twice` },
  );
  expectClose(
    await w.grad!.toFloat32(),
    ref.dw.map((v) => 2 * v),
    { rtol: 1e-5, what: `${what}: dW twice` },
  );
  expectClose(await first[0].toFloat32(), ref.dx, { rtol: 1e-5, what: `${what}: first dx kept` });
  expectClose(await first[1].toFloat32(), ref.dw, { rtol: 1e-5, what: `${what}: first dW kept` });
  for (const t of [...first, x0, w32, w]) t.dispose();
}

describe('linear backward into gradient buffers (row slices, summed input gradients)', async () => {
  for (const device of await testDevices()) {
    const lib = device.kind === 'cpu' ? device.native : null;
    for (const blas of lib ? [true, false] : [true]) {
      test(`${deviceLabel(device)}${lib ? (blas ? ' (system BLAS)' : ' (own GEMM)') : ''}: f32 and bf16 weights, leaf and non-leaf x`, async () => {
        lib?.symbols.nt_enable_blas(blas ? 1 : 0);
        try {
          for (const dtype of ['f32', 'bf16'] as const) for (const nonLeaf of [false, true]) await check(device, dtype, nonLeaf);
        } finally {
          lib?.symbols.nt_enable_blas(1);
        }
      });
    }
  }
  test('a gradient is still summed right where a slice has two consumers', async () => {
    for (const device of await testDevices()) {
      const w = tensor(wData, [OUT, IN], { device }).requiresGrad_(true);
      const x = tensor(xData, [ROWS, IN], { device });
      const slice = narrow(w, 0, 3, 11);
      backward(add(sumAll(linear(x, slice)), sumAll(mul(slice, 2))));
      const got = await w.grad!.toFloat32();
      for (let o = 0; o < OUT; o++) {
        for (let i = 0; i < IN; i++) {
          let want = 0;
          if (o >= 3 && o < 14) for (let r = 0; r < ROWS; r++) want += xData[r * IN + i]!;
          if (o >= 3 && o < 14) want += 2;
          expect(got[o * IN + i]!).toBeCloseTo(want, 4);
        }
      }
      w.dispose();
      x.dispose();
    }
  });
});
