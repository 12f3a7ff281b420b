/**
 * NeMo's splitter and the stage module without workers: layer counts and module ownership, stage
 * metas, a trimmed stage's initialisation equal to the full model's tensors, the schedules' orders,
 * and microbatch row splits.
 */
import { describe, expect, test } from 'bun:test';
import { getCpuDevice } from '@nemotron-ts/kernels';
import { NemotronHConfig, NemotronHForCausalLM, type NemotronHConfigInit } from '@nemotron-ts/core';
import { isPipelineParallelStage, PipelineStage, planStages, scheduleOps, splitIntoStages, splitRows } from '../src';

const INIT: NemotronHConfigInit = {
  pattern: 'M*-EM-E',
  vocabSize: 64,
  hiddenSize: 32,
  numAttentionHeads: 2,
  numKeyValueHeads: 1,
  headDim: 16,
  mambaNumHeads: 4,
  mambaHeadDim: 8,
  nGroups: 1,
  ssmStateSize: 8,
  convKernel: 4,
  intermediateSize: 48,
  nRoutedExperts: 4,
  numExpertsPerTok: 2,
  moeIntermediateSize: 16,
  moeSharedExpertIntermediateSize: 24,
  numNextnPredictLayers: 2,
  mtpPattern: '*E',
};
const config = NemotronHConfig.create(INIT);
const device = getCpuDevice();

describe('splitIntoStages (NeMo AutoModel semantics)', () => {
  test('L // S layers per stage, the remainder to the first stages; embeddings first; norm_f, lm_head, MTP last', () => {
    const plans = planStages(7, { stages: 3 }, true);
    expect(plans.map((p) => p.layers)).toEqual([
      [0, 1, 2],
      [3, 4],
      [5, 6],
    ]);
    expect(plans[0]!.moduleNames).toEqual(['model.embeddings', 'model.layers.0', 'model.layers.1', 'model.layers.2']);
    expect(plans[2]!.moduleNames).toEqual(['model.layers.5', 'model.layers.6', 'model.norm_f', 'lm_head', 'mtp']);
    expect(planStages(7, { layersPerStage: 3 }).map((p) => p.layers.length)).toEqual([3, 2, 2]);
    expect(() => planStages(7, { stages: 2, layersPerStage: 3 })).toThrow('make 3 stages, not 2');
    expect(() => planStages(7, { stages: 8 })).toThrow('8 stages exceed');
    expect(() => planStages(7, {})).toThrow('give stages or layersPerStage');
  });

  test("stages share the model's modules under the full names; together they hold every tensor once", () => {
    const model = NemotronHForCausalLM.fromConfig(config, { seed: 3, device });
    const stages = splitIntoStages(model, { stages: 3 });
    const names = stages.flatMap((s) => s.namedTensors().map((t) => t.name));
    expect(names.sort()).toEqual(
      model
        .namedTensors()
        .map((t) => t.name)
        .sort(),
    );
    expect(stages[1]!.getTensor('model.layers.3.mixer.gate.weight')).toBe(model.getTensor('model.layers.3.mixer.gate.weight'));
    expect(stages.every(isPipelineParallelStage)).toBe(true);
    expect(isPipelineParallelStage(splitIntoStages(model, { stages: 1 })[0]!)).toBe(false);
    expect(stages[1]!.model.embeddings).toBeNull();
    expect(stages[1]!.lmHead).toBeNull();
    expect(() => stages[1]!.embed(null as never)).toThrow('stage 1 has no embeddings');
    model.dispose();
  });

  test('getPipelineStageMetas: ids into the first stage, [B, S, H] plus the D MTP embeddings between stages, logits out', () => {
    const plans = planStages(config.numHiddenLayers, { stages: 2 }, true);
    const first = PipelineStage.create(config, plans[0]!, { device });
    const last = PipelineStage.create(config, plans[1]!, { device });
    expect(first.getPipelineStageMetas(true, 2, 5)).toEqual({
      inputs: [{ name: 'input_ids', shape: [2, 5], dtype: 'i32' }],
      outputs: ['hidden_states', 'mtp_embeds.0', 'mtp_embeds.1'].map((name) => ({ name, shape: [2, 5, 32], dtype: 'f32' })),
    });
    expect(last.getPipelineStageMetas(false, 2, 5, 'bf16')).toEqual({
      inputs: ['hidden_states', 'mtp_embeds.0', 'mtp_embeds.1'].map((name) => ({ name, shape: [2, 5, 32], dtype: 'bf16' })),
      outputs: [{ name: 'logits', shape: [2, 5, 64], dtype: 'f32' }],
    });
    first.dispose();
    last.dispose();
  });

  test('initializeWeights on trimmed stages gives each tensor its full-model value', async () => {
    const model = NemotronHForCausalLM.fromConfig(config, { seed: 11, device });
    for (const plan of planStages(config.numHiddenLayers, { stages: 3 }, true)) {
      const stage = PipelineStage.create(config, plan, { device });
      stage.initializeWeights(11);
      for (const t of stage.namedTensors())
        expect({ name: t.name, values: [...(await t.tensor.data())] }).toEqual({ name: t.name, values: [...(await model.getTensor(t.name).data())] });
      stage.dispose();
    }
    model.dispose();
  });
});

describe('schedules', () => {
  const text = (ops: { kind: string; mb: number }[]) => ops.map((o) => `${o.kind}${o.mb}`).join(' ');
  test('GPipe: all forwards, then all backwards', () => {
    expect(text(scheduleOps('gpipe', 3, 4, 1))).toBe('F0 F1 F2 F3 B0 B1 B2 B3');
  });
  test('1F1B: S − s − 1 warm-up forwards, then one forward one backward, then the drain', () => {
    expect(text(scheduleOps('1f1b', 3, 4, 0))).toBe('F0 F1 F2 B0 F3 B1 B2 B3');
    expect(text(scheduleOps('1f1b', 3, 4, 1))).toBe('F0 F1 B0 F2 B1 F3 B2 B3');
    expect(text(scheduleOps('1f1b', 3, 4, 2))).toBe('F0 B0 F1 B1 F2 B2 F3 B3');
    expect(text(scheduleOps('1f1b', 4, 2, 0))).toBe('F0 F1 B0 B1');
  });
  test('microbatch rows: contiguous, near-equal, the larger first', () => {
    expect(splitRows(5, 2)).toEqual([
      [0, 3],
      [3, 2],
    ]);
    expect(() => splitRows(2, 3)).toThrow('3 microbatches for a batch of 2 rows');
  });
});
