import { describe, expect, test } from 'bun:test';
import { tensor } from '../creation';
import { getCpuDevice } from '../device/device';
import { tidy } from './scope';

describe('tidy', () => {
  const device = getCpuDevice();

  test('keeps the tensors reachable from its result: arrays, maps, plain objects and class instances', () => {
    class Output {
      constructor(
        readonly logits: ReturnType<typeof tensor>,
        readonly extra: { hidden: ReturnType<typeof tensor>[] },
        readonly host: Float32Array,
      ) {}
    }
    let dropped!: ReturnType<typeof tensor>;
    const out = tidy(() => {
      dropped = tensor([1, 2], [2], { device });
      return new Output(tensor([3], [1], { device }), { hidden: [tensor([4], [1], { device })] }, new Float32Array(1 << 20));
    });
    expect(dropped.isDisposed).toBe(true);
    expect(out.logits.isDisposed).toBe(false);
    expect(out.extra.hidden[0]!.isDisposed).toBe(false);
    out.logits.dispose();
    out.extra.hidden[0]!.dispose();
  });
});
