/**
 * Token choice for generation, on the device: `sampleTokens` turns logits into one token id per
 * row (greedy or sampled, after HF's logits processors), and `recordTokens` does the bookkeeping of
 * a generation step (finished rows, EOS, the token history, the repetition-penalty set) in one
 * kernel. Nothing is read back: the chosen ids stay on the device, ready to be embedded by the next
 * step, and every value that changes between steps (the step counter that seeds the random
 * numbers, the history column) is read from device tensors, so both ops can run inside a recorded
 * `StepProgram`.
 *
 * The processors follow HF transformers, in its order: repetition penalty (a logits processor, also
 * applied when greedy), then for sampling temperature, top-k, top-p, min-p (the warpers), each
 * working on what the previous one kept:
 * - repetition penalty p on every token the row has seen: s < 0 ? s·p : s / p;
 * - temperature T: s / T;
 * - top-k: keep s ≥ the k-th largest value (ties with it are kept);
 * - top-p: keep a token when the probability mass of the tokens above it is below p (the smallest
 *   top set reaching mass p; the most likely token is always kept; tokens tied in value are kept or
 *   dropped together, where HF's order among ties is unspecified);
 * - min-p: keep a token whose probability is at least minP times the largest;
 * - sampling: the first token (in vocabulary order) whose cumulative weight exceeds u · total, with u
 *   uniform from (seed, row, counter + counterOffset) (see counter-random.ts).
 * Greedy takes the lowest index among the largest values.
 */
import { empty } from '../../creation';
import { formatShape } from '../../shape';
import type { Tensor } from '../../tensor';
import { sampleTokensCpu, recordTokensCpu } from './sampling.cpu';
import { sampleTokensNative } from './sampling.native';
import { recordTokensGpu, sampleTokensGpu } from './sampling.wgsl';

export { NON_FINITE_TOKEN } from './non-finite-token';

export interface SamplingOptions {
  /** Sample (true) or take the arg-max (false, default). */
  doSample?: boolean;
  /** > 0 (default 1). */
  temperature?: number;
  /** Keep the k most likely tokens; 0 = off (default). */
  topK?: number;
  /** In (0, 1]; 1 = off (default). */
  topP?: number;
  /** In [0, 1]; 0 = off (default). */
  minP?: number;
  /** > 0; 1 = off (default). Needs `seen`. */
  repetitionPenalty?: number;
  /** Seed of the random numbers (a u32). */
  seed?: number;
  /** i32 [1]: the random counter, read on the device (e.g. a position that advances each step). */
  counter?: Tensor;
  /** Added to the counter (e.g. minus the prompt length, so the counter is the step). */
  counterOffset?: number;
  /** [B, V] i32: nonzero where the row has seen the token (the repetition penalty's set). */
  seen?: Tensor;
}

/** Validated sampling settings, in the terms both backends use. */
export interface SamplingProblem {
  logits: Tensor;
  rows: number;
  vocab: number;
  doSample: boolean;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  penalty: number;
  seed: number;
  counter: Tensor | null;
  counterOffset: number;
  seen: Tensor | null;
}

function fail(message: string): never {
  throw new Error(`sampleTokens: ${message}`);
}

/**
 * One token id per row of `logits` [B, V] (f32 or bf16): i32 [B]. See the file header. A row whose
 * logits hold NaN or ±Infinity gets {@link NON_FINITE_TOKEN} (-1) instead of a token.
 */
export function sampleTokens(logits: Tensor, options: SamplingOptions = {}): Tensor {
  logits.assertAlive('sampleTokens logits');
  if (logits.rank !== 2 || logits.shape[1]! < 1 || logits.shape[0]! < 1) fail(`logits must be [B, V] with V ≥ 1, got ${formatShape(logits.shape)}`);
  if (logits.dtype !== 'f32' && logits.dtype !== 'bf16') fail(`logits must be f32 or bf16, got ${logits.dtype}`);
  const [rows, vocab] = logits.shape as [number, number];
  const doSample = options.doSample ?? false;
  const temperature = options.temperature ?? 1;
  const topK = options.topK ?? 0;
  const topP = options.topP ?? 1;
  const minP = options.minP ?? 0;
  const penalty = options.repetitionPenalty ?? 1;
  const seed = options.seed ?? 0;
  if (!(temperature > 0) || !Number.isFinite(temperature)) fail(`temperature must be a positive number, got ${temperature}`);
  if (!Number.isInteger(topK) || topK < 0) fail(`topK must be an integer ≥ 0, got ${topK}`);
  if (!(topP > 0 && topP <= 1)) fail(`topP must be in (0, 1], got ${topP}`);
  if (!(minP >= 0 && minP <= 1)) fail(`minP must be in [0, 1], got ${minP}`);
  if (!(penalty > 0) || !Number.isFinite(penalty)) fail(`repetitionPenalty must be a positive number, got ${penalty}`);
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) fail(`seed must be a u32, got ${seed}`);
  const { counter, seen } = options;
  const counterOffset = options.counterOffset ?? 0;
  if (!Number.isInteger(counterOffset) || Math.abs(counterOffset) > 0x7fffffff) fail(`counterOffset must be an i32, got ${counterOffset}`);
  for (const [name, t] of [
    ['counter', counter],
    ['seen', seen],
  ] as const) {
    if (!t) continue;
    t.assertAlive(`sampleTokens ${name}`);
    if (t.device !== logits.device) fail(`${name} is on ${t.device.kind}, logits on ${logits.device.kind}`);
    if (t.dtype !== 'i32' || !t.isContiguous) fail(`${name} must be a dense i32 tensor, got ${t.dtype}`);
  }
  if (counter && counter.size !== 1) fail(`counter must have one element, got ${formatShape(counter.shape)}`);
  if (seen && (seen.rank !== 2 || seen.shape[0] !== rows || seen.shape[1] !== vocab)) fail(`seen ${formatShape(seen.shape)} must be [${rows}, ${vocab}]`);
  if (penalty !== 1 && !seen) fail('a repetition penalty needs the `seen` set');
  const dense = logits.isContiguous ? logits : null;
  if (!dense) fail('logits must be dense (call contiguous first)');
  const problem: SamplingProblem = {
    logits: dense,
    rows,
    vocab,
    doSample,
    temperature,
    topK: topK >= vocab ? 0 : topK,
    topP,
    minP,
    penalty,
    seed,
    counter: counter ?? null,
    counterOffset,
    seen: penalty !== 1 ? seen! : null,
  };
  const out = empty([rows], { dtype: 'i32', device: logits.device });
  if (logits.device.kind === 'cpu') {
    if (!logits.device.native || !sampleTokensNative(logits.device.native, problem, out)) sampleTokensCpu(problem, out);
  } else sampleTokensGpu(logits.device, problem, out);
  return out;
}

export interface RecordTokensOptions {
  /** i32 [B]: receives each row's token (the next step's input). */
  ids: Tensor;
  /** i32 [B]: nonzero once a row finished; rows finished before this step get `padId`. */
  finished: Tensor;
  padId: number;
  /** i32 [E]: end-of-sequence ids (a row producing one finishes), or null. */
  eos?: Tensor | null;
  /** i32 [B, S]: the generated tokens, written at column position[0] − base (skipped outside [0, S)). */
  history: Tensor;
  position: Tensor;
  base: number;
  /** i32 [B, V]: the token is marked seen (for a repetition penalty), unless the row had finished. */
  seen?: Tensor | null;
}

/** The bookkeeping of a generation step for the tokens `sampled` (i32 [B]); see the file header. */
export function recordTokens(sampled: Tensor, options: RecordTokensOptions): void {
  const op = 'recordTokens';
  const { ids, finished, history, position, padId, base } = options;
  const eos = options.eos ?? null;
  const seen = options.seen ?? null;
  const named = { sampled, ids, finished, history, position, eos, seen };
  for (const [name, t] of Object.entries(named)) {
    if (!t) continue;
    t.assertAlive(`${op} ${name}`);
    if (t.device !== sampled.device) throw new Error(`${op}: ${name} is on ${t.device.kind}, sampled on ${sampled.device.kind}`);
    if (t.dtype !== 'i32' || !t.isContiguous) throw new Error(`${op}: ${name} must be a dense i32 tensor, got ${t.dtype} ${formatShape(t.shape)}`);
  }
  const rows = sampled.size;
  if (sampled.rank !== 1) throw new Error(`${op}: sampled must be [B], got ${formatShape(sampled.shape)}`);
  for (const [name, t] of [
    ['ids', ids],
    ['finished', finished],
  ] as const) {
    if (t.size !== rows) throw new Error(`${op}: ${name} ${formatShape(t.shape)} must have ${rows} elements`);
  }
  if (history.rank !== 2 || history.shape[0] !== rows) throw new Error(`${op}: history ${formatShape(history.shape)} must be [${rows}, S]`);
  if (position.size !== 1) throw new Error(`${op}: position must have one element, got ${formatShape(position.shape)}`);
  if (seen && (seen.rank !== 2 || seen.shape[0] !== rows)) throw new Error(`${op}: seen ${formatShape(seen.shape)} must be [${rows}, V]`);
  if (!Number.isInteger(padId) || !Number.isInteger(base)) throw new Error(`${op}: padId and base must be integers`);
  for (const t of [ids, finished, history, seen]) t?.storage.invalidateDerived();
  const args: RecordTokensArgs = { sampled, ids, finished, padId, eos, history, position, base, seen };
  if (sampled.device.kind === 'cpu') recordTokensCpu(args);
  else recordTokensGpu(sampled.device, args);
}

/** A validated `recordTokens` call. */
export interface RecordTokensArgs {
  sampled: Tensor;
  ids: Tensor;
  finished: Tensor;
  padId: number;
  eos: Tensor | null;
  history: Tensor;
  position: Tensor;
  base: number;
  seen: Tensor | null;
}
