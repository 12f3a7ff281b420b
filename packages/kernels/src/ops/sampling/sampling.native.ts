/** Native token choice (packages/kernels/native/sampling.c): the reference's processors and draw without its whole-vocabulary sorts. */
import type { NativeKernels } from '../../native/library';
import { cpuView, type Tensor } from '../../tensor';
import type { SamplingProblem } from './sampling';

/** Writes one token per row into the dense i32 `out`; false (nothing written) when `out` is not dense. */
export function sampleTokensNative(lib: NativeKernels, p: SamplingProblem, out: Tensor): boolean {
  if (!out.isContiguous) return false;
  const counter = ((p.counter ? (cpuView(p.counter) as Int32Array)[p.counter.offset]! : 0) + p.counterOffset) >>> 0;
  const params = new Float64Array([
    p.rows,
    p.vocab,
    p.logits.dtype === 'bf16' ? 1 : 0,
    p.logits.offset,
    p.doSample ? 1 : 0,
    p.temperature,
    p.topK,
    p.topP,
    p.minP,
    p.penalty,
    p.seed,
    counter,
    p.seen?.offset ?? 0,
    out.offset,
  ]);
  if (lib.symbols.nt_sample_tokens(params, p.logits.storage.cpu, p.seen?.storage.cpu ?? null, out.storage.cpu) !== 0)
    throw new Error(`sampleTokens: native kernel ran out of memory for ${p.rows} row(s) of ${p.vocab} logits`);
  return true;
}
