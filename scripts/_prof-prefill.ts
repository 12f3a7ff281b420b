import { join } from 'node:path';
import { NemotronHConfig } from '@nemotron-ts/core';
import { readConfigJson } from '@nemotron-ts/hub';
import { Generator, initDevice, noGrad, tensor } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../src';
const device = await initDevice({ kind: 'native' });
const path = '/work/wt/native/bench/small.config.json';
const config = NemotronHConfig.fromJSON(await readConfigJson(path), { source: path });
const model = NemotronHForCausalLM.fromConfig(config, { seed: 0, device, dtype: 'f32' }).eval().requiresGrad_(false);
const gen = new Generator(1);
const T = Number(process.env.T ?? 256);
const ids = tensor(Int32Array.from({ length: T }, () => Math.floor(gen.uniform() * config.vocabSize)), [1, T], { device });
for (let i = 0; i < 2; i++) { const t0 = performance.now(); const c0 = process.cpuUsage(); const { logits } = noGrad(() => model.forward({ inputIds: ids, logitsToKeep: 1 })); await logits.data(); logits.dispose(); const c = process.cpuUsage(c0); console.log('ms', performance.now() - t0, 'cpu', (c.user + c.system) / 1000); }
