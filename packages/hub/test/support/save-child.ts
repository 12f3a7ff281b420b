/**
 * A separate process saving a small sharded checkpoint of "generation" G over a folder (for the
 * kill-at-each-rename tests): `bun save-child.ts <folder> <G> <tokenizerDir>`. Every value of every
 * tensor is G + its tensor's index / 8, and config.json's `generation` is G.
 */
import { getCpuDevice, tensor, type Tensor } from '@nemotron-ts/kernels';
import { savePretrainedFiles } from '../../src';

export const TENSORS = 3;
export const ELEMENTS = 1001;

export function generationTensors(generation: number): Map<string, Tensor> {
  const cpu = getCpuDevice();
  const out = new Map<string, Tensor>();
  for (let i = 0; i < TENSORS; i++) out.set(`layers.${i}.weight`, tensor(new Float32Array(ELEMENTS).fill(generation + i / 8), [ELEMENTS], { device: cpu }));
  return out;
}

export async function saveGeneration(folder: string, generation: number, tokenizerDir: string): Promise<void> {
  // One tensor per shard: several shard renames, each a point where a kill could mix generations.
  await savePretrainedFiles(folder, {
    tensors: generationTensors(generation),
    config: { model_type: 'tiny', generation },
    maxShardSize: ELEMENTS * 4,
    copyFrom: tokenizerDir,
  });
}

if (import.meta.main) {
  const [folder, generation, tokenizerDir] = process.argv.slice(2) as [string, string, string];
  await saveGeneration(folder, Number(generation), tokenizerDir);
}
