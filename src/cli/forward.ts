/**
 * `nemotron forward --model DIR --input FILE --out FILE [--dtype f32|bf16]`: one forward pass over
 * the inputs in FILE (see forward-inputs.ts), written as a safetensors file with `logits` (f32
 * [B, T, V]) and, when labels are given, `loss` (f32 [1]).
 */
import { join } from 'node:path';
import { NemotronHConfig } from '@nemotron-ts/core';
import { readConfigJson, resolveCheckpoint, saveSafetensors } from '@nemotron-ts/hub';
import { getCpuDevice, noGrad, reshape, tensor, tidy, type Device, type Tensor } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../pretrained';
import { requireFlag, stringFlag, UsageError, type ParsedArgs } from './args';
import { readForwardInputs } from './forward-inputs';
import { checkOutFile, writingOutFile } from './out-file';

export const FORWARD_FLAGS = ['model', 'input', 'out', 'dtype'] as const;

export async function runForward(args: ParsedArgs, openDevice: () => Promise<Device>): Promise<void> {
  const modelPath = requireFlag(args, 'model');
  const inputPath = requireFlag(args, 'input');
  const outPath = requireFlag(args, 'out');
  const dtype = stringFlag(args, 'dtype', 'auto');
  if (dtype !== 'f32' && dtype !== 'bf16' && dtype !== 'auto') throw new UsageError(`--dtype must be f32 or bf16, got '${dtype}'`);
  checkOutFile('out', outPath);

  // Check the inputs against the config before the weights are loaded.
  const folder = await resolveCheckpoint(modelPath);
  const configPath = join(folder, 'config.json');
  const config = NemotronHConfig.fromJSON(await readConfigJson(configPath), { source: configPath });
  const inputs = await readForwardInputs(inputPath, config.vocabSize);

  const device = await openDevice();
  const model = await NemotronHForCausalLM.fromPretrained(folder, { device, dtype });
  try {
    const outputs = noGrad(() =>
      tidy(() => {
        const { logits, loss } = model.forward(inputs);
        const tensors: Record<string, Tensor> = { logits };
        if (loss) tensors.loss = reshape(loss, [1]);
        return tensors;
      }),
    );
    // Read back once: checked here, then written from the host copies.
    const host: Record<string, Tensor> = {};
    try {
      for (const [name, t] of Object.entries(outputs)) {
        const values = (await t.data()) as Float32Array;
        const bad = values.findIndex((v) => !Number.isFinite(v));
        if (bad >= 0) {
          const count = values.reduce((n, v) => n + (Number.isFinite(v) ? 0 : 1), 0);
          throw new Error(`forward: ${name} holds ${count} NaN or infinite values (the first at [${unravel(bad, t.shape).join(', ')}] of [${t.shape.join(', ')}]); nothing written to ${outPath}`);
        }
        host[name] = tensor(values, t.shape, { device: getCpuDevice() });
      }
      await writingOutFile('out', outPath, () => saveSafetensors(outPath, host));
    } finally {
      for (const t of [...Object.values(outputs), ...Object.values(host)]) t.dispose();
    }
  } finally {
    model.dispose();
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
