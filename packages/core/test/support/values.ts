import { expect } from 'bun:test';

/** Exact equality of two value arrays, naming the tensor and the first differing element. */
export function expectValues(what: string, got: ArrayLike<number>, want: ArrayLike<number>): void {
  expect({ what, length: got.length }).toEqual({ what, length: want.length });
  for (let i = 0; i < want.length; i++) {
    if (!Object.is(got[i], want[i])) throw new Error(`${what}: element ${i} is ${got[i]}, expected ${want[i]}`);
  }
}

/** True when the arrays differ somewhere. */
export function differ(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return true;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return true;
  return false;
}
