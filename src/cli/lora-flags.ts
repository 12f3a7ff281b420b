/**
 * `nemotron train`'s LoRA flags: `--lora-r R` turns LoRA on; `--lora-alpha` (default 2·R),
 * `--lora-dropout` (default 0, PEFT's) and `--lora-targets` (default core's DEFAULT_LORA_TARGETS:
 * every projection PEFT accepts on nemotron_h — Mamba in_proj, attention, MLP/shared expert; not
 * out_proj, which PEFT refuses) refine it and need `--lora-r`.
 */
import { DEFAULT_LORA_TARGETS, type LoraOptions, type Module } from '@nemotron-ts/core';
import { loadLoraAdapter } from '../peft-files';
import type { LoraRunSettings } from '../train/trainer-state';
import { numberFlag, stringFlag, UsageError, type ParsedArgs } from './args';

export const LORA_FLAGS = ['lora-r', 'lora-alpha', 'lora-dropout', 'lora-targets'] as const;

/** LoRA options from flags: the targets are always a list of names. */
export type LoraFlagOptions = LoraOptions & { targetModules: string[] };

/** The LoRA options the flags ask for (seeded by `seed`), or null when `--lora-r` is absent. */
export function readLoraFlags(args: ParsedArgs, seed: number): LoraFlagOptions | null {
  if (!args.flags.has('lora-r')) {
    const stray = LORA_FLAGS.find((name) => args.flags.has(name));
    if (stray) throw new UsageError(`--${stray} needs --lora-r R (LoRA is on only with a rank)`);
    return null;
  }
  const r = numberFlag(args, 'lora-r')!;
  if (!Number.isInteger(r) || r < 1) throw new UsageError(`--lora-r must be an integer ≥ 1, got ${r}`);
  const alpha = numberFlag(args, 'lora-alpha', 2 * r)!;
  if (!(alpha > 0)) throw new UsageError(`--lora-alpha must be > 0, got ${alpha}`);
  const dropout = numberFlag(args, 'lora-dropout', 0)!;
  if (!(dropout >= 0 && dropout < 1)) throw new UsageError(`--lora-dropout must be in [0, 1), got ${dropout}`);
  const list = stringFlag(args, 'lora-targets');
  const targetModules = list === undefined ? [...DEFAULT_LORA_TARGETS] : list.split(',').map((t) => t.trim());
  if (targetModules.some((t) => t === '')) throw new UsageError(`--lora-targets must be comma-separated module names, got '${list}'`);
  return { r, alpha, dropout, targetModules, seed };
}

/** Fails naming the first `--lora-*` flag whose value differs from the run that wrote `checkpoint`. */
export function checkLoraResume(lora: LoraFlagOptions, saved: LoraRunSettings, checkpoint: string): void {
  const pairs: [string, unknown, unknown][] = [
    ['lora-r', lora.r, saved.r],
    ['lora-alpha', lora.alpha, saved.alpha],
    ['lora-dropout', lora.dropout ?? 0, saved.dropout],
    // A run of the library Trainer may have targeted a regular expression: given as it is.
    ['lora-targets', lora.targetModules.join(','), typeof saved.targetModules === 'string' ? saved.targetModules : saved.targetModules.join(',')],
  ];
  for (const [flag, mine, theirs] of pairs) {
    if (mine !== theirs) throw new UsageError(`--resume: ${checkpoint} was trained with --${flag} ${theirs}, this run has ${mine}`);
  }
}

/**
 * `--lora DIR|REPO_ID` of forward, generate and chat: a PEFT LoRA adapter applied on top of the
 * model, unmerged (not to be confused with `--adapter`, which picks the GPU).
 */
export const LORA_ADAPTER_FLAG = 'lora';

/** Loads the adapter `--lora` names into `model` (nothing without the flag); errors name the flag. */
export async function applyLoraAdapterFlag(args: ParsedArgs, model: Module): Promise<void> {
  const source = stringFlag(args, LORA_ADAPTER_FLAG);
  if (source === undefined) return;
  try {
    await loadLoraAdapter(model, source);
  } catch (e) {
    throw new Error(`--lora ${source}: ${(e as Error).message}`);
  }
}
