/**
 * The seed's model surface: forward's `NemotronHCausalLMOutputWithPast` (cache, MTP fields,
 * disposal with `using`), device / dtype, the embedding accessors, `resizeTokenEmbeddings` with
 * HF's initialisation of new rows, `initializeWeights`, and `generate` from embeddings with HF's
 * `sequences`.
 */
import { describe, expect, test } from 'bun:test';
import { getCpuDevice, noGrad, tensor, type Tensor } from '@nemotron-ts/kernels';
import { expectClose } from '@nemotron-ts/kernels/testing';
import {
  Embedding,
  Linear,
  NemotronHCausalLMOutputWithPast,
  NemotronHConfig,
  NemotronHForCausalLM,
  NemotronHybridCache,
  type NemotronHConfigInit,
} from '../src';
import { TINY_MTP_INIT } from './support/tiny-mtp-config';

const cpu = getCpuDevice();
const ids = [
  [3, 9, 27, 5, 34, 12, 8],
  [7, 1, 40, 33, 2, 19, 11],
];

const host = async (t: Tensor) => (await t.toFloat32()) as Float32Array;
const model = (init: Partial<NemotronHConfigInit> = {}, seed = 1) =>
  NemotronHForCausalLM.fromConfig(NemotronHConfig.create({ ...TINY_MTP_INIT, ...init }), { device: cpu, seed });

describe('forward output', () => {
  test('one disposable result: `using` releases logits, loss, hidden states and MTP states', () => {
    const m = model();
    const before = cpu.memoryStats().liveBytes;
    {
      using out = m.forward({ inputIds: ids, labels: ids, outputHiddenStates: true });
      expect(out).toBeInstanceOf(NemotronHCausalLMOutputWithPast);
      expect(out.loss).not.toBeNull();
      expect(out.hiddenStates!.length).toBe(5);
      // Training mode with gradients: the MTP head runs too (NeMo's mtp_per_depth_h).
      expect(out.mtpPerDepthH!.length).toBe(2);
      expect(out.mtpLossScalingFactor).toBe(m.config.mtpLossScalingFactor);
      expect(out.pastKeyValues).toBeNull();
      expect(cpu.memoryStats().liveBytes).toBeGreaterThan(before);
    }
    expect(cpu.memoryStats().liveBytes).toBe(before);
    m.dispose();
  });

  test('mtpPerDepthH: training mode or outputMtp, equal to forwardMtp; none in eval mode or without gradients', async () => {
    const m = model();
    const labels = ids.map((row) => [...row.slice(1), -100]);
    using asked = noGrad(() => m.forward({ inputIds: ids, outputMtp: true }));
    const reference = noGrad(() => m.forwardMtp({ inputIds: ids, labels }));
    for (let k = 0; k < 2; k++)
      expectClose(await host(asked.mtpPerDepthH![k]!), await host(reference.depthHiddenStates[k]!), { rtol: 1e-6, what: `depth ${k}` });
    for (const t of [reference.logits, reference.loss, reference.mainLoss, reference.mtpLoss, ...reference.depthHiddenStates, ...reference.depthLosses])
      t.dispose();
    using inference = noGrad(() => m.forward({ inputIds: ids }));
    expect(inference.mtpPerDepthH).toBeNull();
    expect(inference.mtpLossScalingFactor).toBeNull();
    m.eval();
    using evaluated = m.forward({ inputIds: ids });
    expect(evaluated.mtpPerDepthH).toBeNull();
    using off = m.train().forward({ inputIds: ids, outputMtp: false });
    expect(off.mtpPerDepthH).toBeNull();
    expect(() => m.forward({ inputsEmbeds: tensor(new Float32Array(2 * 7 * 16), [2, 7, 16], { device: cpu }), outputMtp: true })).toThrow(
      /outputMtp needs inputIds/,
    );
    const plain = model({ mtpPattern: '', numNextnPredictLayers: 0 });
    expect(() => plain.forward({ inputIds: ids, outputMtp: true })).toThrow(/needs an MTP head/);
    plain.dispose();
    m.dispose();
  });

  test('useCache returns the prefilled cache as pastKeyValues; continuing it matches the full forward', async () => {
    const m = model().eval();
    const full = noGrad(() => m.forward({ inputIds: ids }));
    const prefix = ids.map((r) => r.slice(0, 6));
    const out = noGrad(() => m.forward({ inputIds: prefix, useCache: true }));
    const cache = out.pastKeyValues!;
    expect(cache).toBeInstanceOf(NemotronHybridCache);
    expect(cache.length).toBe(6);
    using step = noGrad(() => m.forward({ inputIds: ids.map((r) => r.slice(6)), cache }));
    expect(step.pastKeyValues).toBe(cache);
    const all = await host(full.logits);
    const last = await host(step.logits);
    for (let b = 0; b < 2; b++)
      expectClose(last.subarray(b * 41, (b + 1) * 41), all.subarray((b * 7 + 6) * 41, (b * 7 + 7) * 41), { rtol: 1e-5, what: `row ${b}` });
    step.dispose();
    expect(cache.isDisposed).toBe(false); // a cache the caller passed is the caller's
    out.dispose();
    expect(cache.isDisposed).toBe(true); // the one forward created is the output's
    expect(() => m.forward({ inputIds: ids, useCache: true, cache })).toThrow(/either cache or useCache/);
    full.dispose();
    m.dispose();
  });

  test('`using` works on tensors, caches and models', () => {
    const before = cpu.memoryStats().liveBytes;
    let kept: NemotronHForCausalLM;
    {
      using t = tensor(new Float32Array(8), [8], { device: cpu });
      using m = model();
      using cache = new NemotronHybridCache(m.config, { device: cpu });
      kept = m;
      expect(t.isDisposed || cache.isDisposed).toBe(false);
    }
    expect(kept.isDisposed).toBe(true);
    expect(cpu.memoryStats().liveBytes).toBe(before);
  });
});

describe('model surface', () => {
  test('device and dtype', () => {
    using m = model();
    expect(m.device).toBe(cpu);
    expect(m.dtype).toBe('f32');
  });

  test('get/set input and output embeddings', async () => {
    using m = model();
    expect(m.getInputEmbeddings()).toBe(m.model.embeddings);
    expect(m.getOutputEmbeddings()).toBe(m.lmHead);
    const names = m.namedTensors().map((t) => t.name);
    const table = new Embedding(41, 16, { device: cpu });
    table.setTensor('weight', tensor(new Float32Array(41 * 16).fill(0.5), [41, 16], { device: cpu }));
    m.setInputEmbeddings(table);
    expect(m.getInputEmbeddings()).toBe(table);
    expect(m.namedTensors().map((t) => t.name)).toEqual(names); // same names, same order
    expect((await host(m.model.embeddings.weight))[7]).toBe(0.5);
    const head = new Linear(16, 41, { device: cpu });
    m.setOutputEmbeddings(head);
    expect(m.lmHead).toBe(head);
    expect(m.getTensor('lm_head.weight')).toBe(head.weight);
    expect(() => m.setInputEmbeddings(new Embedding(41, 8, { device: cpu }))).toThrow(/hidden_size is 16/);
    expect(() => m.setOutputEmbeddings(new Linear(8, 41, { device: cpu }))).toThrow(/hidden_size is 16/);
  });

  test('resizeTokenEmbeddings: old rows kept; new rows the mean (HF default) or N(0, initializer_range)', async () => {
    using m = model();
    const oldEmbed = await host(m.model.embeddings.weight);
    const oldHead = await host(m.lmHead.weight);
    const table = m.resizeTokenEmbeddings(45, { padToMultipleOf: 8 });
    expect(table).toBe(m.getInputEmbeddings());
    expect(m.config.vocabSize).toBe(48);
    expect(m.model.embeddings.weight.shape).toEqual([48, 16]);
    expect(m.lmHead.weight.shape).toEqual([48, 16]);
    expect(m.lmHead.weight.requiresGrad).toBe(true);
    for (const [now, old] of [
      [await host(m.model.embeddings.weight), oldEmbed],
      [await host(m.lmHead.weight), oldHead],
    ] as const) {
      expect(now.subarray(0, 41 * 16)).toEqual(old);
      for (let j = 0; j < 16; j++) {
        let mean = 0;
        for (let r = 0; r < 41; r++) mean += old[r * 16 + j]!;
        mean /= 41;
        for (let r = 41; r < 48; r++) expect(now[r * 16 + j]!).toBeCloseTo(mean, 6);
      }
    }
    // The new ids are accepted and the model still runs.
    using out = noGrad(() => m.forward({ inputIds: [[47, 3, 45]] }));
    expect(out.logits.shape).toEqual([1, 3, 48]);

    using r = model();
    r.resizeTokenEmbeddings(41 + 400, { meanResizing: false, seed: 3 });
    const added = (await host(r.model.embeddings.weight)).subarray(41 * 16);
    const std = Math.sqrt(added.reduce((s, v) => s + v * v, 0) / added.length);
    expect(std).toBeGreaterThan(0.8 * r.config.initializerRange);
    expect(std).toBeLessThan(1.2 * r.config.initializerRange);

    const beforeShrink = await host(r.lmHead.weight);
    r.resizeTokenEmbeddings(30);
    expect(r.config.vocabSize).toBe(30);
    expect(await host(r.lmHead.weight)).toEqual(beforeShrink.subarray(0, 30 * 16));
    expect(() => r.forward({ inputIds: [[30]] })).toThrow(/outside the vocabulary \[0, 30\)/);
    expect(() => r.resizeTokenEmbeddings(0)).toThrow(/positive integer/);
  });

  test('initializeWeights({ seed, dtype }) re-initialises as fromConfig and casts (keep-f32 tensors stay f32)', async () => {
    using fresh = model({}, 9);
    using m = model({}, 2);
    m.initializeWeights({ seed: 9, dtype: 'bf16' });
    expect(m.dtype).toBe('bf16');
    expect(m.getTensor('model.layers.0.mixer.A_log').dtype).toBe('f32');
    expect(m.getTensor('model.layers.0.mixer.in_proj.weight').requiresGrad).toBe(true);
    const a = await host(m.getTensor('model.layers.0.mixer.A_log'));
    expect(a).toEqual(await host(fresh.getTensor('model.layers.0.mixer.A_log')));
    expectClose(await host(m.lmHead.weight), await host(fresh.lmHead.weight), { rtol: 1e-2, what: 'lm_head (bf16)' });
  });

  test('generate from inputsEmbeds: the same tokens as from ids; sequences = prompt + tokens (tokens only from embeddings)', async () => {
    using m = model().eval();
    const fromIds = await m.generate({ inputIds: ids, maxNewTokens: 4 });
    expect(fromIds.sequences).toEqual(ids.map((row, b) => [...row, ...fromIds.tokens[b]!]));
    using embeds = noGrad(() => m.model.embeddings.forward(tensor(Int32Array.from(ids.flat()), [2, 7], { device: cpu })));
    const fromEmbeds = await m.generate({ inputsEmbeds: embeds, maxNewTokens: 4 });
    expect(fromEmbeds.tokens).toEqual(fromIds.tokens);
    expect(fromEmbeds.sequences).toEqual(fromIds.tokens);
    await expect(m.generate({ inputIds: ids, inputsEmbeds: embeds, maxNewTokens: 2 })).rejects.toThrow(/exactly one of inputIds and inputsEmbeds/);
  });
});
