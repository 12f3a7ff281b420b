/**
 * The elementwise op table: one line per op, each with its WGSL expression and its CPU reference
 * (computed in f64, stored as f32). Unary ops read `x` and the scalars `p0`, `p1`; binary ops read
 * `a`, `b`; gradient expressions read the input `x` and the upstream gradient `g`.
 */

import { MATH_F32 } from '../../runtime/wgsl';

export interface ElementwiseDef {
  /** WGSL expression over the named operands (all f32 unless the kernel runs in integer mode). */
  wgsl: string;
  cpu: (...v: number[]) => number;
  /** True for ops that are exact on integers and keep an integer dtype when every input is integral. */
  integer?: boolean;
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
const softplus = (x: number) => (x > 20 ? x : Math.log1p(Math.exp(x)));

/** Unary ops: operand `x`, scalars `p0`, `p1`. */
/** Copies, casts and makes contiguous (the value itself). */
export const IDENTITY: ElementwiseDef = { wgsl: 'x', cpu: (x) => x };

export const UNARY = {
  neg: { wgsl: '-x', cpu: (x) => -x, integer: true },
  abs: { wgsl: 'abs(x)', cpu: Math.abs, integer: true },
  exp: { wgsl: 'exp(x)', cpu: Math.exp },
  log: { wgsl: 'log_f32(x)', cpu: Math.log },
  sqrt: { wgsl: 'sqrt(x)', cpu: Math.sqrt },
  rsqrt: { wgsl: 'inverseSqrt(x)', cpu: (x) => 1 / Math.sqrt(x) },
  reciprocal: { wgsl: '1.0 / x', cpu: (x) => 1 / x },
  square: { wgsl: 'x * x', cpu: (x) => x * x, integer: true },
  sigmoid: { wgsl: '1.0 / (1.0 + exp(-x))', cpu: sigmoid },
  silu: { wgsl: 'x / (1.0 + exp(-x))', cpu: (x) => x * sigmoid(x) },
  softplus: { wgsl: 'softplus_f32(x)', cpu: softplus },
  relu: { wgsl: 'relu_nan(x)', cpu: (x) => Math.max(x, 0) },
  relu2: { wgsl: 'relu_nan(x) * relu_nan(x)', cpu: (x) => Math.max(x, 0) ** 2 },
  tanh: { wgsl: 'tanh_f32(x)', cpu: Math.tanh },
  sign: { wgsl: 'sign_nan(x)', cpu: Math.sign },
  clamp: { wgsl: 'clamp_nan(x, p0, p1)', cpu: (x, lo, hi) => Math.min(Math.max(x, lo!), hi!) },
  pow_scalar: { wgsl: 'pow_f32(x, p0)', cpu: (x, p) => x ** p! },
  isfinite: { wgsl: 'select(0.0, 1.0, isfinite_f32(x))', cpu: (x) => (Number.isFinite(Math.fround(x)) ? 1 : 0) },
} satisfies Record<string, ElementwiseDef>;

/** Binary ops: operands `a`, `b` (either may be a scalar). Comparisons return 1 or 0; with a NaN operand only `ne` holds (lavapipe's compiler may treat float compares as ordered, so NaN is tested by its bits). */
export const BINARY = {
  add: { wgsl: 'a + b', cpu: (a, b) => a + b!, integer: true },
  sub: { wgsl: 'a - b', cpu: (a, b) => a - b!, integer: true },
  mul: { wgsl: 'a * b', cpu: (a, b) => a * b!, integer: true },
  div: { wgsl: 'a / b', cpu: (a, b) => a / b! },
  pow: { wgsl: 'pow_f32(a, b)', cpu: (a, b) => a ** b! },
  maximum: { wgsl: 'max_nan(a, b)', cpu: (a, b) => Math.max(a, b!), integer: true },
  minimum: { wgsl: 'min_nan(a, b)', cpu: (a, b) => Math.min(a, b!), integer: true },
  eq: { wgsl: 'select(0.0, 1.0, a == b && !unordered_f32(a, b))', cpu: (a, b) => (a === b ? 1 : 0) },
  ne: { wgsl: 'select(0.0, 1.0, a != b || unordered_f32(a, b))', cpu: (a, b) => (a !== b ? 1 : 0) },
  lt: { wgsl: 'select(0.0, 1.0, a < b && !unordered_f32(a, b))', cpu: (a, b) => (a < b! ? 1 : 0) },
  le: { wgsl: 'select(0.0, 1.0, a <= b && !unordered_f32(a, b))', cpu: (a, b) => (a <= b! ? 1 : 0) },
  gt: { wgsl: 'select(0.0, 1.0, a > b && !unordered_f32(a, b))', cpu: (a, b) => (a > b! ? 1 : 0) },
  ge: { wgsl: 'select(0.0, 1.0, a >= b && !unordered_f32(a, b))', cpu: (a, b) => (a >= b! ? 1 : 0) },
} satisfies Record<string, ElementwiseDef>;

/** Derivatives of the unary ops as fused (x, g) expressions: one kernel per backward step. */
export const UNARY_GRAD: Record<UnaryOp, ElementwiseDef | null> = {
  neg: { wgsl: '-g', cpu: (_x, g) => -g! },
  abs: { wgsl: 'g * sign_nan(x)', cpu: (x, g) => g! * Math.sign(x) },
  exp: { wgsl: 'g * exp(x)', cpu: (x, g) => g! * Math.exp(x) },
  log: { wgsl: 'g / x', cpu: (x, g) => g! / x },
  sqrt: { wgsl: 'g * 0.5 / sqrt(x)', cpu: (x, g) => (g! * 0.5) / Math.sqrt(x) },
  rsqrt: { wgsl: '-0.5 * g * inverseSqrt(x) / x', cpu: (x, g) => (-0.5 * g!) / Math.sqrt(x) / x },
  reciprocal: { wgsl: '-g / (x * x)', cpu: (x, g) => -g! / (x * x) },
  square: { wgsl: '2.0 * x * g', cpu: (x, g) => 2 * x * g! },
  sigmoid: { wgsl: 'g * (1.0 / (1.0 + exp(-x))) * (1.0 - 1.0 / (1.0 + exp(-x)))', cpu: (x, g) => g! * sigmoid(x) * (1 - sigmoid(x)) },
  silu: {
    wgsl: 'g * (1.0 / (1.0 + exp(-x))) * (1.0 + x * (1.0 - 1.0 / (1.0 + exp(-x))))',
    cpu: (x, g) => g! * sigmoid(x) * (1 + x * (1 - sigmoid(x))),
  },
  softplus: { wgsl: 'select(g / (1.0 + exp(-x)), g, x > 20.0)', cpu: (x, g) => (x > 20 ? g! : g! * sigmoid(x)) },
  relu: { wgsl: 'select(0.0, g, x > 0.0)', cpu: (x, g) => (x > 0 ? g! : 0) },
  relu2: { wgsl: '2.0 * relu_nan(x) * g', cpu: (x, g) => 2 * Math.max(x, 0) * g! },
  tanh: { wgsl: 'g * (1.0 - tanh_f32(x) * tanh_f32(x))', cpu: (x, g) => g! * (1 - Math.tanh(x) ** 2) },
  sign: null,
  clamp: { wgsl: 'select(0.0, g, x >= p0 && x <= p1)', cpu: (x, g, lo, hi) => (x >= lo! && x <= hi! ? g! : 0) },
  pow_scalar: { wgsl: 'g * p0 * pow_f32(x, p0 - 1.0)', cpu: (x, g, p) => g! * p! * x ** (p! - 1) },
  isfinite: null,
};

export type UnaryOp = keyof typeof UNARY;
export type BinaryOp = keyof typeof BINARY;

/**
 * The NaN-aware helpers of integer ops: integers have no NaN, so they are the builtins (the same
 * expression then serves f32, i32 and u32 kernels).
 */
export function integerPrelude(type: 'i32' | 'u32'): string {
  return `fn max_nan(a: ${type}, b: ${type}) -> ${type} { return max(a, b); }
fn min_nan(a: ${type}, b: ${type}) -> ${type} { return min(a, b); }`;
}

/** WGSL helpers the expressions above rely on. */
export const ELEMENTWISE_PRELUDE = `
${MATH_F32}
fn isfinite_f32(x: f32) -> bool {
  return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}
fn pow_f32(a: f32, b: f32) -> f32 {
  // WGSL pow is undefined for a < 0; follow Math.pow: integral exponents keep the sign rule.
  if (b == 0.0) { return 1.0; }
  if (a >= 0.0) { return pow(a, b); }
  var nan_bits = 0x7fc00000u;
  if (round(b) != b) { return bitcast<f32>(nan_bits); }
  let m = pow(-a, b);
  return select(m, -m, (i32(b) & 1) == 1);
}
`;
