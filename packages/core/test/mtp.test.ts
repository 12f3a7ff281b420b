/**
 * `forwardMtp` beyond the golden fixture (test/forward-fixtures.test.ts checks its values): repeated
 * layers run one physical depth D times, a padded batch masks every depth's blocks as the backbone,
 * and bad inputs fail clearly.
 */
import { describe, expect, test } from 'bun:test';
import { getCpuDevice, noGrad, type Tensor } from '@nemotron-ts/kernels';
import { expectClose } from '@nemotron-ts/kernels/testing';
import { NemotronHConfig, NemotronHForCausalLM, type MtpOutput, type NemotronHConfigInit } from '../src';

const cpu = getCpuDevice();
const INIT: NemotronHConfigInit = {
  pattern: 'M*E',
  mtpPattern: '*E',
  numNextnPredictLayers: 2,
  vocabSize: 61,
  hiddenSize: 24,
  numAttentionHeads: 2,
  numKeyValueHeads: 1,
  headDim: 12,
  mambaNumHeads: 3,
  mambaHeadDim: 8,
  nGroups: 1,
  ssmStateSize: 8,
  chunkSize: 4,
  nRoutedExperts: 4,
  numExpertsPerTok: 2,
  moeIntermediateSize: 16,
  moeSharedExpertIntermediateSize: 20,
};
const ids = [
  [3, 9, 27, 5, 44, 12, 8],
  [7, 1, 60, 33, 2, 19, 40],
];
const labels = ids.map((row) => [...row.slice(1), -100]);

async function values(t: Tensor): Promise<Float32Array> {
  return (await t.data()) as Float32Array;
}

function dispose(out: MtpOutput): void {
  for (const t of [out.logits, out.loss, out.mainLoss, out.mtpLoss, ...out.depthHiddenStates, ...out.depthLosses]) t.dispose();
}

describe('forwardMtp', () => {
  test('repeated layers: every depth runs depth 0 (equal to two depths holding the same weights)', async () => {
    const repeated = NemotronHForCausalLM.fromConfig(NemotronHConfig.create({ ...INIT, mtpUseRepeatedLayer: true }), { device: cpu, seed: 4 });
    const twoDepths = NemotronHForCausalLM.fromConfig(NemotronHConfig.create(INIT), { device: cpu, seed: 4 });
    // Copy the repeated model's weights into both depths of the other (P = 2 sublayers per depth).
    for (const { name, tensor } of repeated.namedTensors()) {
      const m = /^mtp\.layers\.(\d+)\.(.*)$/.exec(name);
      if (!m) twoDepths.setTensor(name, tensor);
      else for (const depth of [0, 1]) twoDepths.setTensor(`mtp.layers.${depth * 2 + Number(m[1])}.${m[2]}`, tensor);
    }
    const a = noGrad(() => repeated.forwardMtp({ inputIds: ids, labels }));
    const b = noGrad(() => twoDepths.forwardMtp({ inputIds: ids, labels }));
    expect(a.depthHiddenStates.length).toBe(2);
    for (let k = 0; k < 2; k++) expectClose(await values(a.depthHiddenStates[k]!), await values(b.depthHiddenStates[k]!), { rtol: 1e-6, what: `depth ${k}` });
    expectClose(await values(a.loss), await values(b.loss), { rtol: 1e-6, what: 'total loss' });
    // Depth 1 continues from depth 0's output with other ids: the same weights, other values.
    const [d0, d1] = [await values(a.depthHiddenStates[0]!), await values(a.depthHiddenStates[1]!)];
    expect(Math.max(...d0.map((v, i) => Math.abs(v - d1[i]!)))).toBeGreaterThan(1e-3);
    dispose(a);
    dispose(b);
    repeated.dispose();
    twoDepths.dispose();
  });

  test('targets look k + 1 further; N counts the main labels; the loss adds scaling / D · Σ depth losses', async () => {
    const model = NemotronHForCausalLM.fromConfig(NemotronHConfig.create(INIT), { device: cpu, seed: 2 });
    const out = noGrad(() => model.forwardMtp({ inputIds: ids, labels }));
    expect(out.labelCount).toBe(12);
    expect(out.depthTargets[0]![0]).toEqual([27, 5, 44, 12, 8, -100, -100]);
    expect(out.depthTargets[1]![1]).toEqual([33, 2, 19, 40, -100, -100, -100]);
    const [main, mtp, total] = [(await values(out.mainLoss))[0]!, (await values(out.mtpLoss))[0]!, (await values(out.loss))[0]!];
    const depths = await Promise.all(out.depthLosses.map(async (l) => (await values(l))[0]!));
    expect(mtp).toBeCloseTo((0.1 / 2) * (depths[0]! + depths[1]!), 6);
    expect(total).toBeCloseTo(main + mtp, 6);
    // The main loss is forward's HF loss on the unshifted labels (the same targets, the same N).
    const hf = noGrad(() => model.forward({ inputIds: ids, labels: ids }));
    expect(main).toBeCloseTo((await values(hf.loss!))[0]!, 5);
    hf.logits.dispose();
    hf.loss!.dispose();
    dispose(out);
    model.dispose();
  });

  test('a packed row: no target crosses a document', async () => {
    const model = NemotronHForCausalLM.fromConfig(NemotronHConfig.create(INIT), { device: cpu, seed: 2 });
    const row = [4, 8, 15, 16, 23, 42, 7, 9];
    const out = noGrad(() => model.forwardMtp({ inputIds: [row], labels: [[8, 15, 16, -100, 42, 7, 9, -100]], cuSeqlens: [0, 4, 8] }));
    expect(out.depthTargets[0]![0]).toEqual([15, 16, -100, -100, 7, 9, -100, -100]);
    expect(out.depthTargets[1]![0]).toEqual([16, -100, -100, -100, 9, -100, -100, -100]);
    dispose(out);
    model.dispose();
  });

  test('several packed rows: per-row boundaries give each row what it gives alone', async () => {
    const model = NemotronHForCausalLM.fromConfig(NemotronHConfig.create(INIT), { device: cpu, seed: 2 });
    const rows = [
      [4, 8, 15, 16, 23, 42, 7, 9],
      [5, 6, 7, 8, 9, 10, 11, 12],
    ];
    const rowLabels = [
      [8, 15, 16, -100, 42, 7, 9, -100],
      [6, -100, 8, 9, 10, 11, 12, -100],
    ];
    const cu = [
      [0, 4, 8],
      [0, 2, 8],
    ];
    const both = noGrad(() => model.forwardMtp({ inputIds: rows, labels: rowLabels, cuSeqlens: cu }));
    for (let b = 0; b < 2; b++) {
      const alone = noGrad(() => model.forwardMtp({ inputIds: [rows[b]!], labels: [rowLabels[b]!], cuSeqlens: cu[b]! }));
      for (let k = 0; k < 2; k++) {
        expect(both.depthTargets[k]![b]).toEqual(alone.depthTargets[k]![0]!);
        expectClose((await values(both.depthHiddenStates[k]!)).subarray(b * 8 * 24, (b + 1) * 8 * 24), await values(alone.depthHiddenStates[k]!), {
          rtol: 1e-5,
          what: `row ${b} depth ${k}`,
        });
      }
      dispose(alone);
    }
    dispose(both);
    model.dispose();
  });

  test('clear errors', () => {
    const plain = NemotronHForCausalLM.fromConfig(NemotronHConfig.create({ ...INIT, numNextnPredictLayers: 0 }), { device: cpu });
    expect(() => plain.forwardMtp({ inputIds: ids, labels })).toThrow(/has no MTP head/);
    plain.dispose();
    const model = NemotronHForCausalLM.fromConfig(NemotronHConfig.create(INIT), { device: cpu });
    expect(() => model.forwardMtp({ inputIds: ids, labels: [labels[0]!] })).toThrow(/labels \[1, 7\] do not match inputIds \[2, 7\]/);
    expect(() => model.forwardMtp({ inputIds: ids, labels: [[...labels[0]!.slice(0, 6), 61], labels[1]!] })).toThrow(/labels\[0\]\[6\] = 61/);
    model.dispose();
  });
});
