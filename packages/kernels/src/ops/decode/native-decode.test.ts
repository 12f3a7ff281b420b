import { describe, expect, test } from 'bun:test';
import { getCpuDevice, type Device } from '../../device/device';
import type { DType } from '../../dtype';
import { noGrad } from '../../autograd/graph';
import { tidy } from '../../runtime/scope';
import type { Tensor } from '../../tensor';
import { expectClose, onDevice, randomData, testNative } from '../../testing';
import { attention } from '../attention/attention';
import { copyIntoAt } from '../index/write-at';
import { narrow, reshape } from '../layout/layout';
import { fusedLinear } from '../matmul/fused-linear';
import { add } from '../elementwise/elementwise';
import { moeExperts } from '../moe/moe-experts';
import { moeRoute, type MoeRouteOptions } from '../moe/moe-route';
import { rmsNorm } from '../norm/norm';
import { mambaDecodeStep } from '../scan/mamba-decode';
import { NativeDecodeStep, type DecodeLayerPlan, type DecodeStepPlan } from './native-decode';

const native = testNative();
const lib = native?.kind === 'cpu' ? native.native : null;
const cpu = getCpuDevice();

/** The native step for `plan`, or the plan's refusal. */
const create = (plan: DecodeStepPlan) => NativeDecodeStep.create(lib!, plan);

/** The native step for `plan`; a refused plan fails the test. */
function stepFor(plan: DecodeStepPlan): NativeDecodeStep {
  const step = create(plan);
  if (typeof step === 'string') throw new Error(step);
  return step;
}

interface Case {
  name: string;
  dtype: DType;
  /** Layer kinds, M mamba, * attention, - mlp, E moe. */
  pattern: string;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  bias: boolean;
  mask: boolean;
  /** Positions cached before the first step; the steps fill the cache up to its capacity. */
  past: number;
  /** The MoE layers' routing (experts: E). */
  moe?: MoeRouteOptions & { experts: number };
}

const STEPS = 3;
const M = { heads: 6, P: 5, G: 3, N: 9, K: 4 };
const INTER = 29;
const EXPERT_INTER = 11;
const ROUTING = { experts: 7, topK: 3, nGroup: 1, topkGroup: 1, normTopkProb: true, routedScalingFactor: 2.5 };
const VOCAB = 53;

/** The plan's tensors on `d` from seeded values (the same on every device). */
function buildPlan(c: Case, d: Device): DecodeStepPlan {
  let seed = 100;
  const w = (shape: number[], scale = 0.3) => onDevice(randomData(shape, seed++, { dtype: c.dtype, scale }), shape, d, c.dtype);
  const f32 = (shape: number[], scale = 1) => onDevice(randomData(shape, seed++, { scale }), shape, d);
  const norm = () => ({ weight: onDevice(randomData([c.hidden], seed++, { dtype: c.dtype, positive: true }), [c.hidden], d, c.dtype), eps: 1e-5 });
  const proj = (out: number, inp: number) => ({ weight: w([out, inp]), bias: c.bias ? w([out]) : null });
  const capacity = c.past + STEPS;
  const dInner = M.heads * M.P;
  const convDim = dInner + 2 * M.G * M.N;
  const layers = [...c.pattern].map((kind): DecodeLayerPlan => {
    if (kind === 'M') {
      return {
        kind: 'mamba',
        norm: norm(),
        inProj: proj(dInner + convDim + M.heads, c.hidden),
        outProj: proj(c.hidden, dInner),
        convWeight: w([convDim, M.K], 0.5),
        convBias: w([convDim]),
        dtBias: f32([M.heads]),
        aLog: f32([M.heads], 0.5),
        D: f32([M.heads]),
        gatedNorm: { weight: w([dInner]), eps: 1e-5 },
        groups: M.G,
        dtLimit: c.bias ? [0.01, 2] : null,
        state: { conv: f32([1, convDim, M.K]), ssm: f32([1, M.heads, M.P, M.N]) },
      };
    }
    if (kind === '*') {
      const kv = [1, c.kvHeads, capacity, c.headDim];
      return {
        kind: 'attention',
        norm: norm(),
        q: proj(c.heads * c.headDim, c.hidden),
        k: proj(c.kvHeads * c.headDim, c.hidden),
        v: proj(c.kvHeads * c.headDim, c.hidden),
        o: proj(c.hidden, c.heads * c.headDim),
        heads: c.heads,
        kvHeads: c.kvHeads,
        headDim: c.headDim,
        scale: c.headDim ** -0.5,
        state: { k: f32(kv), v: f32(kv) },
      };
    }
    if (kind === 'E') {
      const { experts: E, ...routing } = c.moe ?? ROUTING;
      return {
        kind: 'moe',
        norm: norm(),
        router: w([E, c.hidden]),
        correctionBias: f32([E], 0.1),
        routing,
        experts: { up: w([E, EXPERT_INTER, c.hidden]), down: w([E, c.hidden, EXPERT_INTER]) },
        shared: { up: proj(INTER, c.hidden), down: proj(c.hidden, INTER) },
      };
    }
    return { kind: 'mlp', norm: norm(), up: proj(INTER, c.hidden), down: proj(c.hidden, INTER) };
  });
  return { embedding: w([VOCAB, c.hidden], 1), layers, normF: norm(), lmHead: proj(VOCAB, c.hidden) };
}

function keyMaskOf(c: Case, d: Device): Tensor | null {
  if (!c.mask) return null;
  const m = new Float32Array(c.past + STEPS).fill(1);
  m[1] = 0;
  m[c.past - 1] = 0;
  return onDevice(m, [1, m.length], d);
}

/** The separate ops, as the blocks run them (decode.ts, mamba2.ts, attention.ts, mlp.ts). */
function referenceStep(plan: DecodeStepPlan, id: number, keys: number, keyMask: Tensor | null): Tensor {
  const d = plan.embedding.device;
  return tidy(() => {
    let h = narrow(plan.embedding, 0, id, 1);
    const position = onDevice(Int32Array.of(keys), [1], d);
    for (const l of plan.layers) {
      const norm = { norm: l.norm };
      if (l.kind === 'mamba') {
        const zx = fusedLinear(h, l.inProj.weight, { ...norm, bias: l.inProj.bias });
        const y = mambaDecodeStep(zx, l.state.conv, l.state.ssm, {
          convWeight: l.convWeight,
          convBias: l.convBias,
          dtBias: l.dtBias,
          aLog: l.aLog,
          D: l.D,
          normWeight: l.gatedNorm.weight,
          groups: l.groups,
          eps: l.gatedNorm.eps,
          dtLimit: l.dtLimit,
        });
        h = fusedLinear(y, l.outProj.weight, { bias: l.outProj.bias, residual: h });
      } else if (l.kind === 'attention') {
        const q = reshape(fusedLinear(h, l.q.weight, { ...norm, bias: l.q.bias }), [1, 1, l.heads, l.headDim]);
        copyIntoAt(l.state.k, reshape(fusedLinear(h, l.k.weight, { ...norm, bias: l.k.bias }), [1, l.kvHeads, 1, l.headDim]), 2, position, -1);
        copyIntoAt(l.state.v, reshape(fusedLinear(h, l.v.weight, { ...norm, bias: l.v.bias }), [1, l.kvHeads, 1, l.headDim]), 2, position, -1);
        const o = attention(q, l.state.k, l.state.v, { causal: true, scale: l.scale, kvLayout: 'bhsd', kvLength: position, keyMask: keyMask ?? undefined });
        h = fusedLinear(reshape(o, [1, l.heads * l.headDim]), l.o.weight, { bias: l.o.bias, residual: h });
      } else if (l.kind === 'moe') {
        // moe.ts: the router and the routed experts on norm(h), plus the shared expert, plus h.
        const x = rmsNorm(h, l.norm.weight, l.norm.eps);
        const routing = moeRoute(fusedLinear(x, l.router), l.correctionBias, l.routing);
        const routed = moeExperts(x, routing.indices, routing.weights, l.experts.up, l.experts.down);
        const up = fusedLinear(x, l.shared.up.weight, { bias: l.shared.up.bias, activation: 'relu2' });
        h = add(h, add(routed, fusedLinear(up, l.shared.down.weight, { bias: l.shared.down.bias })));
      } else {
        const up = fusedLinear(h, l.up.weight, { ...norm, bias: l.up.bias, activation: 'relu2' });
        h = fusedLinear(up, l.down.weight, { bias: l.down.bias, residual: h });
      }
    }
    return fusedLinear(h, plan.lmHead.weight, { norm: plan.normF, bias: plan.lmHead.bias });
  });
}

async function states(plan: DecodeStepPlan): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (const l of plan.layers) {
    if (l.kind === 'mamba') out.push(await l.state.conv.toFloat32(), await l.state.ssm.toFloat32());
    if (l.kind === 'attention') out.push(await l.state.k.toFloat32(), await l.state.v.toFloat32());
  }
  return out;
}

const cases: Case[] = [
  { name: 'f32, GQA, odd sizes', dtype: 'f32', pattern: 'M-M*-', hidden: 37, heads: 6, kvHeads: 2, headDim: 12, bias: false, mask: false, past: 5 },
  {
    name: 'bf16, GQA, biases, dt clamp, key mask',
    dtype: 'bf16',
    pattern: '*M-M*',
    hidden: 45,
    heads: 4,
    kvHeads: 1,
    headDim: 17,
    bias: true,
    mask: true,
    past: 9,
  },
  { name: 'f32, heads = kv heads, wide rows', dtype: 'f32', pattern: 'M*-', hidden: 72, heads: 3, kvHeads: 3, headDim: 16, bias: false, mask: true, past: 1 },
  // Rows of ≥ 4 KiB take the four-rows-at-once GEMV (shorter ones stream one row at a time).
  { name: 'f32, rows of 4 KiB and more', dtype: 'f32', pattern: 'M*-', hidden: 1030, heads: 4, kvHeads: 2, headDim: 16, bias: true, mask: false, past: 3 },
  { name: 'bf16, rows of 4 KiB and more', dtype: 'bf16', pattern: '-*M', hidden: 2051, heads: 4, kvHeads: 2, headDim: 16, bias: false, mask: false, past: 3 },
  // Longer caches: keys in blocks of 8 and a remainder; head dims of 8 + 1 vectors, 8 vectors, and not a multiple of 8.
  {
    name: 'f32, 38+ keys, head dim 72, 4 heads per KV head, key mask',
    dtype: 'f32',
    pattern: '*-*',
    hidden: 45,
    heads: 8,
    kvHeads: 2,
    headDim: 72,
    bias: false,
    mask: true,
    past: 37,
  },
  { name: 'bf16, 22+ keys, head dim 64', dtype: 'bf16', pattern: 'M*', hidden: 37, heads: 4, kvHeads: 1, headDim: 64, bias: false, mask: false, past: 21 },
  { name: 'f32, 31+ keys, head dim 20', dtype: 'f32', pattern: '*', hidden: 37, heads: 6, kvHeads: 3, headDim: 20, bias: true, mask: true, past: 30 },
  // 17 projections in the q/k/v phase (more than the 8 the step once had room for).
  { name: 'f32, 8 KV heads', dtype: 'f32', pattern: '*-', hidden: 37, heads: 8, kvHeads: 8, headDim: 5, bias: true, mask: false, past: 2 },
  { name: 'f32, MoE, odd sizes', dtype: 'f32', pattern: 'ME*E', hidden: 37, heads: 6, kvHeads: 2, headDim: 12, bias: false, mask: false, past: 2 },
  {
    name: 'bf16, MoE with group top-k, shared-expert biases',
    dtype: 'bf16',
    pattern: 'E*ME',
    hidden: 45,
    heads: 4,
    kvHeads: 1,
    headDim: 17,
    bias: true,
    mask: true,
    past: 4,
    moe: { experts: 12, topK: 4, nGroup: 4, topkGroup: 2, normTopkProb: false, routedScalingFactor: 1.5 },
  },
];

describe.skipIf(!native)('NativeDecodeStep on cpu:native', () => {
  for (const c of cases) {
    test(`${c.name}: ${STEPS} steps match the separate reference ops, caches included`, async () => {
      const ours = buildPlan(c, native!);
      const ref = buildPlan(c, cpu);
      const mask = keyMaskOf(c, native!);
      const refMask = keyMaskOf(c, cpu);
      const step = stepFor(ours);
      const logits = onDevice(new Float32Array(VOCAB), [1, VOCAB], native!);
      for (let s = 0; s < STEPS; s++) {
        const id = (7 + 13 * s) % VOCAB;
        const keys = c.past + s + 1;
        step.run(id, keys, mask, logits);
        const expected = noGrad(() => referenceStep(ref, id, keys, refMask));
        expectClose(await logits.toFloat32(), await expected.toFloat32(), { rtol: 2e-4, atol: 1e-5, what: `step ${s} logits` });
        expected.dispose();
      }
      const got = await states(ours);
      const want = await states(ref);
      got.forEach((g, i) => expectClose(g, want[i]!, { rtol: 2e-4, atol: 1e-5, what: `state ${i}` }));
    });
  }

  test('1, 3 and 5 threads (uneven shares of every phase, items taken from other threads) match the reference', async () => {
    const before = lib!.threads;
    const c = cases.find((x) => x.name.startsWith('f32, 38+ keys'))!;
    try {
      for (const threads of [1, 3, 5]) {
        lib!.setThreads(threads);
        const ref = buildPlan(c, cpu);
        const step = stepFor(buildPlan(c, native!));
        const logits = onDevice(new Float32Array(VOCAB), [1, VOCAB], native!);
        const keys = c.past + 1;
        step.run(11, keys, keyMaskOf(c, native!), logits);
        const expected = noGrad(() => referenceStep(ref, 11, keys, keyMaskOf(c, cpu)));
        expectClose(await logits.toFloat32(), await expected.toFloat32(), { rtol: 2e-4, atol: 1e-5, what: `${threads} threads` });
      }
    } finally {
      lib!.setThreads(before);
    }
  });

  test('a token outside the vocabulary or a full cache is refused with the reason', () => {
    const c = cases[0]!;
    const step = stepFor(buildPlan(c, native!));
    const logits = onDevice(new Float32Array(VOCAB), [1, VOCAB], native!);
    expect(() => step.run(VOCAB, c.past + 1, null, logits)).toThrow(/token id 53 is outside the vocabulary/);
    expect(() => step.run(0, c.past + STEPS + 1, null, logits)).toThrow(/do not fit the cache/);
  });

  test('a plan with an i32 weight is not taken (the per-op path runs)', () => {
    const plan = buildPlan(cases[0]!, native!);
    const why = create({ ...plan, embedding: onDevice(new Int32Array(VOCAB * 37), [VOCAB, 37], native!) });
    expect(why).toBe('embedding is i32');
  });

  test('a projection whose shape does not fit the plan is named', () => {
    const plan = buildPlan(cases[0]!, native!);
    const layers = [...plan.layers];
    const mlp = layers[1]!;
    if (mlp.kind !== 'mlp') throw new Error('layer 1 should be the MLP');
    layers[1] = { ...mlp, down: { weight: onDevice(new Float32Array(37 * 28), [37, 28], native!), bias: null } };
    const why = create({ ...plan, layers });
    expect(why).toBe('layer 1 down_proj is [37, 28], expected [37, 29]');
  });
});
