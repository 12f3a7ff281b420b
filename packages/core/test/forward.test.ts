/**
 * The forward pass beyond the golden fixtures (which the root acceptance test covers): the Mamba2
 * and MoE mixers against f64 references written from the spec, on config variations the fixtures
 * lack (finite time_step_limit, in/out_proj and conv biases, moe_latent_size with biases, grouped
 * routing); padding and packing invariances; memory; input handling.
 */
import { describe, expect, test } from 'bun:test';
import { getCpuDevice, noGrad, tensor, tidy, type Device } from '@nemotron-ts/kernels';
import { expectClose, randomData, testDevices, testGpu } from '@nemotron-ts/kernels/testing';
import { NemotronHConfig, NemotronHForCausalLM, type CausalLMOutput, type Mamba2Mixer, type MoE, type NemotronHConfigInit } from '../src';
import { mambaReference, moeReference } from './support/reference';

const devices = await testDevices();
const gpu = await testGpu();

/** Small, deliberately uneven sizes (no dimension a multiple of a kernel tile). */
function tinyConfig(init: Partial<NemotronHConfigInit> & { pattern: string }): NemotronHConfig {
  return NemotronHConfig.create({
    vocabSize: 97,
    hiddenSize: 44,
    mambaNumHeads: 4,
    mambaHeadDim: 10,
    ssmStateSize: 6,
    nGroups: 2,
    convKernel: 4,
    chunkSize: 8,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    headDim: 11,
    intermediateSize: 36,
    nRoutedExperts: 6,
    numExpertsPerTok: 2,
    moeIntermediateSize: 18,
    moeSharedExpertIntermediateSize: 26,
    ...init,
  });
}

/** A model whose biases (zero after init) are random, so bias paths are exercised. */
function randomModel(config: NemotronHConfig, device: Device, seed = 7): NemotronHForCausalLM {
  const model = NemotronHForCausalLM.fromConfig(config, { seed, device });
  let s = seed * 1000;
  for (const { name, tensor: t } of model.namedTensors()) {
    if (name.endsWith('.bias')) model.setTensor(name, tensor(randomData(t.shape, s++, { scale: 0.3 }), t.shape, { device }));
  }
  return model.eval();
}

/** Host f32 values of a mixer's tensors, by name relative to the mixer. */
async function mixerWeights(model: NemotronHForCausalLM, layer: number): Promise<(name: string) => Float32Array> {
  const prefix = `model.layers.${layer}.mixer.`;
  const values = new Map<string, Float32Array>();
  for (const { name, tensor: t } of model.namedTensors()) if (name.startsWith(prefix)) values.set(name.slice(prefix.length), await t.toFloat32());
  return (name) => {
    const v = values.get(name);
    if (!v) throw new Error(`no mixer tensor ${name}`);
    return v;
  };
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

function disposeOutputs(out: CausalLMOutput): void {
  out.logits.dispose();
  out.loss?.dispose();
  for (const t of out.hiddenStates ?? []) t.dispose();
}

const [BATCH, LENGTH] = [2, 13];

for (const device of devices) {
  describe(`Mamba2 mixer vs the f64 reference on ${device.kind}`, () => {
    const cases: [string, Partial<NemotronHConfigInit>][] = [
      ['finite time_step_limit, in/out_proj and conv biases', { timeStepLimit: [0.01, 0.05], useBias: true }],
      ['no conv bias, no clamp', { useConvBias: false }],
    ];
    for (const [what, init] of cases) {
      test(what, async () => {
        const config = tinyConfig({ pattern: 'M', ...init });
        const model = randomModel(config, device);
        const x = randomData([BATCH, LENGTH, config.hiddenSize], 3);
        // Row 1 is left-padded: HF's masking before in_proj and after the conv.
        const mask = [Array<number>(LENGTH).fill(1), [0, 0, 0, 0, 0, ...Array<number>(LENGTH - 5).fill(1)]];
        const got = await noGrad(() =>
          tidy(() => {
            const mixer = model.model.layers.at(0).mixer as Mamba2Mixer;
            return mixer.forward(tensor(x, [BATCH, LENGTH, config.hiddenSize], { device }), {
              paddingMask: tensor(mask.flat(), [BATCH, LENGTH], { device }),
              seqIdx: null,
            });
          }),
        ).toFloat32();
        const want = mambaReference(config, await mixerWeights(model, 0), x, BATCH, LENGTH, mask);
        expectClose(got, want, { rtol: 1e-4, what: `mamba ${what}` });
        if (config.clampsDt) {
          // The clamp is active here: without it the output moves far beyond the tolerance.
          const unclamped = mambaReference(
            tinyConfig({ pattern: 'M', ...init, timeStepLimit: [0, Infinity] }),
            await mixerWeights(model, 0),
            x,
            BATCH,
            LENGTH,
            mask,
          );
          let diff = 0;
          for (let i = 0; i < want.length; i++) diff = Math.max(diff, Math.abs(want[i]! - unclamped[i]!));
          expect(diff).toBeGreaterThan(1e-2 * maxAbs(want));
        }
        model.dispose();
      });
    }
  });

  describe(`MoE mixer vs the f64 reference on ${device.kind}`, () => {
    const cases: [string, Partial<NemotronHConfigInit>][] = [
      ['moe_latent_size with biases, 2 groups', { moeLatentSize: 20, mlpBias: true, nGroup: 2, topkGroup: 1, routedScalingFactor: 2.5 }],
      ['flat routing without renormalisation', { normTopkProb: false, numExpertsPerTok: 3 }],
    ];
    for (const [what, init] of cases) {
      test(what, async () => {
        const config = tinyConfig({ pattern: 'E', ...init });
        const model = randomModel(config, device);
        // A non-zero correction bias, so selection and weights differ.
        const biasName = 'model.layers.0.mixer.gate.e_score_correction_bias';
        model.setTensor(biasName, tensor(randomData([config.nRoutedExperts], 5, { scale: 0.05 }), [config.nRoutedExperts], { device }));
        // Larger inputs than the 0.02-std init gives, so routing is not a near-tie.
        const tokens = 19;
        const x = randomData([tokens, config.hiddenSize], 4, { scale: 3 });
        const got = await noGrad(() =>
          tidy(() => (model.model.layers.at(0).mixer as MoE).forward(tensor(x, [tokens, config.hiddenSize], { device }))),
        ).toFloat32();
        expectClose(got, moeReference(config, await mixerWeights(model, 0), x, tokens), { rtol: 1e-4, what: `moe ${what}` });
        model.dispose();
      });
    }
  });

  describe(`model forward on ${device.kind}`, () => {
    const config = tinyConfig({ pattern: 'M*EM-*' });

    test('a left-padded batch matches each row run alone', async () => {
      const model = randomModel(config, device);
      const rows = [randomIds(LENGTH, 1), randomIds(LENGTH - 4, 2), randomIds(3, 3)];
      const ids = rows.map((r) => [...Array<number>(LENGTH - r.length).fill(0), ...r]);
      const mask = rows.map((r) => [...Array<number>(LENGTH - r.length).fill(0), ...Array<number>(r.length).fill(1)]);
      const batch = noGrad(() => model.forward({ inputIds: ids, attentionMask: mask }));
      const V = config.vocabSize;
      const all = await batch.logits.data();
      for (const [b, row] of rows.entries()) {
        const alone = noGrad(() => model.forward({ inputIds: [row] }));
        const start = (b * LENGTH + LENGTH - row.length) * V;
        expectClose(all.subarray(start, start + row.length * V), await alone.logits.data(), { rtol: 1e-5, what: `row ${b}` });
        disposeOutputs(alone);
      }
      disposeOutputs(batch);
      model.dispose();
    });

    // The kernels are the left-padded test's; on llvmpipe another 30 s of WebGPU would buy little.
    test.if(device.kind === 'cpu')('a right-padded batch matches each row run alone before its padding', async () => {
      const model = randomModel(config, device);
      const rows = [randomIds(LENGTH, 1), randomIds(LENGTH - 5, 2), randomIds(2, 3)];
      const ids = rows.map((r) => [...r, ...Array<number>(LENGTH - r.length).fill(5)]);
      const mask = rows.map((r) => [...Array<number>(r.length).fill(1), ...Array<number>(LENGTH - r.length).fill(0)]);
      const batch = noGrad(() => model.forward({ inputIds: ids, attentionMask: mask }));
      const V = config.vocabSize;
      const all = await batch.logits.data();
      for (const [b, row] of rows.entries()) {
        const alone = noGrad(() => model.forward({ inputIds: [row] }));
        expectClose(all.subarray(b * LENGTH * V, (b * LENGTH + row.length) * V), await alone.logits.data(), { rtol: 1e-5, what: `row ${b}` });
        disposeOutputs(alone);
      }
      disposeOutputs(batch);
      model.dispose();
    });

    test('a packed row matches its documents run alone; cuSeqlens as a tensor or an array', async () => {
      const model = randomModel(config, device);
      const docs = [randomIds(7, 4), randomIds(1, 5), randomIds(11, 6)];
      const packed = docs.flat();
      const cu = [0, 7, 8, 19];
      const fromArray = noGrad(() => model.forward({ inputIds: [packed], cuSeqlens: cu }));
      const fromTensor = noGrad(() => model.forward({ inputIds: [packed], cuSeqlens: tensor(Int32Array.from(cu), [cu.length], { device }) }));
      const got = await fromArray.logits.data();
      expectClose(await fromTensor.logits.data(), got, { rtol: 0, what: 'tensor cuSeqlens' });
      const V = config.vocabSize;
      for (const [d, doc] of docs.entries()) {
        const alone = noGrad(() => model.forward({ inputIds: [doc] }));
        expectClose(got.subarray(cu[d]! * V, cu[d + 1]! * V), await alone.logits.data(), { rtol: 1e-5, what: `document ${d}` });
        disposeOutputs(alone);
      }
      disposeOutputs(fromArray);
      disposeOutputs(fromTensor);
      model.dispose();
    });

    test('logitsToKeep, inputsEmbeds and hidden states', async () => {
      const model = randomModel(config, device);
      const ids = [randomIds(LENGTH, 7), randomIds(LENGTH, 8)];
      const full = noGrad(() => model.forward({ inputIds: ids, outputHiddenStates: true }));
      expect(full.hiddenStates!.length).toBe(config.numHiddenLayers + 1);
      const V = config.vocabSize;
      const last = noGrad(() => model.forward({ inputIds: ids, logitsToKeep: 3 }));
      expect(last.logits.shape).toEqual([2, 3, V]);
      const all = await full.logits.data();
      const kept = await last.logits.data();
      for (let b = 0; b < 2; b++) {
        expectClose(kept.subarray(b * 3 * V, (b + 1) * 3 * V), all.subarray((b * LENGTH + LENGTH - 3) * V, (b + 1) * LENGTH * V), {
          rtol: 1e-6,
          what: `kept row ${b}`,
        });
      }
      // Embeddings given instead of ids: the same logits, and the first hidden state is them.
      const embeds = noGrad(() => model.model.embeddings.forward(tensor(Int32Array.from(ids.flat()), [2, LENGTH], { device })));
      const viaEmbeds = noGrad(() => model.forward({ inputsEmbeds: embeds, outputHiddenStates: true }));
      expectClose(await viaEmbeds.logits.data(), all, { rtol: 0, what: 'inputsEmbeds' });
      expectClose(await viaEmbeds.hiddenStates![0]!.data(), await embeds.data(), { rtol: 0, what: 'hiddenStates[0]' });
      expectClose(await full.hiddenStates!.at(-1)!.data(), await noGrad(() => model.model.forward({ inputIds: ids })).lastHiddenState.data(), {
        rtol: 0,
        what: 'backbone',
      });
      disposeOutputs(viaEmbeds);
      expect(embeds.isDisposed).toBe(false);
      embeds.dispose();
      disposeOutputs(full);
      disposeOutputs(last);
      model.dispose();
    });

    test('a forward leaves nothing allocated but its outputs', async () => {
      const model = randomModel(tinyConfig({ pattern: 'M*E-', moeLatentSize: 20, timeStepLimit: [0.01, 0.05] }), device);
      const ids = [randomIds(LENGTH, 9), randomIds(LENGTH, 10)];
      const mask = [Array<number>(LENGTH).fill(1), [0, 0, ...Array<number>(LENGTH - 2).fill(1)]];
      const run = () => noGrad(() => model.forward({ inputIds: ids, labels: ids, attentionMask: mask, outputHiddenStates: true }));
      const before = device.memoryStats().liveBytes;
      for (let i = 0; i < 2; i++) {
        disposeOutputs(run());
        await device.sync();
        expect(device.memoryStats().liveBytes).toBe(before);
      }
      // Inputs given as tensors stay the caller's.
      const cu = tensor(Int32Array.from([0, 5, 2 * LENGTH]), [3], { device });
      const withCu = device.memoryStats().liveBytes;
      disposeOutputs(noGrad(() => model.forward({ inputIds: [ids.flat()], cuSeqlens: cu })));
      expect(device.memoryStats().liveBytes).toBe(withCu);
      cu.dispose();
      model.dispose();
    });
  });
}

if (gpu) {
  test('WebGPU matches the CPU backend on a model with every variation', async () => {
    const config = tinyConfig({ pattern: 'ME*M-E', moeLatentSize: 20, mlpBias: true, useBias: true, timeStepLimit: [0.005, 0.08], nGroup: 2, topkGroup: 1 });
    const cpuModel = randomModel(config, getCpuDevice());
    const gpuModel = randomModel(config, gpu);
    const ids = [randomIds(LENGTH, 11), randomIds(LENGTH, 12)];
    const labels = ids.map((r) => r.map((v, i) => (i % 5 === 0 ? -100 : v)));
    const mask = [Array<number>(LENGTH).fill(1), [0, 0, 0, ...Array<number>(LENGTH - 3).fill(1)]];
    const a = noGrad(() => cpuModel.forward({ inputIds: ids, labels, attentionMask: mask }));
    const b = noGrad(() => gpuModel.forward({ inputIds: ids, labels, attentionMask: mask }));
    expectClose(await b.logits.data(), await a.logits.data(), { rtol: 1e-4, what: 'logits' });
    expectClose(await b.loss!.data(), await a.loss!.data(), { rtol: 1e-5, what: 'loss' });
    for (const out of [a, b]) disposeOutputs(out);
    cpuModel.dispose();
    gpuModel.dispose();
  });
}

describe('input checks', () => {
  const cpu = getCpuDevice();
  const model = randomModel(tinyConfig({ pattern: 'M*' }), cpu);
  const fails = (inputs: Parameters<NemotronHForCausalLM['forward']>[0], message: RegExp) => expect(() => noGrad(() => model.forward(inputs))).toThrow(message);

  test('errors name the field at fault', () => {
    fails(
      {
        inputIds: [
          [1, 2, 3],
          [4, 5],
        ],
      },
      /inputIds: row 1 has 2 entries, row 0 has 3/,
    );
    fails({ inputIds: [[1, 2, 97]] }, /inputIds\[0\]\[2\] = 97 is outside the vocabulary \[0, 97\)/);
    fails({ inputIds: [[1, 2.5]] }, /inputIds\[0\]\[1\]: expected an integer/);
    fails({ inputIds: [[1, 2]], attentionMask: [[1, 1, 1]] }, /attentionMask \[1, 3\] does not match the batch \[1, 2\]/);
    fails({ inputIds: [[1, 2]], attentionMask: [[1, 2]] }, /attentionMask\[0\]\[1\] = 2 must be 0 or 1/);
    // Padding between tokens would carry Mamba's conv window and state across the gap.
    fails(
      {
        inputIds: [
          [1, 2, 3, 4],
          [1, 2, 3, 4],
        ],
        attentionMask: [
          [1, 1, 1, 1],
          [1, 0, 1, 1],
        ],
      },
      /forward: attentionMask\[1\] has padding between tokens \(position 1\)/,
    );
    fails({ inputIds: [[1, 2, 3, 4, 5]], attentionMask: [[0, 1, 1, 0, 1]] }, /attentionMask\[0\] has padding between tokens \(position 3\)/);
    fails({ inputIds: [[1, 2]], labels: [[1, -5]] }, /labels\[0\]\[1\] = -5 is neither -100 nor in the vocabulary/);
    fails(
      {
        inputIds: [
          [1, 2],
          [3, 4],
        ],
        cuSeqlens: [0, 2],
      },
      /cuSeqlens describes one packed row, but the batch has 2 rows/,
    );
    fails({ inputIds: [[1, 2, 3]], cuSeqlens: [0, 2, 1, 3] }, /cuSeqlens\[2\] = 1 is below the previous boundary 2/);
    fails({ inputIds: [[1, 2, 3]], cuSeqlens: [0, 2] }, /cuSeqlens must end at the row length 3/);
    fails({ inputIds: [[1, 2, 3]], labels: [[1, 2, 3]], logitsToKeep: 1 }, /labels need the logits of every position/);
    fails({ inputIds: [[1, 2, 3]], logitsToKeep: 4 }, /logitsToKeep must be an integer in \[0, 3\]/);
    fails({}, /exactly one of inputIds and inputsEmbeds/);
    fails({ inputIds: tensor([1, 2], [1, 2], { device: cpu }) }, /inputIds must be i32, got f32/);
    fails({ inputIds: tensor(Int32Array.from([1, 2]), [1, 1, 2], { device: cpu }) }, /inputIds must have 2 dimensions/); // [T] is the THD layout
    fails({ inputsEmbeds: tensor(new Float32Array(6), [1, 2, 3], { device: cpu }) }, /inputsEmbeds \[1, 2, 3\] must end in hidden_size 44/);
  });

  test('a config too large to allocate names the fields that sized the failing weight', () => {
    const build = (init: Partial<NemotronHConfigInit> & { pattern: string }) => () => new NemotronHForCausalLM(tinyConfig(init), { device: cpu });
    expect(build({ pattern: 'M*', vocabSize: 1e12 })).toThrow(
      /^the embeddings \(vocab_size 1000000000000 × hidden_size 44\): a f32 tensor of 44000000000000 elements needs/,
    );
    expect(build({ pattern: 'M-', intermediateSize: 1e12 })).toThrow(
      /^the mlp mixer's weights \(intermediate_size 1000000000000 × hidden_size 44\): a f32 tensor/,
    );
  });

  test('the checks leave nothing allocated', () => {
    const before = cpu.memoryStats().liveBytes;
    fails({ inputIds: [[1, 2]], labels: [[1, -5]], attentionMask: [[0, 1]] }, /labels/);
    expect(cpu.memoryStats().liveBytes).toBe(before);
  });
});

function randomIds(n: number, seed: number): number[] {
  return Array.from(randomData([n], seed, { positive: true }), (v) => Math.floor(v * 1000) % 97);
}
