/**
 * The checkpoint file I/O behind `NemotronHForCausalLM.fromPretrained` and `savePretrained`. Core
 * knows nothing of files or the Hub (dependencies flow kernels ← core and kernels ← hub); the root
 * package, which composes core and hub, installs the implementation when it is imported, and
 * completes the option and result types below by declaration merging. So there is one
 * `NemotronHForCausalLM`, with one set of methods, whichever package it is imported from.
 */
import type { NemotronHForCausalLM } from './causal-lm';

/** Options of `fromPretrained`; the installed I/O declares its fields (see the root package). */
export interface FromPretrainedOptions {}
/** Options of `savePretrained`; the installed I/O declares its fields. */
export interface SavePretrainedOptions {}
/** What `savePretrained` wrote; the installed I/O declares its fields. */
export interface SavedPretrained {}

/** Loads and saves `NemotronHForCausalLM` checkpoints. */
export interface PretrainedIO {
  load(pathOrRepoId: string, options: FromPretrainedOptions): Promise<NemotronHForCausalLM>;
  save(model: NemotronHForCausalLM, folder: string, options: SavePretrainedOptions): Promise<SavedPretrained>;
}

let installed: PretrainedIO | null = null;

/** Makes `io` the checkpoint I/O of `fromPretrained`/`savePretrained` (the root package calls this on import). */
export function installPretrainedIO(io: PretrainedIO): void {
  installed = io;
}

/** The installed I/O; `method` names the caller in the error when there is none. */
export function pretrainedIO(method: string): PretrainedIO {
  if (!installed) {
    throw new Error(
      `NemotronHForCausalLM.${method}: no checkpoint I/O is installed; ` +
        'import the nemotron-ts package (the root, which composes core and hub) to read and write checkpoints',
    );
  }
  return installed;
}
