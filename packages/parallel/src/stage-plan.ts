/**
 * How a model is cut into pipeline stages, as NeMo AutoModel's splitter does
 * (`generate_hf_model_fqn_per_model_part`): L // S layers per stage, the L % S remainder going one
 * each to the first stages; the embeddings on the first stage; norm_f, lm_head and the MTP head on
 * the last (the model's `customize_pipeline_stage_modules`). With `layersPerStage` the stage count
 * is ⌈L / layersPerStage⌉ (NeMo's `calculate_virtual_stages`, one stage per worker).
 */
export interface StagePlan {
  /** 0-based stage index. */
  readonly index: number;
  /** Number of stages. */
  readonly count: number;
  /** Backbone layer indices of this stage (contiguous, ascending). */
  readonly layers: readonly number[];
  /** First stage: owns `model.embeddings`. */
  readonly isFirst: boolean;
  /** Last stage: owns `model.norm_f`, `lm_head` and `mtp`. */
  readonly isLast: boolean;
  /** The module names this stage keeps (NeMo's module FQNs, our in-memory names). */
  readonly moduleNames: readonly string[];
}

export interface SplitOptions {
  /** Number of stages (≥ 1, ≤ the number of layers). */
  stages?: number;
  /** Layers per stage; the stage count follows from it (must agree with `stages` when both are given). */
  layersPerStage?: number;
}

export function planStages(numLayers: number, options: SplitOptions, hasMtp = false): StagePlan[] {
  const { layersPerStage } = options;
  let count = options.stages;
  if (layersPerStage !== undefined) {
    if (!Number.isInteger(layersPerStage) || layersPerStage < 1)
      throw new Error(`splitIntoStages: layersPerStage must be a positive integer, got ${layersPerStage}`);
    const implied = Math.ceil(numLayers / layersPerStage);
    if (count !== undefined && count !== implied) {
      throw new Error(`splitIntoStages: ${numLayers} layers with layersPerStage ${layersPerStage} make ${implied} stages, not ${count}`);
    }
    count = implied;
  }
  if (count === undefined) throw new Error('splitIntoStages: give stages or layersPerStage');
  if (!Number.isInteger(count) || count < 1) throw new Error(`splitIntoStages: stages must be a positive integer, got ${count}`);
  if (count > numLayers) throw new Error(`splitIntoStages: ${count} stages exceed the model's ${numLayers} layers`);
  const base = Math.floor(numLayers / count);
  const extra = numLayers % count;
  const plans: StagePlan[] = [];
  let next = 0;
  for (let index = 0; index < count; index++) {
    const n = base + (index < extra ? 1 : 0);
    const layers = Array.from({ length: n }, (_, k) => next + k);
    next += n;
    const isFirst = index === 0;
    const isLast = index === count - 1;
    const moduleNames = [
      ...(isFirst ? ['model.embeddings'] : []),
      ...layers.map((i) => `model.layers.${i}`),
      ...(isLast ? ['model.norm_f', 'lm_head', ...(hasMtp ? ['mtp'] : [])] : []),
    ];
    plans.push({ index, count, layers, isFirst, isLast, moduleNames });
  }
  return plans;
}

/** Whether the tensor `name` (a full-model name) belongs to the stage. */
export function stageOwns(plan: StagePlan, name: string): boolean {
  return plan.moduleNames.some((m) => name === m || name.startsWith(`${m}.`));
}
