/**
 * Elementwise ops with NumPy broadcasting: unary math, binary arithmetic and comparisons (either
 * side may be a plain number, passed to the kernel as a uniform, never uploaded), `where`, and the
 * fused derivative kernels their backward rules use. Float results are f32; integer ops on integer
 * tensors keep their dtype.
 */
import { isGradEnabled, record } from '../../autograd/graph';
import type { Tensor } from '../../tensor';
import { sumTo } from '../layout/broadcast';
import { BINARY, UNARY, UNARY_GRAD, type BinaryOp, type ElementwiseDef, type UnaryOp } from './definitions';
import { elementwise as run } from './elementwise-kernel';

export type { BinaryOp, UnaryOp } from './definitions';

/** Applies a unary op. `p0`, `p1` are the op's scalar parameters (clamp bounds, exponent). */
export function unary(op: UnaryOp, x: Tensor, p0 = 0, p1 = 0): Tensor {
  const out = run(op, UNARY[op], ['x'], [x], [p0, p1]);
  if (UNARY_GRAD[op]) record(op, out, [x], (g, [sx]) => [unaryGrad(op, sx!, g, p0, p1)], [x]);
  return out;
}

/**
 * Why {@link unaryInPlace} cannot write `x`, or null when it can: inference only (no graph may hold
 * `x`, so only under noGrad), a dense f32 host tensor (on WebGPU one buffer cannot be both the input
 * and the output of a dispatch).
 */
export function inPlaceRefusal(x: Tensor): string | null {
  if (isGradEnabled()) return 'is inference only: run it under noGrad()';
  if (x.device.kind !== 'cpu') return `needs a host tensor, got one on ${x.device.kind}`;
  if (!x.isContiguous || x.dtype !== 'f32') return `needs a dense f32 tensor, got ${x.dtype}${x.isContiguous ? '' : ' (strided)'}`;
  return null;
}

/**
 * Applies a unary op to `x` in place and returns it; throws where {@link inPlaceRefusal} says it
 * cannot. Saves the output buffer, e.g. the MLP's [L, intermediate] activation, a prefill's widest.
 */
export function unaryInPlace(op: UnaryOp, x: Tensor, p0 = 0, p1 = 0): Tensor {
  x.assertAlive(`${op} in place`);
  const refusal = inPlaceRefusal(x);
  if (refusal) throw new Error(`${op} in place ${refusal}`);
  run(op, UNARY[op], ['x'], [x], [p0, p1], { into: x });
  return x;
}

/** d(op(x))/dx · g as one fused kernel. */
export function unaryGrad(op: UnaryOp, x: Tensor, g: Tensor, p0 = 0, p1 = 0): Tensor {
  const def = UNARY_GRAD[op];
  if (!def) throw new Error(`${op} has no gradient`);
  return run(`${op}_grad`, def, ['x', 'g'], [x, g], [p0, p1]);
}

export const neg = (x: Tensor): Tensor => unary('neg', x);
export const abs = (x: Tensor): Tensor => unary('abs', x);
export const exp = (x: Tensor): Tensor => unary('exp', x);
export const log = (x: Tensor): Tensor => unary('log', x);
export const sqrt = (x: Tensor): Tensor => unary('sqrt', x);
export const rsqrt = (x: Tensor): Tensor => unary('rsqrt', x);
export const reciprocal = (x: Tensor): Tensor => unary('reciprocal', x);
export const square = (x: Tensor): Tensor => unary('square', x);
export const sigmoid = (x: Tensor): Tensor => unary('sigmoid', x);
export const silu = (x: Tensor): Tensor => unary('silu', x);
/** softplus(x) = log(1 + exp(x)), and x itself above the threshold 20 (PyTorch's default). */
export const softplus = (x: Tensor): Tensor => unary('softplus', x);
export const relu = (x: Tensor): Tensor => unary('relu', x);
/** relu(x)², the Nemotron-H MLP activation. */
export const relu2 = (x: Tensor): Tensor => unary('relu2', x);
export const tanh = (x: Tensor): Tensor => unary('tanh', x);
export const sign = (x: Tensor): Tensor => unary('sign', x);
/** 1 where the value is finite, 0 for NaN and ±Infinity. */
export const isFinite = (x: Tensor): Tensor => unary('isfinite', x);

export function clamp(x: Tensor, min = -Infinity, max = Infinity): Tensor {
  if (min > max) throw new Error(`clamp: min ${min} is above max ${max}`);
  return unary('clamp', x, min, max);
}

/** Applies a binary op with broadcasting; either operand may be a number. */
export function binary(op: BinaryOp, a: Tensor | number, b: Tensor | number): Tensor {
  const out = run(op, BINARY[op], ['a', 'b'], [a, b]);
  const rule = BINARY_RULES[op];
  if (rule) {
    const inputs = [a, b].filter((o): o is Tensor => typeof o !== 'number');
    record(
      op,
      out,
      inputs,
      (g, saved) => {
        const [sa, sb] = resolveSaved(a, b, saved);
        const grads: Tensor[] = [];
        if (typeof a !== 'number') grads.push(sumTo(rule.da(g, sa, sb), a.shape));
        if (typeof b !== 'number') grads.push(sumTo(rule.db(g, sa, sb), b.shape));
        return grads;
      },
      SAVES_NOTHING.has(op) ? [] : inputs,
    );
  }
  return out;
}

/** Ops whose backward needs only the upstream gradient. */
const SAVES_NOTHING = new Set<BinaryOp>(['add', 'sub']);

function resolveSaved(a: Tensor | number, b: Tensor | number, saved: readonly Tensor[]): [Tensor | number, Tensor | number] {
  if (saved.length === 0) return [0, 0];
  let k = 0;
  const sa = typeof a === 'number' ? a : saved[k++]!;
  const sb = typeof b === 'number' ? b : saved[k++]!;
  return [sa, sb];
}

/** Gradient rule for each operand, in terms of forward ops (broadcast dims are summed away by the caller). */
interface BinaryRule {
  da: (g: Tensor, a: Tensor | number, b: Tensor | number) => Tensor;
  db: (g: Tensor, a: Tensor | number, b: Tensor | number) => Tensor;
}

const BINARY_RULES: Partial<Record<BinaryOp, BinaryRule>> = {
  add: { da: (g) => g, db: (g) => g },
  sub: { da: (g) => g, db: (g) => neg(g) },
  mul: { da: (g, _a, b) => mul(g, b), db: (g, a) => mul(g, a) },
  div: { da: (g, _a, b) => div(g, b), db: (g, a, b) => neg(div(mul(g, a), typeof b === 'number' ? b * b : mul(b, b))) },
  pow: {
    da: (g, a, b) => mul(g, mul(b, pow(a, typeof b === 'number' ? b - 1 : sub(b, 1)))),
    db: (g, a, b) => mul(g, mul(pow(a, b), typeof a === 'number' ? Math.log(a) : log(a))),
  },
  maximum: { da: (g, a, b) => mul(g, ge(a, b)), db: (g, a, b) => mul(g, lt(a, b)) },
  minimum: { da: (g, a, b) => mul(g, le(a, b)), db: (g, a, b) => mul(g, gt(a, b)) },
};

export const add = (a: Tensor | number, b: Tensor | number): Tensor => binary('add', a, b);
export const sub = (a: Tensor | number, b: Tensor | number): Tensor => binary('sub', a, b);
export const mul = (a: Tensor | number, b: Tensor | number): Tensor => binary('mul', a, b);
export const div = (a: Tensor | number, b: Tensor | number): Tensor => binary('div', a, b);
export const pow = (a: Tensor | number, b: Tensor | number): Tensor => binary('pow', a, b);
export const maximum = (a: Tensor | number, b: Tensor | number): Tensor => binary('maximum', a, b);
export const minimum = (a: Tensor | number, b: Tensor | number): Tensor => binary('minimum', a, b);
export const eq = (a: Tensor | number, b: Tensor | number): Tensor => binary('eq', a, b);
export const ne = (a: Tensor | number, b: Tensor | number): Tensor => binary('ne', a, b);
export const lt = (a: Tensor | number, b: Tensor | number): Tensor => binary('lt', a, b);
export const le = (a: Tensor | number, b: Tensor | number): Tensor => binary('le', a, b);
export const gt = (a: Tensor | number, b: Tensor | number): Tensor => binary('gt', a, b);
export const ge = (a: Tensor | number, b: Tensor | number): Tensor => binary('ge', a, b);

const WHERE: ElementwiseDef = { wgsl: 'select(b, a, c != 0.0)', cpu: (c, a, b) => (c !== 0 ? a! : b!) };

/** `cond ? a : b` elementwise with broadcasting (cond is true where non-zero). */
export function where(cond: Tensor, a: Tensor | number, b: Tensor | number): Tensor {
  const out = run('where', WHERE, ['c', 'a', 'b'], [cond, a, b]);
  const inputs = [a, b].filter((o): o is Tensor => typeof o !== 'number');
  record(
    'where',
    out,
    inputs,
    (g, [c]) => {
      const grads: (Tensor | null)[] = [];
      if (typeof a !== 'number') grads.push(sumTo(where(c!, g, 0), a.shape));
      if (typeof b !== 'number') grads.push(sumTo(where(c!, 0, g), b.shape));
      return grads;
    },
    [cond],
  );
  return out;
}
