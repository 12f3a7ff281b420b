// full/zeros on the CPU backend fill the fresh host buffer in place: every element and dtype must
// come out right even when allocations are poisoned (the buffer is not zero then).
import { expect, test } from 'bun:test';
import { full, zeros } from './creation';
import { getCpuDevice } from './device/device';
import { poisoned } from './testing';

test('full and zeros on the CPU write every element, poisoned or not, in every dtype', async () => {
  const device = getCpuDevice();
  for (const poison of [false, true]) {
    const run = <T>(fn: () => T) => (poison ? poisoned(device, fn) : fn());
    const z = run(() => zeros([3, 5], { device }));
    expect([...(await z.data<'f32'>())]).toEqual(Array(15).fill(0));
    const negZero = run(() => full([7], -0, { device }));
    expect([...(await negZero.data<'f32'>())].every((v) => Object.is(v, -0))).toBe(true);
    const nan = run(() => full([3], Number.NaN, { device }));
    expect([...(await nan.data<'f32'>())].every(Number.isNaN)).toBe(true);
    // bf16 with an odd count: the last word holds one element.
    const half = run(() => full([5], 1.5, { dtype: 'bf16', device }));
    expect([...(await half.data<'bf16'>())]).toEqual(Array(5).fill(0x3fc0)); // 1.5 in bf16
    const ints = run(() => full([3], -7, { dtype: 'i32', device }));
    expect([...(await ints.data<'i32'>())]).toEqual([-7, -7, -7]);
    const empty0 = run(() => zeros([0, 4], { device }));
    expect(empty0.size).toBe(0);
    for (const t of [z, negZero, nan, half, ints, empty0]) t.dispose();
  }
});
