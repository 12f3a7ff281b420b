// WebGPU backward against the CPU backward for the families whose own tests check gradients only by
// finite differences on the CPU: elementwise, layout, reductions, matmul.
import { describe, test } from 'bun:test';
import { expectBackwardMatches, randomData, testGpu } from '../testing';
import { add, clamp, div, exp, maximum, mul, pow, silu, softplus, sub, tanh, where, gt, relu2, sigmoid, sqrt, abs } from '../ops/elementwise/elementwise';
import { expand } from '../ops/layout/broadcast';
import { cast, concat, narrow, permute, reshape, transpose } from '../ops/layout/layout';
import { max, mean, sum } from '../ops/reduce/reduce';
import { linear, matmul } from '../ops/matmul/matmul';

const gpu = await testGpu();
const input = (shape: number[], seed: number, positive = false) => ({ values: randomData(shape, seed, { positive }), shape });

describe.if(gpu !== null)('backward on WebGPU equals backward on the CPU reference', () => {
  test('unary ops', async () => {
    const x = [input([7, 13], 1)];
    await expectBackwardMatches(gpu!, (a) => add(add(silu(a!), softplus(a!)), add(tanh(a!), mul(sigmoid(a!), relu2(a!)))), x, {
      rtol: 2e-6,
      what: 'unary mix',
    });
    await expectBackwardMatches(gpu!, (a) => add(exp(clamp(a!, -1, 1.5)), abs(a!)), x, { rtol: 2e-6, what: 'exp/clamp/abs' });
    await expectBackwardMatches(gpu!, (a) => add(sqrt(a!), pow(a!, 1.7)), [input([5, 9], 2, true)], { rtol: 2e-6, what: 'sqrt/pow' });
  });

  test('broadcasting binary ops and where', async () => {
    const a = input([5, 1, 11], 3);
    const b = input([3, 1], 4, true);
    await expectBackwardMatches(gpu!, (x, y) => div(mul(sub(x!, y!), add(x!, 2)), y!), [a, b], { rtol: 2e-6, what: 'sub/mul/div' });
    await expectBackwardMatches(gpu!, (x, y) => maximum(x!, y!), [a, b], { what: 'maximum' });
    await expectBackwardMatches(gpu!, (x, y) => where(gt(x!, 0), x!, mul(y!, 3)), [a, b], { what: 'where' });
  });

  test('layout ops', async () => {
    const a = input([3, 4, 5], 5);
    const b = input([3, 2, 5], 6);
    await expectBackwardMatches(gpu!, (x, y) => concat([permute(x!, [0, 1, 2]), narrow(y!, 1, 1, 1)], 1), [a, b], { what: 'concat/narrow' });
    await expectBackwardMatches(gpu!, (x) => mul(reshape(transpose(x!, 0, 2), [5, 12]), expand(reshape(narrow(x!, 2, 0, 1), [1, 12]), [5, 12])), [a], {
      what: 'transpose/reshape/expand',
    });
    await expectBackwardMatches(gpu!, (x) => cast(cast(x!, 'bf16'), 'f32'), [a], { what: 'cast' });
  });

  test('reductions', async () => {
    const a = input([4, 7, 9], 7);
    await expectBackwardMatches(gpu!, (x) => sum(x!, [0, 2]), [a], { rtol: 2e-6, what: 'sum' });
    await expectBackwardMatches(gpu!, (x) => mean(x!, 1, { keepdim: true }), [a], { rtol: 2e-6, what: 'mean' });
    await expectBackwardMatches(gpu!, (x) => max(x!, -1), [a], { what: 'max' });
  });

  test('matmul and linear (batched, transposed, bias)', async () => {
    const a = input([2, 5, 7], 8);
    const b = input([7, 9], 9);
    const w = input([9, 7], 10);
    const bias = input([9], 11);
    await expectBackwardMatches(gpu!, (x, y) => matmul(x!, y!), [a, b], { rtol: 1e-5, what: 'matmul' });
    await expectBackwardMatches(gpu!, (x, y, z) => linear(x!, y!, z!), [a, w, bias], { rtol: 1e-5, what: 'linear' });
    await expectBackwardMatches(gpu!, (x, y) => matmul(x!, y!, { transA: true, transB: true }), [input([3, 7, 5], 12), input([4, 7], 13)], {
      rtol: 1e-5,
      what: 'matmul transA/transB',
    });
  });
});
