/**
 * The state-dict adapter (spec §6): maps checkpoint tensor names and shapes to our module tree and
 * back. The mapping is pure (names and shapes in, a plan out), so a lazy safetensors reader can feed
 * the loader one tensor at a time through a callback, and never holds more than one layer's experts.
 *
 * Checkpoint layouts:
 * - `hf` — HF safetensors on disk: `backbone.*` (some tools write `model.*`; some vintages name the
 *   embedding `backbone.embedding.weight`), routed experts one matrix each
 *   (`mixer.experts.{e}.up_proj.weight` [I, Hx], `.down_proj.weight` [Hx, I]), conv weight [C, 1, K].
 * - `hf-v5` — HF transformers' in-memory layout: `model.*`, experts stacked per layer
 *   (`mixer.experts.up_proj` [E, I, Hx], `mixer.experts.down_proj` [E, Hx, I]), conv weight [C, 1, K].
 * Both keep `lm_head.weight` and the MTP keys `mtp.layers.{j}.*` (no prefix). Ours equal `hf-v5`
 * except the conv weight, which is [C, K].
 *
 * Loading detects the layout from the keys (per layer for the experts). `mtp.*` keys load into an
 * MTP model; a model without MTP reports them as ignored, as HF does. With `tie_word_embeddings`
 * and no `lm_head.weight`, the head is loaded from the embedding matrix (an independent copy).
 */
import {
  cast,
  copyInto,
  empty,
  formatShape,
  isFloat,
  narrow,
  noGrad,
  reshape,
  shapesEqual,
  tensor,
  tidy,
  type Device,
  type DType,
  type FloatDType,
  type Tensor,
} from '@nemotron-ts/kernels';
import { formatLoadReport, transfer, type LoadReport, type Module, type ShapeLabels, type ShapeMismatch } from '../nn/module';

export type CheckpointFormat = 'hf' | 'hf-v5';

/** A tensor of our module tree, by name and shape. */
export interface TensorInfo {
  readonly name: string;
  readonly shape: readonly number[];
}

/** How one of our tensors is assembled: a single checkpoint tensor reshaped, or experts stacked along dim 0. */
export interface LoadEntry {
  /** Our tensor name. */
  readonly target: string;
  readonly shape: readonly number[];
  /** Checkpoint keys: one, or one per expert (stacked in order along dim 0). */
  readonly sources: readonly string[];
  /** Shape of each source tensor in the checkpoint. */
  readonly sourceShape: readonly number[];
}

/** Shape labels of a checkpoint load's report (its names are checkpoint keys). */
export const CHECKPOINT_SHAPE_LABELS: ShapeLabels = { expected: 'model needs', actual: 'checkpoint has' };

export interface LoadPlan {
  /** Our tensors that can be loaded, in model order. */
  readonly entries: readonly LoadEntry[];
  readonly report: LoadReport;
}

export interface PlanOptions {
  /** Load lm_head from the embedding matrix when the checkpoint has no `lm_head.weight`. */
  tieWordEmbeddings?: boolean;
}

const EXPERTS = /^(.*\.mixer\.experts)\.(up_proj|down_proj)$/;
const CONV_WEIGHT = /\.mixer\.conv1d\.weight$/;

/**
 * Plans loading `targets` (our tensors) from a checkpoint given as key → shape. Pure: no tensor is
 * touched.
 */
export function planCheckpointLoad(targets: readonly TensorInfo[], checkpoint: ReadonlyMap<string, readonly number[]>, options: PlanOptions = {}): LoadPlan {
  const keys = [...checkpoint.keys()];
  const prefix = keys.some((k) => k.startsWith('backbone.')) ? 'backbone.' : 'model.';
  const consumed = new Set<string>();
  const missing: string[] = [];
  const mismatched: ShapeMismatch[] = [];
  const entries: LoadEntry[] = [];

  for (const target of targets) {
    const alternatives = sourceAlternatives(target, prefix, options);
    // The first alternative whose keys the checkpoint has (any of them); else report the first.
    const chosen = alternatives.find((a) => a.sources.some((k) => checkpoint.has(k))) ?? alternatives[0]!;
    let ok = true;
    for (const key of chosen.sources) {
      const shape = checkpoint.get(key);
      if (shape === undefined) {
        missing.push(key);
        ok = false;
        continue;
      }
      consumed.add(key);
      if (!shapesEqual(shape, chosen.sourceShape)) {
        mismatched.push({ name: key, expected: [...chosen.sourceShape], actual: [...shape] });
        ok = false;
      }
    }
    if (ok) entries.push({ target: target.name, shape: [...target.shape], sources: chosen.sources, sourceShape: chosen.sourceShape });
  }

  const modelHasMtp = targets.some((t) => t.name.startsWith('mtp.'));
  const leftover = keys.filter((k) => !consumed.has(k));
  const ignored = modelHasMtp ? [] : leftover.filter((k) => k.startsWith('mtp.'));
  const unexpected = leftover.filter((k) => !ignored.includes(k));
  return { entries, report: { missing, unexpected, mismatched, ignored } };
}

interface SourceSet {
  readonly sources: readonly string[];
  readonly sourceShape: readonly number[];
}

/** Where a target can come from, in order of preference. */
function sourceAlternatives(target: TensorInfo, prefix: string, options: PlanOptions): SourceSet[] {
  const { name, shape } = target;
  const key = checkpointName(name, prefix);
  const experts = EXPERTS.exec(key);
  if (experts && shape.length === 3) {
    const [E, ...part] = shape as [number, ...number[]];
    const perExpert = Array.from({ length: E }, (_, e) => `${experts[1]}.${e}.${experts[2]}.weight`);
    return [
      { sources: [key], sourceShape: shape },
      { sources: perExpert, sourceShape: part },
    ];
  }
  if (CONV_WEIGHT.test(key) && shape.length === 2) return [{ sources: [key], sourceShape: [shape[0]!, 1, shape[1]!] }];
  if (name === 'model.embeddings.weight') {
    return [
      { sources: [key], sourceShape: shape },
      { sources: [`${prefix}embedding.weight`], sourceShape: shape },
    ];
  }
  if (name === 'lm_head.weight' && options.tieWordEmbeddings) {
    return [
      { sources: [key], sourceShape: shape },
      { sources: [`${prefix}embeddings.weight`], sourceShape: shape },
      { sources: [`${prefix}embedding.weight`], sourceShape: shape },
    ];
  }
  return [{ sources: [key], sourceShape: shape }];
}

/** Our `model.*` names live under the checkpoint's backbone prefix; `lm_head.*` and `mtp.*` keep theirs. */
function checkpointName(ours: string, prefix: string): string {
  return ours.startsWith('model.') ? prefix + ours.slice('model.'.length) : ours;
}

/** Where a loaded tensor will end up: a loader may create it there directly (it need not). */
export interface LoadTarget {
  readonly device: Device;
  readonly dtype: DType;
}

/**
 * Produces the checkpoint tensor stored under `key`, on any device and in any float dtype (the
 * adapter moves and casts it; creating it on `target.device` saves a round trip through the host).
 * The adapter owns what the loader returns and disposes it once it is copied into the model.
 */
export type TensorLoader = (key: string, target: LoadTarget) => Tensor | Promise<Tensor>;

export interface LoadCheckpointOptions extends PlanOptions {
  /** Throw, before loading anything, when a key is missing or unexpected or a shape mismatches. Default true. */
  strict?: boolean;
}

/**
 * Loads a checkpoint into `model` one tensor at a time: plans from the key → shape map, then asks
 * `load` for each source, reshapes (conv) or stacks experts on the model's device, and installs the
 * result (cast to the slot's dtype). Returns the plan's report. A loader error stops the load with
 * the tensors before it already installed.
 */
export async function loadCheckpoint(
  model: Module,
  checkpoint: ReadonlyMap<string, readonly number[]>,
  load: TensorLoader,
  options: LoadCheckpointOptions = {},
): Promise<LoadReport> {
  const plan = planCheckpointLoad(
    model.namedTensors().map((t) => ({ name: t.name, shape: t.tensor.shape })),
    checkpoint,
    options,
  );
  const { report } = plan;
  if ((options.strict ?? true) && (report.missing.length || report.unexpected.length || report.mismatched.length)) {
    throw new Error(`loadCheckpoint: ${formatLoadReport(report, CHECKPOINT_SHAPE_LABELS)}`);
  }
  for (const entry of plan.entries) {
    const target = model.getTensor(entry.target);
    const value = entry.sources.length === 1 ? await loadOne(entry, target, load) : await loadStacked(entry, target, load);
    try {
      model.setTensor(entry.target, value);
    } finally {
      value.dispose();
    }
  }
  return report;
}

/** One source, on the target's device, reshaped to the target shape. */
async function loadOne(entry: LoadEntry, target: Tensor, load: TensorLoader): Promise<Tensor> {
  const source = await fetchSource(entry.sources[0]!, entry.sourceShape, target, load);
  if (shapesEqual(source.shape, entry.shape)) return source;
  const view = noGrad(() => reshape(source, entry.shape));
  source.dispose();
  return view;
}

/** Per-expert sources stacked along dim 0 into one tensor of the target's dtype, on the target's device. */
async function loadStacked(entry: LoadEntry, target: Tensor, load: TensorLoader): Promise<Tensor> {
  const partSize = entry.shape.slice(1).reduce((a, b) => a * b, 1);
  // A bf16 slice that starts mid-word cannot be written on its own: stage odd-sized parts in f32.
  const stagingDtype = target.dtype === 'bf16' && partSize % 2 === 1 ? 'f32' : target.dtype;
  const stacked = empty(entry.shape, { dtype: stagingDtype, device: target.device });
  try {
    for (let e = 0; e < entry.sources.length; e++) {
      const source = await fetchSource(entry.sources[e]!, entry.sourceShape, target, load);
      noGrad(() => tidy(() => copyInto(narrow(stacked, 0, e, 1), source)));
      source.dispose();
    }
    return stacked;
  } catch (e) {
    stacked.dispose();
    throw e;
  }
}

async function fetchSource(key: string, shape: readonly number[], target: Tensor, load: TensorLoader): Promise<Tensor> {
  const t = await load(key, { device: target.device, dtype: target.dtype });
  if (!shapesEqual(t.shape, shape)) {
    t.dispose();
    throw new Error(`loadCheckpoint: the loader returned ${formatShape(t.shape)} for '${key}', whose header says ${formatShape(shape)}`);
  }
  if (t.device === target.device) return t;
  const moved = await transfer(t, target.device);
  t.dispose();
  return moved;
}

/** One checkpoint tensor to write: its key and shape, and where its values come from in our tree. */
export interface ExportEntry {
  readonly key: string;
  readonly shape: readonly number[];
  /** Our tensor name. */
  readonly source: string;
  /** For per-expert keys: the expert's index along dim 0 of the stacked source. */
  readonly expert?: number;
}

/** The checkpoint keys and shapes our tensors are saved under (pure). */
export function planCheckpointExport(tensors: readonly TensorInfo[], format: CheckpointFormat): ExportEntry[] {
  const prefix = format === 'hf' ? 'backbone.' : 'model.';
  const out: ExportEntry[] = [];
  for (const { name, shape } of tensors) {
    const key = checkpointName(name, prefix);
    const experts = EXPERTS.exec(key);
    if (format === 'hf' && experts && shape.length === 3) {
      const [E, ...part] = shape as [number, ...number[]];
      for (let e = 0; e < E; e++) out.push({ key: `${experts[1]}.${e}.${experts[2]}.weight`, shape: part, source: name, expert: e });
    } else if (CONV_WEIGHT.test(key) && shape.length === 2) out.push({ key, shape: [shape[0]!, 1, shape[1]!], source: name });
    else out.push({ key, shape: [...shape], source: name });
  }
  return out;
}

export interface CheckpointTensorsOptions {
  /** Floating tensors are converted to this dtype, except keep-f32 ones (default: as in the model). */
  dtype?: FloatDType;
}

/**
 * Every checkpoint tensor of `model` in `format`, one `[key, tensor]` pair at a time, in the model's
 * dtypes or `options.dtype` (keep-f32 tensors — A_log, dt_bias, D, the correction bias — stay f32,
 * as NeMo exports them). Each tensor is a contiguous handle (possibly sharing the model's storage:
 * do not write to it) that is disposed when the next pair is requested or the iteration ends.
 */
export function* checkpointTensors(model: Module, format: CheckpointFormat, options: CheckpointTensorsOptions = {}): Generator<[string, Tensor]> {
  const named = model.namedTensors();
  const keepF32 = new Set(named.filter((t) => t.keepF32).map((t) => t.name));
  const entries = planCheckpointExport(
    named.map((t) => ({ name: t.name, shape: t.tensor.shape })),
    format,
  );
  for (const entry of entries) {
    const source = model.getTensor(entry.source);
    const dtype = options.dtype && isFloat(source.dtype) && !keepF32.has(entry.source) ? options.dtype : source.dtype;
    const out = noGrad(() => tidy(() => cast(reshape(entry.expert === undefined ? source : narrow(source, 0, entry.expert, 1), entry.shape), dtype)));
    try {
      yield [entry.key, out];
    } finally {
      out.dispose();
    }
  }
}

/**
 * The gradient of every checkpoint tensor of `model` in `format` (after a backward), one
 * `[key, f32 tensor]` pair at a time in the checkpoint's shape — per-expert keys sliced from the
 * stacked experts' gradient — and zeros where no gradient flowed (buffers such as the router's
 * correction bias, tensors the loss does not reach). Each tensor is disposed when the next pair is
 * requested or the iteration ends.
 */
export function* checkpointGradients(model: Module, format: CheckpointFormat): Generator<[string, Tensor]> {
  const entries = planCheckpointExport(
    model.namedTensors().map((t) => ({ name: t.name, shape: t.tensor.shape })),
    format,
  );
  for (const entry of entries) {
    const source = model.getTensor(entry.source);
    const grad = source.grad;
    const out = grad
      ? noGrad(() => tidy(() => cast(reshape(entry.expert === undefined ? grad : narrow(grad, 0, entry.expert, 1), entry.shape), 'f32')))
      : tensor(new Float32Array(entry.shape.reduce((a, b) => a * b, 1)), entry.shape, { device: source.device });
    try {
      yield [entry.key, out];
    } finally {
      out.dispose();
    }
  }
}

/**
 * Hands every checkpoint tensor of `model` in `format` to `sink`, one at a time (see
 * {@link checkpointTensors}); each is disposed once the sink's promise settles.
 */
export async function exportCheckpoint(
  model: Module,
  format: CheckpointFormat,
  sink: (key: string, tensor: Tensor) => void | Promise<void>,
  options: CheckpointTensorsOptions = {},
): Promise<void> {
  for (const [key, tensor] of checkpointTensors(model, format, options)) await sink(key, tensor);
}
