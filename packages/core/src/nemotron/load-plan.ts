/**
 * Checking a checkpoint against a config before the model is allocated: the model's tensors (names
 * and shapes) come from building it on a device that allocates nothing, and the checkpoint's from
 * its safetensors headers; a shape that disagrees is traced back to the config fields it depends on
 * (by building the model again with each numeric field changed), so a mistyped `hidden_size` fails
 * at once naming the field and a tensor, instead of allocating gigabytes first.
 */
import { CpuDevice, formatShape, type DType } from '@nemotron-ts/kernels';
import { Storage } from '@nemotron-ts/kernels/internals';
import { NemotronHConfig } from '../config';
import { NemotronHForCausalLM } from './causal-lm';
import { formatLoadReport, type LoadReport } from '../nn/module';
import { CHECKPOINT_SHAPE_LABELS, planCheckpointLoad, type LoadPlan, type PlanOptions, type TensorInfo } from './state-dict';

/** A CPU device whose tensors have a shape and no memory: only for listing a model's tensors, never for computing. */
class ShapeOnlyDevice extends CpuDevice {
  override allocate(dtype: DType, length: number): Storage {
    return new Storage(this, dtype, length, null, new ArrayBuffer(0));
  }

  override freeStorage(): void {}
}

const shapeOnly = new ShapeOnlyDevice();

/** The tensors (our names, shapes) of the model `config` describes; nothing is allocated. */
export function modelTensorInfos(config: NemotronHConfig): TensorInfo[] {
  const model = new NemotronHForCausalLM(config, { device: shapeOnly });
  try {
    return model.namedTensors().map((t) => ({ name: t.name, shape: t.tensor.shape }));
  } finally {
    model.dispose();
  }
}

/** Plans loading `checkpoint` (key → shape) into the model `config` describes, without allocating it. */
export function planPretrainedLoad(config: NemotronHConfig, checkpoint: ReadonlyMap<string, readonly number[]>, options: PlanOptions = {}): LoadPlan {
  return planCheckpointLoad(modelTensorInfos(config), checkpoint, options);
}

export interface FitOptions extends PlanOptions {
  /** Missing and unexpected tensors are errors too (default true); a mis-shaped one always is. */
  strict?: boolean;
}

/**
 * Throws when `checkpoint` does not fit the model `config` describes (a mis-shaped tensor, and with
 * `strict` a missing or unexpected one), before anything is allocated. A shape mismatch names the
 * config field(s) of `configSource` that set the disagreeing dimension. Returns the plan's report.
 */
export function checkCheckpointFits(
  config: NemotronHConfig,
  checkpoint: ReadonlyMap<string, readonly number[]>,
  configSource: string,
  options: FitOptions = {},
): LoadReport {
  const { report } = planPretrainedLoad(config, checkpoint, options);
  const strict = options.strict ?? true;
  const faults: LoadReport = strict ? report : { ...report, missing: [], unexpected: [], ignored: [] };
  if (!faults.missing.length && !faults.unexpected.length && !faults.mismatched.length) return report;
  const first = faults.mismatched[0];
  if (first) {
    const fields = fieldsSettingShape(config, checkpoint, first.name, first.expected, options);
    const which = fields.length
      ? `${fields.length > 1 ? 'fields' : 'field'} ${fields.map((f) => `${f} (${String(config.toJSON()[f])})`).join(', ')}`
      : 'the config';
    throw new Error(
      `${configSource} does not match the checkpoint: ${which} ${fields.length > 1 ? 'give' : 'gives'} '${first.name}' the shape ${formatShape(first.expected)}, the checkpoint has ${formatShape(first.actual)}` +
        ` (${formatLoadReport(faults, CHECKPOINT_SHAPE_LABELS)})`,
    );
  }
  throw new Error(`${configSource} does not match the checkpoint: ${formatLoadReport(faults, CHECKPOINT_SHAPE_LABELS)}`);
}

/** The numeric config fields whose value changes the dimensions of `key` that disagree with the checkpoint. */
function fieldsSettingShape(
  config: NemotronHConfig,
  checkpoint: ReadonlyMap<string, readonly number[]>,
  key: string,
  expected: readonly number[],
  options: PlanOptions,
): string[] {
  const actual = checkpoint.get(key)!;
  const json = config.toJSON();
  const out: string[] = [];
  for (const [field, value] of Object.entries(json)) {
    if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) continue;
    let changed: NemotronHConfig;
    try {
      changed = NemotronHConfig.fromJSON({ ...json, [field]: value * 2 });
    } catch {
      continue; // the doubled value is not a valid config (divisibility): cannot tell
    }
    const entry = planPretrainedLoad(changed, new Map([[key, actual]]), options).report.mismatched.find((m) => m.name === key);
    const shape = entry ? entry.expected : actual; // no mismatch: the doubled value fits
    if (shape.length !== expected.length || shape.some((d, i) => d !== expected[i] && expected[i] !== actual[i])) out.push(field);
  }
  return out;
}
