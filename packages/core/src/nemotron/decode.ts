/**
 * Decoding with a `NemotronHybridCache`: the one place that moves the cache's counters, and the
 * decode step itself (one token per row through the blocks and the fused head).
 *
 * A cache counts its positions twice: `length` on the host and `position` (i32 [1]) on the device,
 * which recorded steps read. Every call that adds positions goes through this file:
 * - {@link prefillPositions}: room reserved and the padding written first, both counters advanced
 *   once the layers filled the new slots.
 * - {@link decodePosition}: one position, the device counter advanced before the blocks run (a
 *   decode step's kernels read "cached positions including the new token"), the host after.
 * - {@link RecordedDecode}: the same for a `StepProgram` (generation): the device counter is
 *   advanced inside the recording, so every replay moves it, and the host counter after each run.
 *
 * The blocks' decode keeps the fusion of the kernels: each block asks its mixer for
 * `decodeWithResidual` (see `block.ts`), and the head runs norm_f inside lm_head.
 */
import { empty, keep, reshape, StepProgram, tidy, type Tensor } from '@nemotron-ts/kernels';
import type { Linear } from '../nn/linear';
import type { NemotronHBlock } from './block';
import type { NemotronHybridCache } from './cache';
import type { NemotronHForCausalLM } from './causal-lm';
import type { PreparedInputs } from './inputs';
import { nativeDecodeStep } from './native-decode-plan';
import type { RMSNorm } from './rms-norm';

/**
 * Runs `fill` as a prefill of `length` new positions after the cached ones: reserves room, records
 * the padding (`paddingMask` f32 [B, length], null = no padding) and, after `fill` wrote the
 * layers' entries, advances both counters by `length`.
 */
export function prefillPositions<T>(cache: NemotronHybridCache, length: number, paddingMask: Tensor | null, fill: () => T): T {
  cache.reserve(length);
  cache.writeKeyMask(paddingMask, length);
  const out = fill();
  cache.advanceDevice(length);
  cache.advanceHost(length);
  return out;
}

/**
 * Runs `step` as one decode position (one token per row): reserves room, advances the device
 * counter (the blocks read it as the new token's count), runs `step` and advances the host length.
 */
export function decodePosition<T>(cache: NemotronHybridCache, step: () => T): T {
  cache.reserve(1);
  cache.advanceDevice(1);
  const out = step();
  cache.advanceHost(1);
  return out;
}

/**
 * One decode step through `blocks` (backbone index, block), device work only: h [B, 1, H] → the
 * last block's output. With `hiddenStates`, every block's output but the last is pushed onto it.
 * `afterBlock` runs after each block (a pipeline stage reports progress there). The cache's device
 * position must already count the new token ({@link decodePosition}).
 */
export function decodeBlocks(
  blocks: Iterable<readonly [number, NemotronHBlock]>,
  h: Tensor,
  cache: NemotronHybridCache,
  options: { hiddenStates?: Tensor[] | null; afterBlock?: () => void } = {},
): Tensor {
  const { hiddenStates = null, afterBlock } = options;
  // The collected outputs leave the scope with the last one (tidy frees what it does not return).
  const { last, outputs } = tidy(() => {
    const list = [...blocks];
    const outputs: Tensor[] = [];
    let x = h;
    for (const [n, [i, block]] of list.entries()) {
      const entry = cache.layer(i);
      const next = block.decode(x, entry ? { entry, position: cache.position, keyMask: cache.keyMask } : null);
      afterBlock?.();
      if (hiddenStates && n < list.length - 1) outputs.push(next);
      else if (!hiddenStates && x !== h) x.dispose();
      x = next;
    }
    return { last: x, outputs };
  });
  hiddenStates?.push(...outputs);
  return last;
}

/** norm_f and lm_head as one fused projection: h [B, 1, H] → f32 [B, V]. */
export function decodeHeadLogits(normF: RMSNorm, lmHead: Linear, h: Tensor): Tensor {
  return lmHead.fused(reshape(h, [h.shape[0]!, lmHead.inFeatures]), { norm: { weight: normF.weight, eps: normF.eps } });
}

/**
 * `forward` on a decode step (one token per row after cached positions, see {@link decodePosition}):
 * logits f32 [B, 1, V] and, with `outputHidden`, HF's hidden states (the embeddings, every block's
 * output but the last, the final state after norm_f; lm_head then runs unfused on that state).
 */
export function forwardDecodeStep(
  lm: NemotronHForCausalLM,
  prepared: PreparedInputs,
  cache: NemotronHybridCache,
  outputHidden: boolean,
): { logits: Tensor; hiddenStates: Tensor[] | null } {
  const { model, lmHead } = lm;
  return decodePosition(cache, () => {
    const h = prepared.inputIds ? model.embeddings.forward(prepared.inputIds) : prepared.inputsEmbeds!.share();
    const hiddenStates = outputHidden ? [h] : null;
    const last = decodeBlocks([...model.layers].entries(), h, cache, { hiddenStates });
    if (!hiddenStates) return { logits: reshape(decodeHeadLogits(model.normF, lmHead, last), [prepared.batch, 1, lm.config.vocabSize]), hiddenStates };
    const final = model.normF.forward(last);
    hiddenStates.push(final);
    return { logits: lmHead.forward(final), hiddenStates };
  });
}

/**
 * Generation's decode step, recorded once and replayed (`StepProgram`): embeds `ids` (i32 [B], one
 * token per row, written by the previous step), runs the blocks and the fused head, and hands the
 * logits f32 [B, V] to `choose`, which must write its results into tensors that outlive the step.
 * The device counter advances inside the recording, so every replay moves it; {@link run} checks
 * the room and advances the host length after. The cache's room is allocated up front: a recorded
 * step cannot grow it.
 */
export class RecordedDecode {
  private readonly program: StepProgram;
  /** The whole-step native kernel's logits (reused every step), when it runs the step. */
  private readonly nativeLogits: Tensor | null = null;

  constructor(
    lm: NemotronHForCausalLM,
    private readonly cache: NemotronHybridCache,
    ids: Tensor,
    choose: (logits: Tensor) => void,
  ) {
    const batch = cache.batch;
    if (ids.dtype !== 'i32' || ids.size !== batch)
      throw new Error(`RecordedDecode: ids must be i32 with one token per row (${batch}), got ${ids.dtype} [${ids.shape.join(', ')}]`);
    const { model, lmHead } = lm;
    // On the native CPU backend one native call runs the whole step (see native-decode-plan.ts).
    const native = nativeDecodeStep(lm, cache);
    if (native) {
      const logits = keep(empty([batch, lm.config.vocabSize], { device: lm.device }));
      this.nativeLogits = logits;
      const idRow = new Int32Array(ids.storage.cpu!, ids.offset * 4, 1);
      this.program = new StepProgram(lm.device, () => {
        cache.advanceDevice(1);
        native.run(idRow[0]!, cache.length + 1, cache.keyMask, logits);
        choose(logits);
      });
      return;
    }
    this.program = new StepProgram(lm.device, () => {
      cache.advanceDevice(1);
      const h = model.embeddings.forward(reshape(ids, [batch, 1]));
      choose(decodeHeadLogits(model.normF, lmHead, decodeBlocks([...model.layers].entries(), h, cache)));
    });
  }

  /** Runs (or replays) one step: the work is encoded, not waited for. */
  run(): void {
    const cache = this.cache;
    if (cache.length + 1 > cache.capacity)
      throw new Error(`RecordedDecode: the cache is full (${cache.capacity} positions); allocate the room before recording`);
    this.program.run();
    cache.advanceHost(1);
  }

  dispose(): void {
    this.program.dispose();
    this.nativeLogits?.dispose();
  }
}
