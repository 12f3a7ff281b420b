/**
 * LoRA adapters on tiny random models (every layer kind, biases, odd sizes): the term is zero at
 * init, only adapters train and their gradients match finite differences and the CPU backend, merge
 * / unmerge / remove, AdamW lowers the loss, and the cached prefill and fused decode see the term
 * (decode equals recompute; greedy generation equals the merged model's).
 */
import { describe, expect, test } from 'bun:test';
import { AdamW, Generator, backward, getCpuDevice, noGrad, tensor, type Device } from '@nemotron-ts/kernels';
import { expectClose, testGpu } from '@nemotron-ts/kernels/testing';
import {
  applyLora,
  loraHandle,
  mergeLora,
  peftTensorKeys,
  NemotronHConfig,
  NemotronHForCausalLM,
  NemotronHybridCache,
  removeLora,
  reseedLoraDropout,
  unmergeLora,
  type LoraHandle,
  type NemotronHConfigInit,
} from '../src';

const cpu = getCpuDevice();
const gpu = await testGpu();
const devices: Device[] = gpu ? [cpu, gpu] : [cpu];

const INIT: NemotronHConfigInit = {
  pattern: 'M*-EM*',
  vocabSize: 67,
  hiddenSize: 28,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  headDim: 6,
  mambaNumHeads: 4,
  mambaHeadDim: 7,
  nGroups: 2,
  ssmStateSize: 6,
  convKernel: 4,
  chunkSize: 4,
  intermediateSize: 30,
  nRoutedExperts: 4,
  numExpertsPerTok: 2,
  moeIntermediateSize: 10,
  moeSharedExpertIntermediateSize: 14,
  useBias: true,
  mlpBias: true,
};
const config = NemotronHConfig.create(INIT);
const ALL_TARGETS = ['in_proj', 'out_proj', 'q_proj', 'k_proj', 'v_proj', 'o_proj', 'up_proj', 'down_proj', 'lm_head'];

function model(device: Device, seed = 3): NemotronHForCausalLM {
  return NemotronHForCausalLM.fromConfig(config, { seed, device });
}

function ids(rows: number, length: number, seed: number): number[][] {
  const g = new Generator(seed);
  return Array.from({ length: rows }, () => Array.from({ length }, () => Math.floor(g.uniform() * config.vocabSize)));
}

/** Random B (and A) so the adapters change the output (B starts at zero). */
function randomizeAdapters(m: NemotronHForCausalLM, handle: LoraHandle, seed: number, scale = 0.2): void {
  const g = new Generator(seed);
  for (const [name, p] of handle.namedParameters()) {
    const values = Float32Array.from({ length: p.size }, () => g.normal() * scale);
    const t = tensor(values, p.shape, { device: p.device });
    m.setTensor(name, t);
    t.dispose();
  }
}

async function logitsOf(m: NemotronHForCausalLM, inputIds: number[][], cache?: NemotronHybridCache): Promise<Float32Array> {
  const { logits } = noGrad(() => m.forward({ inputIds, cache }));
  const values = await logits.toFloat32();
  logits.dispose();
  return values;
}

async function lossOf(m: NemotronHForCausalLM, inputIds: number[][]): Promise<number> {
  const { logits, loss } = noGrad(() => m.forward({ inputIds, labels: inputIds }));
  const value = (await loss!.toFloat32())[0]!;
  logits.dispose();
  loss!.dispose();
  return value;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

describe('applyLora', () => {
  test('adapts the matching Linear layers, skips stacked experts, freezes the base', () => {
    const m = model(cpu);
    const handle = applyLora(m, { r: 3, alpha: 6, targetModules: ALL_TARGETS, seed: 1 });
    const names = [...handle.adapters.keys()];
    expect(names).toContain('model.layers.0.mixer.in_proj');
    expect(names).toContain('model.layers.1.mixer.q_proj');
    expect(names).toContain('model.layers.3.mixer.shared_experts.up_proj');
    expect(names).toContain('lm_head');
    expect(names.some((n) => n.includes('lora_'))).toBe(false);
    expect(handle.skipped).toEqual(['model.layers.3.mixer.experts.up_proj', 'model.layers.3.mixer.experts.down_proj']);
    const adapterNames = new Set(handle.namedParameters().map(([n]) => n));
    for (const [name, p] of m.namedParameters()) {
      expect(p.requiresGrad).toBe(adapterNames.has(name));
      if (adapterNames.has(name)) expect(p.dtype).toBe('f32');
    }
    expect(adapterNames.has('model.layers.0.mixer.in_proj.lora_A.weight')).toBe(true);
    expect(m.getTensor('model.layers.0.mixer.in_proj.lora_A.weight').shape).toEqual([3, config.hiddenSize]);
    expect(m.getTensor('model.layers.0.mixer.in_proj.lora_B.weight').shape).toEqual([config.dInProj, 3]);
    expect(() => applyLora(m, { r: 3, alpha: 6, targetModules: ['q_proj'] })).toThrow(/already has LoRA adapters/);
    removeLora(m);
    expect(loraHandle(m)).toBeNull();
    expect(m.parameters().every((p) => p.requiresGrad)).toBe(true);
    expect(m.namedParameters().some(([n]) => n.includes('lora_'))).toBe(false);
    m.dispose();
  });

  test('A is deterministic by seed and layer; bad options are refused', async () => {
    const a = model(cpu);
    const b = model(cpu);
    const ha = applyLora(a, { r: 2, alpha: 4, targetModules: ['q_proj', 'in_proj'], seed: 5 });
    applyLora(b, { r: 2, alpha: 4, targetModules: ['q_proj', 'in_proj'], seed: 5 });
    const name = 'model.layers.0.mixer.in_proj.lora_A.weight';
    const va = await a.getTensor(name).toFloat32();
    expect(await b.getTensor(name).toFloat32()).toEqual(va);
    expect(await a.getTensor('model.layers.1.mixer.q_proj.lora_A.weight').toFloat32()).not.toEqual(va.subarray(0, 2 * config.hiddenSize));
    // PEFT's kaiming-uniform (a = √5): U(−1/√in, 1/√in).
    const bound = 1 / Math.sqrt(config.hiddenSize);
    expect(Math.max(...va.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...va.map(Math.abs))).toBeGreaterThan(bound * 0.8);
    expect(ha.config.targetModules).toEqual(['q_proj', 'in_proj']);
    const c = model(cpu);
    expect(() => applyLora(c, { r: 0, alpha: 1, targetModules: ['q_proj'] })).toThrow(/r must be a positive integer/);
    expect(() => applyLora(c, { r: 2, alpha: 1, dropout: 1, targetModules: ['q_proj'] })).toThrow(/dropout must be in \[0, 1\)/);
    expect(() => applyLora(c, { r: 2, alpha: 1, targetModules: ['nothing'] })).toThrow(/no Linear layer matches/);
    expect(() => applyLora(c, { r: 2, alpha: 1, targetModules: '(' })).toThrow(/targetModules "\(" is not a regular expression JavaScript reads/);
    expect(() => applyLora(c, { r: 2, alpha: 1, targetModules: ['experts.up_proj'] })).toThrow(/not Linear layers, e.g. model.layers.3.mixer.experts.up_proj/);
    expect(() => applyLora(c, { r: 2, alpha: 1, targetModules: ['gate'] })).toThrow(/not Linear layers, e.g. model.layers.3.mixer.gate\b/);
    for (const m of [a, b, c]) m.dispose();
  });
});

describe('forward and gradients', () => {
  for (const device of devices) {
    test(`${device.kind}: at init the logits equal the base model's; random adapters change them`, async () => {
      const m = model(device);
      const inputIds = ids(2, 7, 1);
      const base = await logitsOf(m, inputIds);
      const handle = applyLora(m, { r: 4, alpha: 8, targetModules: ALL_TARGETS });
      expect(await logitsOf(m, inputIds)).toEqual(base);
      randomizeAdapters(m, handle, 9);
      expect(maxDiff(await logitsOf(m, inputIds), base)).toBeGreaterThan(1e-2);
      m.dispose();
    });
  }

  test('only adapters get gradients; they match finite differences (CPU) and the WebGPU backend', async () => {
    const inputIds = ids(2, 6, 2);
    const grads = new Map<string, Map<string, Float32Array>>();
    for (const device of devices) {
      const m = model(device);
      const handle = applyLora(m, { r: 3, alpha: 6, targetModules: ALL_TARGETS, seed: 2 });
      randomizeAdapters(m, handle, 4);
      const { logits, loss } = m.forward({ inputIds, labels: inputIds });
      backward(loss!);
      logits.dispose();
      loss!.dispose();
      const adapterNames = new Set(handle.namedParameters().map(([n]) => n));
      for (const [name, p] of m.namedParameters()) if (!adapterNames.has(name)) expect(p.grad).toBeNull();
      const byName = new Map<string, Float32Array>();
      for (const [name, p] of handle.namedParameters()) {
        expect(p.grad).not.toBeNull();
        byName.set(name, await p.grad!.toFloat32());
      }
      grads.set(device.kind, byName);
      if (device === cpu) {
        // Central differences on a few elements of A and B in different layer kinds.
        const probes: [string, number][] = [
          ['model.layers.0.mixer.in_proj.lora_A.weight', 5],
          ['model.layers.0.mixer.in_proj.lora_B.weight', 40],
          ['model.layers.1.mixer.k_proj.lora_A.weight', 17],
          ['model.layers.2.mixer.down_proj.lora_B.weight', 7],
          ['model.layers.3.mixer.shared_experts.up_proj.lora_A.weight', 11],
          ['lm_head.lora_B.weight', 100],
        ];
        m.zeroGrad();
        for (const [name, i] of probes) {
          const p = m.getTensor(name);
          const values = await p.toFloat32();
          const h = 1e-2;
          const at = async (delta: number) => {
            const v = Float32Array.from(values);
            v[i]! += delta;
            const t = tensor(v, p.shape, { device });
            m.setTensor(name, t);
            t.dispose();
            return lossOf(m, inputIds);
          };
          const numeric = ((await at(h)) - (await at(-h))) / (2 * h);
          await at(0);
          expectClose([byName.get(name)![i]!], [numeric], { rtol: 2e-2, atol: 2e-4, what: `${name}[${i}]` });
        }
      }
      m.dispose();
    }
    if (gpu) {
      for (const [name, g] of grads.get('cpu')!) expectClose(grads.get(gpu.kind)!.get(name)!, g, { rtol: 1e-3, what: name });
    }
  });

  test('dropout only in training mode, one mask per input', async () => {
    const m = model(cpu);
    const handle = applyLora(m, { r: 4, alpha: 8, dropout: 0.5, targetModules: ['in_proj', 'up_proj'] });
    randomizeAdapters(m, handle, 3);
    const inputIds = ids(1, 6, 5);
    const train1 = await logitsOf(m, inputIds);
    const train2 = await logitsOf(m, inputIds);
    expect(maxDiff(train1, train2)).toBeGreaterThan(1e-3);
    m.eval();
    const eval1 = await logitsOf(m, inputIds);
    expect(await logitsOf(m, inputIds)).toEqual(eval1);
    expect(maxDiff(train1, eval1)).toBeGreaterThan(1e-3);
    m.dispose();
  });

  test('reseedLoraDropout: the masks of a step depend on the step alone', async () => {
    const m = model(cpu);
    const handle = applyLora(m, { r: 4, alpha: 8, dropout: 0.5, targetModules: ['in_proj', 'up_proj'] });
    randomizeAdapters(m, handle, 3);
    const inputIds = ids(1, 6, 5);
    reseedLoraDropout(m, 7);
    const step7 = await logitsOf(m, inputIds);
    expect(maxDiff(await logitsOf(m, inputIds), step7)).toBeGreaterThan(1e-3);
    reseedLoraDropout(m, 7);
    expect(await logitsOf(m, inputIds)).toEqual(step7);
    reseedLoraDropout(m, 8);
    expect(maxDiff(await logitsOf(m, inputIds), step7)).toBeGreaterThan(1e-3);
    removeLora(m);
    expect(() => reseedLoraDropout(m, 7)).toThrow('reseedLoraDropout: the model has no LoRA adapters');
    m.dispose();
  });
});

describe('merge, unmerge, remove', () => {
  for (const device of devices) {
    test(`${device.kind}: merged forward equals unmerged; unmerge restores the base weights; remove restores the model`, async () => {
      const m = model(device);
      const inputIds = ids(2, 5, 3);
      const base = await logitsOf(m, inputIds);
      const before = new Map(await Promise.all(m.namedParameters().map(async ([n, p]) => [n, await p.toFloat32()] as const)));
      const handle = applyLora(m, { r: 3, alpha: 5, targetModules: ALL_TARGETS });
      randomizeAdapters(m, handle, 6);
      const unmerged = await logitsOf(m, inputIds);
      mergeLora(m);
      expect(() => mergeLora(m)).toThrow(/already merged/);
      expect(maxDiff(await m.getTensor('lm_head.weight').toFloat32(), before.get('lm_head.weight')!)).toBeGreaterThan(1e-3);
      expectClose(await logitsOf(m, inputIds), unmerged, { rtol: 1e-4, what: 'merged logits' });
      unmergeLora(m);
      expect(() => unmergeLora(m)).toThrow(/not merged/);
      for (const [name, values] of before) expectClose(await m.getTensor(name).toFloat32(), values, { rtol: 1e-5, atol: 1e-6, what: name });
      expectClose(await logitsOf(m, inputIds), unmerged, { rtol: 1e-5, what: 'unmerged again' });
      removeLora(m);
      expectClose(await logitsOf(m, inputIds), base, { rtol: 1e-5, what: 'removed' });
      m.dispose();
    });
  }

  test('bf16 base: adapters stay f32; merge rounds into the bf16 weight', async () => {
    const m = NemotronHForCausalLM.fromConfig(config, { seed: 3, device: cpu, dtype: 'bf16' });
    const handle = applyLora(m, { r: 2, alpha: 2, targetModules: ['q_proj', 'lm_head'] });
    for (const p of handle.parameters()) expect(p.dtype).toBe('f32');
    randomizeAdapters(m, handle, 1);
    const inputIds = ids(1, 5, 1);
    const unmerged = await logitsOf(m, inputIds);
    mergeLora(m);
    expect(m.lmHead.weight.dtype).toBe('bf16');
    unmergeLora(m);
    await m.to({ dtype: 'bf16' });
    for (const p of handle.parameters()) expect(p.dtype).toBe('f32');
    mergeLora(m);
    expectClose(await logitsOf(m, inputIds), unmerged, { rtol: 3e-2, what: 'bf16 merged' });
    m.dispose();
  });
});

describe('training', () => {
  test('a few AdamW steps on the adapters lower the loss; the base does not move', async () => {
    const m = model(gpu ?? cpu);
    const handle = applyLora(m, { r: 4, alpha: 8, targetModules: ALL_TARGETS, seed: 7 });
    const inputIds = ids(2, 8, 8);
    const lmHead = await m.lmHead.weight.toFloat32();
    const optimizer = new AdamW(handle.parameters(), { lr: 2e-2, weightDecay: 0 });
    const losses: number[] = [];
    for (let step = 0; step < 5; step++) {
      const { logits, loss } = m.forward({ inputIds, labels: inputIds });
      losses.push((await loss!.toFloat32())[0]!);
      backward(loss!);
      logits.dispose();
      loss!.dispose();
      optimizer.step();
      m.zeroGrad();
    }
    expect(losses[4]!).toBeLessThan(losses[0]! - 0.05);
    expect(await m.lmHead.weight.toFloat32()).toEqual(lmHead);
    m.dispose();
  });
});

describe('generation with adapters', () => {
  for (const device of devices) {
    test(`${device.kind}: decode equals recompute with unmerged adapters; greedy equals the merged model's`, async () => {
      const m = model(device).eval();
      const handle = applyLora(m, { r: 3, alpha: 6, targetModules: ALL_TARGETS, dropout: 0.3 });
      randomizeAdapters(m, handle, 11);
      const prompt = ids(2, 5, 12);
      const next = ids(2, 4, 13);
      const cache = new NemotronHybridCache(config, { batch: 2, device, blockSize: 4 });
      const prefill = await logitsOf(m, prompt, cache);
      expectClose(prefill, await logitsOf(m, prompt), { rtol: 1e-5, what: 'prefill' });
      const V = config.vocabSize;
      for (let t = 0; t < next[0]!.length; t++) {
        const step = await logitsOf(
          m,
          next.map((row) => [row[t]!]),
          cache,
        );
        const seen = prompt.map((row, b) => [...row, ...next[b]!.slice(0, t + 1)]);
        const full = await logitsOf(m, seen);
        const L = seen[0]!.length;
        for (let b = 0; b < 2; b++)
          expectClose(step.subarray(b * V, (b + 1) * V), full.subarray((b * L + L - 1) * V, (b * L + L) * V), { rtol: 1e-4, what: `step ${t} row ${b}` });
      }
      cache.dispose();
      const withAdapters = await m.generate({ inputIds: prompt, maxNewTokens: 6, eosTokenId: null, outputStepLogits: true });
      mergeLora(m);
      const merged = await m.generate({ inputIds: prompt, maxNewTokens: 6, eosTokenId: null, outputStepLogits: true });
      expect(withAdapters.tokens).toEqual(merged.tokens);
      unmergeLora(m);
      removeLora(m);
      const plain = await m.generate({ inputIds: prompt, maxNewTokens: 6, eosTokenId: null, outputStepLogits: true });
      expect(maxDiff(plain.stepLogits![0]!, withAdapters.stepLogits![0]!)).toBeGreaterThan(1e-2);
      m.dispose();
    });
  }
});

describe('multi-token prediction and PEFT keys', () => {
  test('MTP layers are adapted and trained through forwardMtp; PEFT keys use the native class names', async () => {
    const mtpConfig = NemotronHConfig.create({ ...INIT, pattern: 'M*E', mtpPattern: '*E', numNextnPredictLayers: 2 });
    const m = NemotronHForCausalLM.fromConfig(mtpConfig, { seed: 1, device: cpu });
    const handle = applyLora(m, { r: 2, alpha: 4, targetModules: ['q_proj', 'eh_proj', 'lm_head'] });
    expect([...handle.adapters.keys()]).toEqual([
      'model.layers.1.mixer.q_proj',
      'lm_head',
      'mtp.layers.0.mixer.q_proj',
      'mtp.layers.0.eh_proj',
      'mtp.layers.2.mixer.q_proj',
      'mtp.layers.2.eh_proj',
    ]);
    randomizeAdapters(m, handle, 2);
    const inputIds = ids(2, 6, 3);
    const out = m.forwardMtp({ inputIds, labels: inputIds.map((row) => [...row.slice(1), -100]) });
    backward(out.loss);
    for (const t of [out.logits, out.loss, out.mainLoss, out.mtpLoss, ...out.depthHiddenStates, ...out.depthLosses]) t.dispose();
    for (const [name, p] of handle.namedParameters()) expect(p.grad, name).not.toBeNull();
    expect(m.getTensor('mtp.layers.0.eh_proj.weight').grad).toBeNull();
    const keys = peftTensorKeys(handle).map((k) => k.key);
    expect(keys).toEqual([
      'base_model.model.model.layers.1.mixer.q_proj.lora_A.weight',
      'base_model.model.model.layers.1.mixer.q_proj.lora_B.weight',
      'base_model.model.lm_head.lora_A.weight',
      'base_model.model.lm_head.lora_B.weight',
      'base_model.model.mtp.layers.0.mixer.q_proj.lora_A.weight',
      'base_model.model.mtp.layers.0.mixer.q_proj.lora_B.weight',
      'base_model.model.mtp.layers.0.eh_proj.lora_A.weight',
      'base_model.model.mtp.layers.0.eh_proj.lora_B.weight',
      'base_model.model.mtp.layers.2.mixer.q_proj.lora_A.weight',
      'base_model.model.mtp.layers.2.mixer.q_proj.lora_B.weight',
      'base_model.model.mtp.layers.2.eh_proj.lora_A.weight',
      'base_model.model.mtp.layers.2.eh_proj.lora_B.weight',
    ]);
    m.dispose();
  });
});
