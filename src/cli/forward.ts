/**
 * `nemotron forward --model DIR --input FILE --out FILE [--dtype f32|bf16]`: one forward pass over
 * the inputs in FILE (see forward-inputs.ts), written as a safetensors file with `logits` (f32
 * [B, T, V]) and, when labels are given, `loss` (f32 [1]).
 */
import { join } from 'node:path';
import { NemotronHConfig } from '@nemotron-ts/core';
import { readConfigJson, resolveCheckpoint, saveSafetensors } from '@nemotron-ts/hub';
import { noGrad, reshape, tidy, type Device, type Tensor } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../pretrained';
import { requireFlag, stringFlag, UsageError, type ParsedArgs } from './args';
import { readForwardInputs } from './forward-inputs';

export const FORWARD_FLAGS = ['model', 'input', 'out', 'dtype'] as const;

export async function runForward(args: ParsedArgs, openDevice: () => Promise<Device>): Promise<void> {
  const modelPath = requireFlag(args, 'model');
  const inputPath = requireFlag(args, 'input');
  const outPath = requireFlag(args, 'out');
  const dtype = stringFlag(args, 'dtype', 'auto');
  if (dtype !== 'f32' && dtype !== 'bf16' && dtype !== 'auto') throw new UsageError(`--dtype must be f32 or bf16, got '${dtype}'`);

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
    try {
      await saveSafetensors(outPath, outputs);
    } finally {
      for (const t of Object.values(outputs)) t.dispose();
    }
  } finally {
    model.dispose();
  }
}
