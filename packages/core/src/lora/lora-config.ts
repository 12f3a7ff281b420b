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
   * `down_proj`, `lm_head`, …). Only Linear layers are adapted.
   */
  targetModules: readonly string[];
  /** Seeds A's initialisation (per layer, with its name) and the dropout masks (default 0). */
  seed?: number;
}

/** {@link LoraOptions} with every field present. */
export interface LoraConfig {
  readonly r: number;
  readonly alpha: number;
  readonly dropout: number;
  readonly targetModules: readonly string[];
  readonly seed: number;
}

export function resolveLoraOptions(options: LoraOptions): LoraConfig {
  const { r, alpha, dropout = 0, targetModules, seed = 0 } = options;
  if (!Number.isInteger(r) || r <= 0) throw new Error(`applyLora: r must be a positive integer, got ${r}`);
  if (!Number.isFinite(alpha)) throw new Error(`applyLora: alpha must be a finite number, got ${alpha}`);
  if (!(dropout >= 0 && dropout < 1)) throw new Error(`applyLora: dropout must be in [0, 1), got ${dropout}`);
  if (!Array.isArray(targetModules) || targetModules.length === 0 || targetModules.some((t) => typeof t !== 'string' || t === '')) {
    throw new Error(`applyLora: targetModules must be a non-empty list of module names, got ${JSON.stringify(targetModules)}`);
  }
  if (!Number.isInteger(seed)) throw new Error(`applyLora: seed must be an integer, got ${seed}`);
  return Object.freeze({ r, alpha, dropout, targetModules: Object.freeze([...targetModules]), seed });
}

/** PEFT's suffix match: `name` is a target or ends in `.<target>`. */
export function matchesTarget(name: string, targets: readonly string[]): boolean {
  return targets.some((t) => name === t || name.endsWith(`.${t}`));
}
