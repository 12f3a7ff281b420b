/**
 * Generation (`NemotronHForCausalLM.generate` / `generateStream`): prefill the prompt into a
 * `NemotronHybridCache`, then one token per row per step until every row finished or
 * `maxNewTokens` were made.
 *
 * Everything a step needs stays on the device: the sampled ids are written straight into the
 * tensor the next step embeds, the step counter is the cache's device position, and finished rows,
 * EOS, the history and the repetition-penalty set are kept by `recordTokens`. So the decode step is
 * a `RecordedDecode` (nemotron/decode.ts, a `StepProgram`): recorded once, replayed for every token, and the host never waits for a token
 * before recording the next step — ids are read back one step behind, for streaming, EOS and stop
 * strings. Logits are never read back (unless `outputStepLogits` asks for them, at the end).
 *
 * Left-padded batches: the prompt's padding goes into the cache's key mask and Mamba ignores pads
 * (see `forward`), so every row generates what its prompt alone would (greedy; draws also depend
 * on the row's index).
 */
import {
  NON_FINITE_TOKEN,
  OutOfMemoryError,
  Tensor,
  copyIntoAt,
  noGrad,
  recordTokens,
  reshape,
  sampleTokens,
  tensor,
  tidy,
  zeros,
  type SamplingOptions,
} from '@nemotron-ts/kernels';
import { checkAttentionMask, checkPaddingLayout, checkTokenIds, rowsShape, type Rows } from '../nemotron/inputs';
import { NemotronHybridCache } from '../nemotron/cache';
import type { NemotronHForCausalLM } from '../nemotron/causal-lm';
import { RecordedDecode } from '../nemotron/decode';
import { resolveGeneration, type DecodingOptions, type GenerationConfig, type ResolvedGeneration } from './generation-config';
import { TextStream, type TokenDecoder } from './text-stream';

export interface GenerateOptions extends DecodingOptions {
  /** i32 [B, T] or rows: the prompts (left-padded when their lengths differ). Exactly one of this and `inputsEmbeds`. */
  inputIds?: Tensor | Rows;
  /**
   * f32 or bf16 [B, T, H]: prompt embeddings instead of ids (HF's `inputs_embeds`). The repetition
   * penalty then sees only generated tokens, and `sequences` holds only them, as in HF.
   */
  inputsEmbeds?: Tensor;
  /** [B, T] or rows, 1 = token, 0 = padding (HF's attention_mask). */
  attentionMask?: Tensor | Rows;
  /** A row finishes once its generated text contains one of these (needs `tokenizer`). */
  stopStrings?: readonly string[];
  /** Decodes ids for stop strings and for the streamed text of each event. */
  tokenizer?: TokenDecoder;
  /** Overrides the model's generation config (generation_config.json). */
  generationConfig?: GenerationConfig;
  /** Called with every step's tokens (and text, with a tokenizer), as they are known. */
  onToken?: (event: GenerationEvent) => void;
  /** Also return the logits each token was chosen from (read back once, at the end). */
  outputStepLogits?: boolean;
  /**
   * Prompt positions per prefill piece (default 512): a longer unpadded prompt of
   * ids goes through the cache in pieces, so only a piece's temporaries are live at once.
   */
  prefillPiece?: number;
}

/** One generated position of every row. */
export interface GenerationEvent {
  /** 0 for the first generated token. */
  readonly step: number;
  /** One token per row (the pad id for rows that finished earlier). */
  readonly tokens: readonly number[];
  /** Which rows have finished, this step included. */
  readonly finished: readonly boolean[];
  /** With a tokenizer: the new text of each row ('' while a character is incomplete). */
  readonly text: readonly string[] | null;
}

export type FinishReason = 'eos' | 'stop_string' | 'length';

export interface GenerationStats {
  readonly batch: number;
  /** Prompt positions per row (padding included). */
  readonly promptTokens: number;
  /** Steps run (tokens per row). */
  readonly steps: number;
  /** From the call until the first tokens were known: prefill and the first choice. */
  readonly prefillMs: number;
  /** From the first tokens until the last. */
  readonly decodeMs: number;
  /** Prompt positions (all rows) per second of prefill. */
  readonly promptTokensPerS: number;
  /** Decode steps per second (tokens per row per second). */
  readonly decodeTokensPerS: number;
}

export interface GenerateResult {
  /** The generated tokens per row (pad after a row finished), one per step. */
  readonly tokens: number[][];
  /**
   * HF's `sequences`: per row, the prompt ids (padding included) followed by `tokens`; only
   * `tokens` when the prompt was given as `inputsEmbeds`.
   */
  readonly sequences: number[][];
  /** Per row, the tokens up to and including the one that finished it (all of them for 'length'). */
  readonly lengths: number[];
  readonly finishReasons: FinishReason[];
  /** With a tokenizer: each row's generated text up to where it finished (special tokens skipped). */
  readonly text: string[] | null;
  /** With `outputStepLogits`: per row, [steps × V] logits each token was chosen from. */
  readonly stepLogits: Float32Array[] | null;
  readonly stats: GenerationStats;
}

/** Host copies of the prompt, checked (tensors are read back once). */
async function promptRows(options: GenerateOptions, vocab: number): Promise<{ ids: Rows | null; batch: number; length: number; mask: Rows | null }> {
  const rowsOf = async (t: Tensor): Promise<number[][]> => {
    if (t.rank !== 2) throw new Error(`generate: prompt tensors must be [B, T], got [${t.shape.join(', ')}]`);
    const flat = Array.from(await t.toFloat32());
    const [b, l] = t.shape as [number, number];
    return Array.from({ length: b }, (_, r) => flat.slice(r * l, (r + 1) * l));
  };
  if ((options.inputIds === undefined) === (options.inputsEmbeds === undefined)) throw new Error('generate: give exactly one of inputIds and inputsEmbeds');
  let ids: Rows | null = null;
  let b: number;
  let l: number;
  if (options.inputIds !== undefined) {
    ids = checkTokenIds(options.inputIds instanceof Tensor ? await rowsOf(options.inputIds) : options.inputIds, 'generate: inputIds', vocab);
    [b, l] = rowsShape(ids);
  } else {
    const embeds = options.inputsEmbeds!;
    if (embeds.rank !== 3) throw new Error(`generate: inputsEmbeds must be [B, T, H], got [${embeds.shape.join(', ')}]`);
    [b, l] = embeds.shape as [number, number];
  }
  const maskValue = options.attentionMask;
  const mask =
    maskValue === undefined ? null : checkAttentionMask(maskValue instanceof Tensor ? await rowsOf(maskValue) : maskValue, 'generate: attentionMask');
  if (mask) {
    const [mb, ml] = rowsShape(mask);
    if (mb !== b || ml !== l) throw new Error(`generate: attentionMask [${mb}, ${ml}] does not match the prompt [${b}, ${l}]`);
    mask.forEach((row, r) => {
      if (!row.includes(1)) throw new Error(`generate: row ${r} of the prompt is all padding`);
    });
    checkPaddingLayout(mask, 'generate: attentionMask', 'left');
  }
  return { ids, batch: b, length: l, mask };
}

/**
 * Prompt positions per prefill piece: a multiple of the SSD chunk of every released config (128),
 * long enough that the GEMMs stay efficient (prefill 512 t/s is unchanged), short enough to bound
 * the prefill's temporaries.
 */
export const PREFILL_PIECE = 512;

/** [start, end) of each prefill piece of a `length`-position prompt. */
export function prefillPieces(length: number, piece = PREFILL_PIECE): (readonly [number, number])[] {
  const pieces: (readonly [number, number])[] = [];
  for (let at = 0; at < length; at += piece) pieces.push([at, Math.min(length, at + piece)] as const);
  return pieces.length > 0 ? pieces : [[0, length] as const];
}

/** The device tensors a generation keeps between steps. */
interface StepTensors {
  ids: Tensor;
  finished: Tensor;
  history: Tensor;
  eos: Tensor | null;
  seen: Tensor | null;
  logits: Tensor | null;
}

function allocate(
  model: NemotronHForCausalLM,
  g: ResolvedGeneration,
  prompt: { ids: Rows | null; batch: number; mask: Rows | null },
  withLogits: boolean,
): StepTensors {
  const device = model.lmHead.weight.device;
  const batch = prompt.batch;
  const vocab = model.config.vocabSize;
  let seen: Tensor | null = null;
  if (g.repetitionPenalty !== 1) {
    // HF penalises every token of input_ids; padding is left out so a row equals its prompt alone.
    const marks = new Int32Array(batch * vocab);
    prompt.ids?.forEach((row, b) =>
      row.forEach((id, t) => {
        if (prompt.mask?.[b]![t] !== 0) marks[b * vocab + id] = 1;
      }),
    );
    seen = tensor(marks, [batch, vocab], { device });
  }
  return {
    ids: zeros([batch], { dtype: 'i32', device }),
    finished: zeros([batch], { dtype: 'i32', device }),
    history: zeros([batch, g.maxNewTokens], { dtype: 'i32', device }),
    eos: g.eosTokenIds.length > 0 ? tensor(Int32Array.from(g.eosTokenIds), [g.eosTokenIds.length], { device }) : null,
    seen,
    logits: withLogits ? zeros([batch, g.maxNewTokens, vocab], { device }) : null,
  };
}

/**
 * Streams generation: yields one event per step, returns the result. See the file header and
 * {@link GenerateOptions}.
 */
export async function* generateStream(model: NemotronHForCausalLM, options: GenerateOptions): AsyncGenerator<GenerationEvent, GenerateResult> {
  const config = model.config;
  const vocab = config.vocabSize;
  const device = model.lmHead.weight.device;
  const start = performance.now();
  const prompt = await promptRows(options, vocab);
  const { batch, length: promptLength } = prompt;
  const g = resolveGeneration(options, options.generationConfig ?? model.generationConfig, config, promptLength);
  const stopStrings = options.stopStrings ?? [];
  const piece = options.prefillPiece ?? PREFILL_PIECE;
  if (!Number.isInteger(piece) || piece < 1) throw new Error(`generate: prefillPiece must be a positive integer, got ${piece}`);
  if (stopStrings.length > 0 && !options.tokenizer) throw new Error('generate: stopStrings need a tokenizer');
  if (stopStrings.some((s) => typeof s !== 'string' || s.length === 0)) throw new Error('generate: stop strings must be non-empty strings');

  const capacity = promptLength + g.maxNewTokens;
  // A huge maxNewTokens fails here: name it, not just the tensor.
  const tooLarge = (e: unknown) =>
    e instanceof OutOfMemoryError
      ? new OutOfMemoryError(
          `generate: maxNewTokens ${g.maxNewTokens} needs a cache of ${capacity} positions for ${batch} row(s), too large for this device (${e.message})`,
        )
      : e;
  let cache: NemotronHybridCache;
  try {
    cache = new NemotronHybridCache(config, { batch, device, capacity });
  } catch (e) {
    throw tooLarge(e);
  }
  let t: StepTensors;
  try {
    t = allocate(model, g, prompt, options.outputStepLogits ?? false);
  } catch (e) {
    cache.dispose();
    throw tooLarge(e);
  }
  const sampling: SamplingOptions = {
    doSample: g.doSample,
    temperature: g.temperature,
    topK: g.topK,
    topP: g.topP,
    minP: g.minP,
    repetitionPenalty: g.repetitionPenalty,
    seed: g.seed,
    // The draw of step s uses counter s: the device position minus the prompt length.
    counter: cache.position,
    counterOffset: -promptLength,
    seen: t.seen ?? undefined,
  };
  /** Chooses every row's next token from logits [B, V] and records it (device work only). */
  const choose = (logits: Tensor) => {
    const sampled = sampleTokens(logits, sampling);
    recordTokens(sampled, {
      ids: t.ids,
      finished: t.finished,
      padId: g.padTokenId,
      eos: t.eos,
      history: t.history,
      position: cache.position,
      base: promptLength,
      seen: t.seen,
    });
    if (t.logits) copyIntoAt(t.logits, reshape(logits, [batch, 1, vocab]), 1, cache.position, -promptLength);
  };
  const program = new RecordedDecode(model, cache, t.ids, choose);

  const tokens: number[][] = Array.from({ length: batch }, () => []);
  const finished = new Array<boolean>(batch).fill(false);
  const reasons: FinishReason[] = new Array<FinishReason>(batch).fill('length');
  /** Tokens up to and including the one that finished each row (-1 while running). */
  const ends = new Array<number>(batch).fill(-1);
  const streams = options.tokenizer ? Array.from({ length: batch }, () => new TextStream(options.tokenizer!)) : null;
  const eos = new Set(g.eosTokenIds);
  let firstKnown = 0;
  let lastKnown = 0;
  let steps = 0;
  try {
    noGrad(() => {
      // A long unpadded prompt goes through in pieces (the cache carries the conv windows, scan
      // states and keys between them): a piece's temporaries, not the whole prompt's, are live at
      // once (bench-small bf16, 2048 positions: 191 → 128 MB live at the peak).
      const pieces = prompt.ids && !prompt.mask ? prefillPieces(promptLength, piece) : [[0, promptLength] as const];
      for (const [at, end] of pieces) {
        const pieceStart = performance.now();
        tidy(() => {
          const prefillInputs =
            pieces.length === 1
              ? options.inputsEmbeds
                ? { inputsEmbeds: options.inputsEmbeds }
                : { inputIds: options.inputIds }
              : { inputIds: prompt.ids!.map((row) => row.slice(at, end)) };
          const { logits } = model.forward({ ...prefillInputs, attentionMask: options.attentionMask, cache, logitsToKeep: 1 });
          if (end === promptLength) choose(reshape(logits, [batch, vocab]));
        });
        // A piece's JS garbage would otherwise add up over a long prompt (bench-small bf16, 2048
        // positions: ~5 MiB of peak RSS); a collection costs ~1 % of a 512-position piece.
        if (end !== promptLength && device.kind === 'cpu') device.collectGarbage(performance.now() - pieceStart, 0.02);
      }
    });
    // The prefill's temporaries (a piece's activations) are sizes no decode step asks for: kept in
    // the CPU pool they would sit on top of the decode's own (bench-small: ~32 MiB of peak RSS).
    if (device.kind === 'cpu') device.trimPool();
    let pending: Promise<Int32Array> | null = t.ids.data<'i32'>();
    // On WebGPU the next step is recorded before waiting for this one's tokens, so the device never
    // idles; the CPU backend runs a step as it is recorded, so there it waits first (nothing to
    // overlap, and a non-finite row is reported before the next step embeds it).
    const overlap = device.kind !== 'cpu';
    for (let step = 0; pending; step++) {
      const recordNext = (): Promise<Int32Array> | null => {
        if (step + 1 >= g.maxNewTokens) return null;
        noGrad(() => program.run());
        return t.ids.data<'i32'>();
      };
      let next = overlap ? recordNext() : null;
      const got = await pending;
      const now = performance.now();
      if (step === 0) firstKnown = now;
      lastKnown = now;
      steps = step + 1;
      const broken = got.findIndex((id, b) => !finished[b] && id === NON_FINITE_TOKEN);
      if (broken >= 0) {
        throw new Error(
          `generate: the logits of row ${broken} at step ${step} hold NaN or infinite values (non-finite weights in the checkpoint, or activations that overflowed)`,
        );
      }
      if (!overlap) next = recordNext();
      const stepTokens = Array.from(got, (id, b) => (finished[b] ? g.padTokenId : id));
      const text = streams ? stepTokens.map((id, b) => (finished[b] ? '' : streams[b]!.push(id))) : null;
      stepTokens.forEach((id, b) => {
        const running = !finished[b];
        tokens[b]!.push(id);
        if (!running) return;
        const reason: FinishReason | null = eos.has(id)
          ? 'eos'
          : stopStrings.length > 0 && stopStrings.some((s) => streams![b]!.text.includes(s))
            ? 'stop_string'
            : null;
        if (!reason) return;
        finished[b] = true;
        reasons[b] = reason;
        ends[b] = tokens[b]!.length;
      });
      const event: GenerationEvent = { step, tokens: stepTokens, finished: [...finished], text };
      options.onToken?.(event);
      yield event;
      if (finished.every(Boolean)) break;
      pending = next;
    }
    const stepLogits = t.logits ? await stepLogitsOf(t.logits, batch, steps, g.maxNewTokens, vocab) : null;
    const text = options.tokenizer
      ? tokens.map((row, b) => options.tokenizer!.decode(row.slice(0, ends[b]! < 0 ? row.length : ends[b]), { skipSpecialTokens: true }))
      : null;
    const prefillMs = firstKnown - start;
    const decodeMs = lastKnown - firstKnown;
    return {
      tokens,
      sequences: tokens.map((row, b) => [...(prompt.ids?.[b] ?? []), ...row]),
      lengths: tokens.map((row, b) => (ends[b]! < 0 ? row.length : ends[b]!)),
      finishReasons: reasons,
      text,
      stepLogits,
      stats: {
        batch,
        promptTokens: promptLength,
        steps,
        prefillMs,
        decodeMs,
        promptTokensPerS: (batch * promptLength * 1000) / prefillMs,
        decodeTokensPerS: steps > 1 ? ((steps - 1) * 1000) / decodeMs : 0,
      },
    };
  } finally {
    program.dispose();
    for (const x of Object.values(t)) (x as Tensor | null)?.dispose();
    cache.dispose();
    // The CPU pool keeps up to the live bytes (the weights) of freed buffers: this call's cache and
    // temporaries, whose sizes the next prompt length need not repeat. Dropping them costs the next
    // prefill no measurable time (its layers reuse each other's buffers) and held ~60 MiB of peak
    // RSS across bench-small calls of three prompt lengths. (Trimming only to the pool's floor kept
    // those; trimming all costs a repeated short call ~10–30 MiB of peak, the freed pages returning
    // to the OS a little after the next call allocates its own.) The call's JS garbage goes too.
    if (device.kind === 'cpu') device.releaseIdleMemory(performance.now() - start);
  }
}

/** Per row, the first `steps` rows of the [B, maxNew, V] logits history. */
async function stepLogitsOf(history: Tensor, batch: number, steps: number, maxNew: number, vocab: number): Promise<Float32Array[]> {
  const all = (await history.data()) as Float32Array;
  return Array.from({ length: batch }, (_, b) => all.slice(b * maxNew * vocab, (b * maxNew + steps) * vocab));
}

/** Runs {@link generateStream} to the end. */
export async function generate(model: NemotronHForCausalLM, options: GenerateOptions): Promise<GenerateResult> {
  const stream = generateStream(model, options);
  for (;;) {
    const next = await stream.next();
    if (next.done) return next.value;
  }
}
