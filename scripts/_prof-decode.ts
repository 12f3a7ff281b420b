import { NemotronHConfig } from '@nemotron-ts/core';
import { readConfigJson } from '@nemotron-ts/hub';
import { Generator, initDevice } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../src';
const device = await initDevice({ kind: (process.env.KIND ?? 'native') as 'native' });
const path = 'bench/small.config.json';
const config = NemotronHConfig.fromJSON(await readConfigJson(path), { source: path });
const model = NemotronHForCausalLM.fromConfig(config, { seed: 0, device, dtype: 'f32' }).eval().requiresGrad_(false);
const gen = new Generator(1);
const prompt = [Array.from({ length: 16 }, () => Math.floor(gen.uniform() * config.vocabSize))];
const c0 = process.cpuUsage(); const t0 = performance.now();
const r = await model.generate({ inputIds: prompt, maxNewTokens: 3, eosTokenId: null });
const c = process.cpuUsage(c0);
console.log(JSON.stringify(r.stats), 'wall', performance.now() - t0, 'cpu', (c.user + c.system) / 1000);
console.log([...(globalThis as any).__fb.keys()].slice(0,30).join("\n"))
