/**
 * Adding, merging and removing LoRA adapters on a model (PEFT's `get_peft_model`, `merge_adapter`,
 * `unmerge_adapter`, `unload` / `merge_and_unload`).
 *
 * Design: an adapter is attached to its Linear (`Linear.attachAdapter`), and every path through the
 * layer adds the term — the training forward, Mamba's per-part in_proj slices, and the fused decode
 * projections (`Linear.fused`: the base product stays one kernel, the low-rank term is added from
 * the normalised input). Nothing is merged behind the caller's back, so the weights a backward sees
 * are always the frozen base plus the live adapter, and decoding equals recomputing. `mergeLora`
 * folds the term into the weights explicitly (for fast inference); while merged, layers add
 * nothing, so the forward stays the same.
 */
import { Linear } from '../nn/linear';
import type { Module, Parameter } from '../nn/module';
import { seedFor } from '../nemotron/init';
import { LoraAdapter } from './lora-adapter';
import { matchesTarget, PEFT_REFUSED_MAMBA_MODULES, peftRefusedLayers, resolveLoraOptions, type LoraConfig, type LoraOptions } from './lora-config';

/** What `applyLora` did: the adapted layers, their trainable parameters, and what it skipped. */
export interface LoraHandle {
  readonly config: LoraConfig;
  /** Adapted layers by module name (`model.layers.0.mixer.in_proj`, `lm_head`, …). */
  readonly adapters: ReadonlyMap<string, LoraAdapter>;
  /**
   * What a target matched that is not a Linear layer and so got no adapter: the MoE's stacked routed
   * experts (parameters `…mixer.experts.up_proj` [E, I, H]), which PEFT cannot adapt either, and
   * other modules (the router `…mixer.gate`, `…mixer.conv1d`).
   */
  readonly skipped: readonly string[];
  /** Modules the targets select that stock PEFT refuses on nemotron_h (Mamba out_proj, adapted; conv1d, skipped); non-empty means PEFT will not load the saved adapter. */
  readonly peftRefused: readonly string[];
  /** The adapters' parameters (`….lora_A.weight`, `….lora_B.weight`), f32, trainable. */
  namedParameters(): [string, Parameter][];
  parameters(): Parameter[];
}

interface LoraState {
  readonly handle: LoraHandle;
  /** requiresGrad of every base parameter (by name) before `applyLora` froze it. */
  readonly frozen: ReadonlyMap<string, boolean>;
}

const states = new WeakMap<Module, LoraState>();

/**
 * Adds LoRA adapters to the Linear layers of `model` whose names match `targetModules`: y =
 * base(x) + (alpha / r) · B(A(dropout(x))). Every base parameter is frozen (requiresGrad false); the
 * adapters' are f32 and trainable. A's initialisation is deterministic for (seed, layer name).
 * Adapting Mamba's out_proj works, with one warning line: stock PEFT refuses such adapters.
 */
export function applyLora(model: Module, options: LoraOptions): LoraHandle {
  if (states.has(model)) throw new Error('applyLora: the model already has LoRA adapters (removeLora first)');
  const config = resolveLoraOptions(options);
  const targets = model.namedModules().filter(([name, m]) => m instanceof Linear && name !== '' && matchesTarget(name, config.targetModules)) as [
    string,
    Linear,
  ][];
  const skipped = [
    ...model
      .namedModules()
      .filter(([name, m]) => !(m instanceof Linear) && name !== '' && matchesTarget(name, config.targetModules))
      .map(([name]) => name),
    ...model
      .namedParameters()
      .map(([name]) => name)
      .filter((name) => matchesTarget(name, config.targetModules)),
  ];
  if (targets.length === 0) {
    const extra = skipped.length ? ` (${skipped.length} matches are not Linear layers, e.g. ${skipped[0]})` : '';
    throw new Error(`applyLora: no Linear layer matches targetModules ${JSON.stringify(config.targetModules)}${extra}`);
  }
  // conv1d is no Linear (never adapted here), but PEFT would try it and refuse the whole adapter.
  const peftRefused = peftRefusedLayers([...targets.map(([name]) => name), ...skipped]);
  if (peftRefused.length > 0) {
    console.warn(
      `applyLora: the targets select ${peftRefused.length} module(s) named ${[...new Set(peftRefused.map((n) => n.slice(n.lastIndexOf('.') + 1)))].join('/')} (e.g. ${peftRefused[0]}); ` +
        `stock PEFT refuses ${PEFT_REFUSED_MAMBA_MODULES.join(' and ')} on nemotron_h ("incompatible with Mamba-based models"), so it will not load this adapter; leave them out of the targets for PEFT`,
    );
  }
  const frozen = new Map(model.namedParameters().map(([name, p]) => [name, p.requiresGrad] as const));
  for (const p of model.parameters()) p.requiresGrad = false;
  const adapters = new Map<string, LoraAdapter>();
  for (const [name, layer] of targets) {
    const adapter = new LoraAdapter(layer, { r: config.r, alpha: config.alpha, dropout: config.dropout, seed: seedFor(config.seed, name) });
    layer.attachAdapter(adapter);
    adapters.set(name, adapter);
  }
  const namedParameters = (): [string, Parameter][] =>
    [...adapters].flatMap(([name, a]) => [
      [`${name}.lora_A.weight`, a.loraA.weight],
      [`${name}.lora_B.weight`, a.loraB.weight],
    ]);
  const handle: LoraHandle = { config, adapters, skipped, peftRefused, namedParameters, parameters: () => namedParameters().map(([, p]) => p) };
  states.set(model, { handle, frozen });
  return handle;
}

/** The handle of the adapters on `model`, or null when it has none. */
export function loraHandle(model: Module): LoraHandle | null {
  return states.get(model)?.handle ?? null;
}

function requireHandle(model: Module, op: string): LoraHandle {
  const handle = loraHandle(model);
  if (!handle) throw new Error(`${op}: the model has no LoRA adapters (applyLora first)`);
  return handle;
}

/**
 * Reseeds every adapter's dropout stream from (the LoRA seed, the layer's name, `step`), so the
 * masks of a training step depend on the step alone, not on how many steps ran before in this
 * process: a run resumed at step k draws the masks an uninterrupted run draws at step k.
 */
export function reseedLoraDropout(model: Module, step: number): void {
  const handle = requireHandle(model, 'reseedLoraDropout');
  for (const [name, a] of handle.adapters) a.reseedDropout(seedFor(handle.config.seed, `${name}@${step}`));
}

/** Folds every adapter into its base weight (W += (alpha / r) · B A); the forward is unchanged. */
export function mergeLora(model: Module): void {
  const handle = requireHandle(model, 'mergeLora');
  for (const [name, a] of handle.adapters) if (a.merged) throw new Error(`mergeLora: '${name}' is already merged`);
  for (const a of handle.adapters.values()) a.merge();
}

/** Takes every merged adapter back out of its base weight. */
export function unmergeLora(model: Module): void {
  const handle = requireHandle(model, 'unmergeLora');
  for (const [name, a] of handle.adapters) if (!a.merged) throw new Error(`unmergeLora: '${name}' is not merged`);
  for (const a of handle.adapters.values()) a.unmerge();
}

/**
 * Detaches and disposes every adapter and restores the base parameters' requiresGrad. Merged
 * adapters stay in the weights (PEFT's `merge_and_unload`); unmerge first to drop them.
 */
export function removeLora(model: Module): void {
  const handle = requireHandle(model, 'removeLora');
  const { frozen } = states.get(model)!;
  for (const a of handle.adapters.values()) {
    a.base.detachAdapter();
    a.dispose();
  }
  for (const [name, flag] of frozen) model.getTensor(name).requiresGrad = flag;
  states.delete(model);
}
