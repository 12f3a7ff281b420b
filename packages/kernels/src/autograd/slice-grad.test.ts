/**
 * Gradients through `narrow` slices, which `backward()` writes into one buffer per input instead of
 * a full-size zero tensor per slice: disjoint and overlapping slices of a leaf, a leaf also read
 * whole, a non-leaf input, and accumulation into a gradient left by an earlier backward (never
 * written in place: a handle to it keeps its values). Exact sums of small integers, every device.
 */
import { describe, expect, test } from 'bun:test';
import { tensor } from '../creation';
import { deviceLabel } from '../device/device';
import { add, exp, mul } from '../ops/elementwise/elementwise';
import { narrow } from '../ops/layout/layout';
import { sumAll } from '../ops/reduce/reduce';
import type { Tensor } from '../tensor';
import { testDevices } from '../testing';
import { backward } from './backward';
import { noGrad } from './graph';

const ROWS = 6;
const COLS = 4;
const weights = Float32Array.from({ length: ROWS * COLS }, (_, i) => (i % 5) - 2);
/** Coefficients c_k [rows_k, COLS] of the loss Σ_k sum(narrow(w, 0, start_k, rows_k) ⊙ c_k) + sum(w ⊙ c_whole). */
const slices: { start: number; rows: number }[] = [
  { start: 0, rows: 2 },
  { start: 2, rows: 3 },
  { start: 1, rows: 2 }, // overlaps both
  { start: 5, rows: 1 },
];
const coef = (k: number, n: number) => Float32Array.from({ length: n }, (_, i) => ((i * 7 + k * 3) % 9) - 4);
const whole = coef(9, ROWS * COLS);

/** The gradient of the loss with respect to w, in plain arithmetic (times `times` backward calls). */
function expected(withWhole: boolean, times: number): Float32Array {
  const out = new Float32Array(ROWS * COLS);
  slices.forEach(({ start, rows }, k) => {
    const c = coef(k, rows * COLS);
    for (let i = 0; i < rows * COLS; i++) out[start * COLS + i]! += c[i]!;
  });
  if (withWhole) for (let i = 0; i < out.length; i++) out[i]! += whole[i]!;
  return out.map((v) => v * times);
}

function loss(w: Tensor, withWhole: boolean): Tensor {
  const terms = slices.map(({ start, rows }, k) => sumAll(mul(narrow(w, 0, start, rows), tensor(coef(k, rows * COLS), [rows, COLS], { device: w.device }))));
  if (withWhole) terms.push(sumAll(mul(w, tensor(whole, [ROWS, COLS], { device: w.device }))));
  return terms.reduce((a, b) => add(a, b));
}

describe('gradients through narrow slices', async () => {
  for (const device of await testDevices()) {
    test(`${deviceLabel(device)}: slices of a leaf, overlapping, with and without a whole read, accumulated over two backwards`, async () => {
      for (const withWhole of [false, true]) {
        const w = tensor(weights, [ROWS, COLS], { device }).requiresGrad_(true);
        backward(loss(w, withWhole));
        expect(Array.from(await w.grad!.toFloat32())).toEqual(Array.from(expected(withWhole, 1)));
        const first = w.grad!.share();
        backward(loss(w, withWhole));
        expect(Array.from(await w.grad!.toFloat32())).toEqual(Array.from(expected(withWhole, 2)));
        // The first backward's gradient was not written in place.
        expect(Array.from(await first.toFloat32())).toEqual(Array.from(expected(withWhole, 1)));
        first.dispose();
      }
    });
    test(`${deviceLabel(device)}: slices of a non-leaf`, async () => {
      const w = tensor(
        weights.map((v) => v / 4),
        [ROWS, COLS],
        { device },
      ).requiresGrad_(true);
      const e = exp(w);
      backward(loss(e, false));
      const values = await noGrad(() => exp(w)).toFloat32();
      const got = await w.grad!.toFloat32();
      const ref = expected(false, 1);
      for (let i = 0; i < got.length; i++) expect(got[i]!).toBeCloseTo(ref[i]! * values[i]!, 5);
    });
  }
});
