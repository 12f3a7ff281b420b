/** LoRA's options, checked, and PEFT's rule for which modules a target name selects. */

export interface LoraOptions {
  /** Rank of the adapters (> 0). */
  r: number;
  /** Scaling numerator: the term is (alpha / r) · B A x (PEFT's lora_alpha). */
  alpha: number;
  /** Dropout probability on the adapters' input in training mode, [0, 1) (default 0). */
  dropout?: number;
  /**
   * Module names to adapt, PEFT's semantics: a module whose name equals a target or ends in
   * `.<target>` (`in_proj`, `out_proj`, `q_proj`, `k_proj`, `v_proj`, `o_proj`, `up_proj`,
   * `down_proj`, `lm_head`, …); or one string, a regular expression a whole module name must match
   * (PEFT's `re.fullmatch`), tried on our name (`model.layers.0.mixer.in_proj`, as transformers'
   * native class names it) and on the remote-code class's (`backbone.layers.0.mixer.in_proj`).
   * Only Linear layers are adapted.
   */
  targetModules: readonly string[] | string;
  /** Seeds A's initialisation (per layer, with its name) and the dropout masks (default 0). */
  seed?: number;
}

/** {@link LoraOptions} with every field present. */
export interface LoraConfig {
  readonly r: number;
  readonly alpha: number;
  readonly dropout: number;
  readonly targetModules: readonly string[] | string;
  readonly seed: number;
}

export function resolveLoraOptions(options: LoraOptions): LoraConfig {
  const { r, alpha, dropout = 0, targetModules, seed = 0 } = options;
  if (!Number.isInteger(r) || r <= 0) throw new Error(`applyLora: r must be a positive integer, got ${r}`);
  if (!Number.isFinite(alpha)) throw new Error(`applyLora: alpha must be a finite number, got ${alpha}`);
  if (!(dropout >= 0 && dropout < 1)) throw new Error(`applyLora: dropout must be in [0, 1), got ${dropout}`);
  if (typeof targetModules === 'string') {
    targetPattern(targetModules);
  } else if (!Array.isArray(targetModules) || targetModules.length === 0 || targetModules.some((t) => typeof t !== 'string' || t === '')) {
    throw new Error(`applyLora: targetModules must be a non-empty list of module names or one regular expression, got ${JSON.stringify(targetModules)}`);
  }
  if (!Number.isInteger(seed)) throw new Error(`applyLora: seed must be an integer, got ${seed}`);
  return Object.freeze({ r, alpha, dropout, targetModules: typeof targetModules === 'string' ? targetModules : Object.freeze([...targetModules]), seed });
}

/**
 * The default targets: every projection PEFT accepts on a nemotron_h model — Mamba in_proj,
 * attention q/k/v/o_proj, MLP and shared-expert up/down_proj (the MoE's stacked routed experts are
 * no Linear layers, so PEFT and we leave them without adapters). Not Mamba's out_proj or conv1d:
 * see {@link PEFT_REFUSED_MAMBA_MODULES}.
 */
export const DEFAULT_LORA_TARGETS: readonly string[] = Object.freeze(['in_proj', 'q_proj', 'k_proj', 'v_proj', 'o_proj', 'up_proj', 'down_proj']);

/**
 * Module names PEFT (≥ 0.20) refuses to adapt on Mamba-based models, nemotron_h included ("Module
 * 'out_proj' is incompatible with Mamba-based models"): fused Mamba kernels read out_proj's weight
 * directly. An adapter on them works here but stock PEFT will not load it.
 */
export const PEFT_REFUSED_MAMBA_MODULES: readonly string[] = Object.freeze(['out_proj', 'conv1d']);

/** The layers among `names` that PEFT refuses to adapt on nemotron_h (their last name part is out_proj or conv1d). */
export function peftRefusedLayers(names: Iterable<string>): string[] {
  return [...names].filter((name) => PEFT_REFUSED_MAMBA_MODULES.includes(name.slice(name.lastIndexOf('.') + 1)));
}

/** PEFT's rule: `name` is a target or ends in `.<target>`; for one string, the whole name (or its remote-code form) matches the pattern. */
export function matchesTarget(name: string, targets: readonly string[] | string): boolean {
  if (typeof targets === 'string') {
    const pattern = targetPattern(targets);
    return pattern.test(name) || (name.startsWith('model.') && pattern.test(`backbone.${name.slice('model.'.length)}`));
  }
  return targets.some((t) => name === t || name.endsWith(`.${t}`));
}

const patterns = new Map<string, RegExp>();

/** `source` as a whole-string RegExp (Python's `re.fullmatch`); an error names it when JavaScript cannot read it. */
function targetPattern(source: string): RegExp {
  let pattern = patterns.get(source);
  if (!pattern) {
    if (source === '') throw new Error('applyLora: targetModules is an empty regular expression');
    try {
      pattern = new RegExp(`^(?:${source})$`);
    } catch (e) {
      throw new Error(`applyLora: targetModules ${JSON.stringify(source)} is not a regular expression JavaScript reads: ${(e as Error).message}`);
    }
    patterns.set(source, pattern);
  }
  return pattern;
}
