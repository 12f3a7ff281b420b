/**
 * `nemotron forward --model DIR --input FILE --out FILE [--dtype f32|bf16] [--lora DIR|REPO_ID]
 * [--grads] [--no-strict]`: one forward pass over the inputs in FILE (see forward-inputs.ts),
 * written as a safetensors file with `logits` (f32 [B, T, V]) and, when labels are given, `loss`
 * (f32 [1]).
 *
 * `--grads` also backpropagates that loss (HF's: mean cross-entropy of logits[t] against
 * labels[t + 1]) and writes `grad/<name>` (f32) for every checkpoint tensor under its checkpoint
 * name — per-expert keys for routed experts, zeros where no gradient flows (the router's
 * correction bias, `mtp.*` under the main loss). When FILE has an `mtp` block and the model has
 * MTP, the MTP total loss on it (NeMo's: pre-shifted labels, main + scaled depth losses) is
 * backpropagated as well, into `mtp/loss` and `mtp/grad/<name>`. The names are those of a fixture's
 * expected.safetensors. With `--lora` the adapters' gradients come as `grad/<PEFT key>`, and the
 * base tensors' as well. Weights default to f32 with `--grads` (bf16 ones are upcast exactly).
 */
import { join } from 'node:path';
import { NemotronHConfig, checkpointGradients, loraHandle, peftTensorKeys, planCheckpointExport, type CheckpointFormat } from '@nemotron-ts/core';
import { Checkpoint, readConfigJson, resolveCheckpoint, saveSafetensors } from '@nemotron-ts/hub';
import { backward, getCpuDevice, noGrad, reshape, tensor, tidy, type Device, type Tensor } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../pretrained';
import { requireFlag, stringFlag, UsageError, type ParsedArgs } from './args';
import { readForwardInputs } from './forward-inputs';
import { applyLoraAdapterFlag, LORA_ADAPTER_FLAG } from './lora-flags';
import { checkOutFile, writingOutFile } from './out-file';

export const FORWARD_FLAGS = ['model', 'input', 'out', 'dtype', LORA_ADAPTER_FLAG, 'grads', 'no-strict'] as const;
export const FORWARD_BOOLEAN_FLAGS = ['grads', 'no-strict'] as const;

export async function runForward(args: ParsedArgs, openDevice: () => Promise<Device>): Promise<void> {
  const modelPath = requireFlag(args, 'model');
  const inputPath = requireFlag(args, 'input');
  const outPath = requireFlag(args, 'out');
  const grads = args.flags.has('grads');
  const dtype = stringFlag(args, 'dtype', grads ? 'f32' : 'auto');
  if (dtype !== 'f32' && dtype !== 'bf16' && dtype !== 'auto') throw new UsageError(`--dtype must be f32 or bf16, got '${dtype}'`);
  checkOutFile('out', outPath);

  // Check the inputs against the config before the weights are loaded.
  const folder = await resolveCheckpoint(modelPath);
  const configPath = join(folder, 'config.json');
  const config = NemotronHConfig.fromJSON(await readConfigJson(configPath), { source: configPath });
  const inputs = await readForwardInputs(inputPath, config.vocabSize, { mtp: grads });
  if (grads && !inputs.labels && !inputs.mtp) throw new Error(`${inputPath}: --grads needs "labels" (or an "mtp" block) to have a loss to differentiate`);

  const device = await openDevice();
  const model = await NemotronHForCausalLM.fromPretrained(folder, { device, dtype, strict: !args.flags.has('no-strict') });
  const tensors = new Map<string, Tensor>();
  try {
    await applyLoraAdapterFlag(args, model);
    if (inputs.mtp && !model.mtp) throw new Error(`${inputPath}: mtp: the model has no MTP head, so there is no MTP loss to differentiate`);
    const { inputIds, labels, attentionMask, cuSeqlens } = inputs;
    if (grads) {
      for (const p of model.parameters()) p.requiresGrad = true;
      const naming = await gradientNaming(model, folder);
      if (labels) {
        model.zeroGrad();
        const { logits, loss } = model.forward({ inputIds, labels, attentionMask, cuSeqlens });
        tensors.set('logits', logits);
        backward(loss!);
        tensors.set(
          'loss',
          noGrad(() => reshape(loss!, [1])),
        );
        loss!.dispose();
        await collectGradients(model, naming, 'grad/', tensors);
      } else {
        tensors.set(
          'logits',
          noGrad(() => model.forward({ inputIds, attentionMask, cuSeqlens }).logits),
        );
      }
      if (inputs.mtp) {
        model.zeroGrad();
        const out = model.forwardMtp(inputs.mtp);
        backward(out.loss);
        tensors.set(
          'mtp/loss',
          noGrad(() => reshape(out.loss, [1])),
        );
        for (const t of [out.logits, out.loss, out.mainLoss, out.mtpLoss, ...out.depthHiddenStates, ...out.depthLosses]) t.dispose();
        await collectGradients(model, naming, 'mtp/grad/', tensors);
      }
      model.zeroGrad();
    } else {
      const outputs = noGrad(() =>
        tidy(() => {
          const { logits, loss } = model.forward({ inputIds, labels, attentionMask, cuSeqlens });
          return loss ? { logits, loss: reshape(loss, [1]) } : { logits };
        }),
      );
      for (const [name, t] of Object.entries(outputs)) tensors.set(name, t);
    }
    await writeChecked(tensors, outPath);
  } finally {
    for (const t of tensors.values()) t.dispose();
    model.dispose();
  }
}

/** How the checkpoint in `folder` names our tensors: the export format, and each exported key's name there. */
interface GradientNaming {
  readonly format: CheckpointFormat;
  readonly keyOf: (key: string) => string;
}

/**
 * The naming of the checkpoint in `folder`: per-expert keys (`hf`) unless it stacks the routed
 * experts (`hf-v5`), and the backbone prefix and embedding name it uses (`backbone.` or `model.`,
 * `embeddings` or the older `embedding`), so gradients carry the checkpoint's own names.
 */
async function gradientNaming(model: NemotronHForCausalLM, folder: string): Promise<GradientNaming> {
  const names = new Set((await Checkpoint.open(folder)).names());
  const stacked = planCheckpointExport(
    model.namedTensors().map((t) => ({ name: t.name, shape: t.tensor.shape })),
    'hf-v5',
  ).filter((e) => /\.mixer\.experts\.(up|down)_proj$/.test(e.key));
  const format = stacked.length > 0 && stacked.every((e) => names.has(e.key)) ? 'hf-v5' : 'hf';
  const keyOf = (key: string): string => {
    if (names.has(key)) return key;
    const backbone = key.replace(/^(backbone|model)\./, '');
    if (backbone === key) return key;
    const candidates = ['backbone.', 'model.'].flatMap((prefix) => [prefix + backbone, prefix + backbone.replace(/^embeddings\./, 'embedding.')]);
    return candidates.find((c) => names.has(c)) ?? key;
  };
  return { format, keyOf };
}

/** Every checkpoint tensor's gradient (and with LoRA, every adapter tensor's) under `prefix`, copied to the host. */
async function collectGradients(model: NemotronHForCausalLM, naming: GradientNaming, prefix: string, into: Map<string, Tensor>): Promise<void> {
  const host = async (t: Tensor) => tensor(Float32Array.from((await t.data()) as Float32Array), t.shape, { device: getCpuDevice() });
  for (const [key, grad] of checkpointGradients(model, naming.format)) into.set(`${prefix}${naming.keyOf(key)}`, await host(grad));
  const lora = loraHandle(model);
  if (!lora) return;
  for (const { key, parameter } of peftTensorKeys(lora)) {
    const p = model.getTensor(parameter);
    into.set(`${prefix}${key}`, p.grad ? await host(p.grad) : tensor(new Float32Array(p.size), p.shape, { device: getCpuDevice() }));
  }
}

/** Reads every tensor back once, refuses NaN or infinite values (naming the tensor and position), then writes the file. */
async function writeChecked(tensors: ReadonlyMap<string, Tensor>, outPath: string): Promise<void> {
  const host = new Map<string, Tensor>();
  try {
    for (const [name, t] of tensors) {
      const values = (await t.data()) as Float32Array;
      const bad = values.findIndex((v) => !Number.isFinite(v));
      if (bad >= 0) {
        const count = values.reduce((n, v) => n + (Number.isFinite(v) ? 0 : 1), 0);
        throw new Error(
          `forward: ${name} holds ${count} NaN or infinite values (the first at [${unravel(bad, t.shape).join(', ')}] of [${t.shape.join(', ')}]); nothing written to ${outPath}`,
        );
      }
      host.set(name, tensor(Float32Array.from(values), t.shape, { device: getCpuDevice() }));
    }
    await writingOutFile('out', outPath, () => saveSafetensors(outPath, host));
  } finally {
    for (const t of host.values()) t.dispose();
  }
}

/** The coordinates of flat index `i` in a row-major `shape`. */
function unravel(i: number, shape: readonly number[]): number[] {
  const at = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    at[d] = i % shape[d]!;
    i = Math.floor(i / shape[d]!);
  }
  return at;
}
