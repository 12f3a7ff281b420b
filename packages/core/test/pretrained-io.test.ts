/** fromPretrained/savePretrained without the root package: a clear error, not a crash. */
import { expect, test } from 'bun:test';
import { join } from 'node:path';

// A fresh process: in this one another test file may already have imported the root, which installs the I/O.
test('without the root package, fromPretrained and savePretrained say what to import', () => {
  const script = `
    import { NemotronHConfig, NemotronHForCausalLM } from './src';
    import { getCpuDevice } from '@nemotron-ts/kernels';
    const load = await NemotronHForCausalLM.fromPretrained('some/model').catch((e) => e.message);
    const model = NemotronHForCausalLM.fromConfig(NemotronHConfig.create({ pattern: 'M', vocabSize: 8, hiddenSize: 8, mambaNumHeads: 2, mambaHeadDim: 4, nGroups: 1, ssmStateSize: 2, numAttentionHeads: 2, numKeyValueHeads: 1 }), { device: getCpuDevice() });
    const save = await model.savePretrained('out').catch((e) => e.message);
    console.log(JSON.stringify([load, save]));
  `;
  const run = Bun.spawnSync([process.execPath, '-e', script], { cwd: join(import.meta.dir, '..'), env: { ...process.env, NEMOTRON_DEVICE: 'cpu' } });
  expect(run.stderr.toString()).toBe('');
  const [load, save] = JSON.parse(run.stdout.toString()) as string[];
  expect(load).toStartWith('NemotronHForCausalLM.fromPretrained: no checkpoint I/O is installed; import the nemotron-ts package');
  expect(save).toStartWith('NemotronHForCausalLM.savePretrained: no checkpoint I/O is installed; import the nemotron-ts package');
});
