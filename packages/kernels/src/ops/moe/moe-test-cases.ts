/**
 * Test support for the MoE tests (moe.test, moe-backward.test, moe-native.test): routing options,
 * the routing and expert problems on odd sizes with their seeded operands, and one forward and
 * backward run of the experts whose outputs and gradients two devices compare.
 */
import { getCpuDevice, type Device } from '../../device/device';
import type { DType } from '../../dtype';
import { Generator } from '../../random';
import type { Tensor } from '../../tensor';
import { expectClose, onDevice, outputAndGradients, randomData } from '../../testing';
import { moeExperts } from './moe-experts';
import type { MoeRouteOptions } from './moe-route';

/** Routing options: top-2 of one group, normalised, scaled by 2.5, with `o` over them. */
export const route = (o: Partial<MoeRouteOptions> = {}): MoeRouteOptions => ({
  topK: 2,
  nGroup: 1,
  topkGroup: 1,
  normTopkProb: true,
  routedScalingFactor: 2.5,
  ...o,
});

export interface RouteCase {
  tokens: number;
  experts: number;
  o: MoeRouteOptions;
  bias: boolean;
  dtype?: DType;
}

/** Routing problems every backend is compared on: odd sizes, groups, no bias, bf16 logits, many experts. */
export const ROUTE_CASES: readonly RouteCase[] = [
  { tokens: 37, experts: 8, o: route({ topK: 1 }), bias: true },
  { tokens: 37, experts: 12, o: route({ topK: 3, normTopkProb: false, routedScalingFactor: 1 }), bias: false },
  { tokens: 37, experts: 8, o: route({ topK: 3, nGroup: 4, topkGroup: 2 }), bias: true },
  { tokens: 37, experts: 12, o: route({ topK: 2, nGroup: 4, topkGroup: 2, normTopkProb: false }), bias: true, dtype: 'bf16' },
  { tokens: 5, experts: 512, o: route({ topK: 22, nGroup: 8, topkGroup: 4 }), bias: true },
];

export const routeCaseName = (c: RouteCase): string =>
  `T=${c.tokens} E=${c.experts} k=${c.o.topK} groups ${c.o.topkGroup}/${c.o.nGroup} norm=${c.o.normTopkProb}${c.bias ? ' bias' : ''}${c.dtype ? ` ${c.dtype}` : ''}`;

/** An experts problem: `tokens` tokens routed to `slots` of `experts` experts, hin → inter → hout. */
export interface ExpertCase {
  tokens: number;
  experts: number;
  slots: number;
  hin: number;
  inter: number;
  hout: number;
  weightDtype: DType;
  xDtype?: DType;
  biases?: boolean;
}

export const expertCaseName = (c: ExpertCase): string =>
  `T=${c.tokens} E=${c.experts} k=${c.slots} ${c.hin}→${c.inter}→${c.hout} ${c.xDtype ?? 'f32'}·${c.weightDtype}${c.biases ? ' biases' : ''}`;

/**
 * Distinct experts per token; expert `unused` is in no token's slots and `everyToken` (when given)
 * in every token's, in a different slot for each token.
 */
export function routingFor(c: ExpertCase, seed: number, unused: number, everyToken?: number): Int32Array {
  const g = new Generator(seed);
  const indices = new Int32Array(c.tokens * c.slots);
  for (let t = 0; t < c.tokens; t++) {
    const chosen = everyToken === undefined ? [] : [everyToken];
    while (chosen.length < c.slots) {
      const e = Math.floor(g.uniform() * c.experts);
      if (e !== unused && !chosen.includes(e)) chosen.push(e);
    }
    const rot = everyToken === undefined ? 0 : t % c.slots;
    chosen.forEach((e, s) => (indices[t * c.slots + ((s + rot) % c.slots)] = e));
  }
  return indices;
}

export interface Operand {
  values: Float32Array;
  shape: number[];
  dtype: DType;
}

/** The differentiable operands' values and shapes, in moeExperts' argument order (biases last). */
export function expertOperands(c: ExpertCase, seed: number): Operand[] {
  const ops: Operand[] = [
    { values: randomData([c.tokens, c.hin], seed, { dtype: c.xDtype }), shape: [c.tokens, c.hin], dtype: c.xDtype ?? 'f32' },
    { values: randomData([c.tokens, c.slots], seed + 1, { positive: true }), shape: [c.tokens, c.slots], dtype: 'f32' },
    {
      values: randomData([c.experts, c.inter, c.hin], seed + 2, { dtype: c.weightDtype, scale: 0.5 }),
      shape: [c.experts, c.inter, c.hin],
      dtype: c.weightDtype,
    },
    {
      values: randomData([c.experts, c.hout, c.inter], seed + 3, { dtype: c.weightDtype, scale: 0.5 }),
      shape: [c.experts, c.hout, c.inter],
      dtype: c.weightDtype,
    },
  ];
  if (c.biases) {
    ops.push(
      { values: randomData([c.experts, c.inter], seed + 4, { scale: 0.3 }), shape: [c.experts, c.inter], dtype: 'f32' },
      { values: randomData([c.experts, c.hout], seed + 5), shape: [c.experts, c.hout], dtype: 'f32' },
    );
  }
  return ops;
}

/** NaN in every expert's up and down weights but `kept`'s, so a read of an unchosen expert reaches the output. */
export function poisonExpertsExcept(c: ExpertCase, up: Float32Array, down: Float32Array, kept: readonly number[]): void {
  for (let e = 0; e < c.experts; e++) {
    if (kept.includes(e)) continue;
    up.fill(NaN, e * c.inter * c.hin, (e + 1) * c.inter * c.hin);
    down.fill(NaN, e * c.hout * c.inter, (e + 1) * c.hout * c.inter);
  }
}

/** moeExperts on operands in {@link expertOperands}' order. */
export const callExperts = (indices: Tensor, [x, w, up, down, upBias, downBias]: Tensor[]): Tensor =>
  moeExperts(x!, indices, w!, up!, down!, upBias ? { upBias, downBias: downBias! } : {});

/** Forward and backward on `d` (outputs and gradients poisoned); the output and every gradient as f32. */
function expertsWithGrads(d: Device, c: ExpertCase, indices: Int32Array, ops: readonly Operand[], upstream: Float32Array) {
  const idx = onDevice(indices, [c.tokens, c.slots], d);
  return outputAndGradients(
    d,
    (...ts) => callExperts(idx, ts),
    ops,
    () => upstream,
  );
}

const OPERAND_NAMES = ['x', 'weights', 'upProj', 'downProj', 'upBias', 'downBias'];

/** The experts' output (to 1e-5) and every operand's gradient (to `gradRtol`) on `d` against the CPU reference. */
export async function expectExpertsWithGradsMatch(
  d: Device,
  c: ExpertCase,
  indices: Int32Array,
  ops: readonly Operand[],
  upstream: Float32Array,
  gradRtol: number,
): Promise<void> {
  const ref = await expertsWithGrads(getCpuDevice(), c, indices, ops, upstream);
  const got = await expertsWithGrads(d, c, indices, ops, upstream);
  expectClose(got.out, ref.out, { rtol: 1e-5, what: 'output' });
  ref.grads.forEach((r, i) => expectClose(got.grads[i]!, r!, { rtol: gradRtol, what: `gradient of ${OPERAND_NAMES[i]}` }));
}
