import { Tensor } from '../../tensor';

/** A new handle on `x`'s storage with another shape, strides and offset (no copy; keeps the storage alive). */
export function view(x: Tensor, shape: readonly number[], strides: readonly number[], offset: number): Tensor {
  x.assertAlive();
  x.storage.retain();
  return new Tensor(x.storage, shape, strides, offset);
}
