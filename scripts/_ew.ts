import { join } from 'node:path';
import { NemotronHConfig } from '@nemotron-ts/core';
import { readConfigJson } from '@nemotron-ts/hub';
import { Generator, initDevice } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../src';
import { BlockSampler, Trainer } from '../src/train';
const device = await initDevice();
const path = join(import.meta.dir, '..', 'bench', 'small.config.json');
const config = NemotronHConfig.fromJSON(await readConfigJson(path), { source: path });
const gen = new Generator(1);
const rows = Array.from({ length: 3 }, () => Int32Array.from({ length: 512 }, () => gen.nextU32() % config.vocabSize));
const model = NemotronHForCausalLM.fromConfig(config, { seed: 0, device, dtype: 'f32' });
const trainer = new Trainer(model, { train: new BlockSampler(rows, 0), eval: null, seqLen: 512 }, { steps: 3, batchSize: 1, lr: 1e-4, warmup: 1, outDir: null });
await trainer.trainStep();
const sym = (device as any).native.symbols;
const counts = new Map<string, { n: number; ms: number }>();
for (const name of ['nt_elementwise', 'nt_gemm']) {
  const orig = sym[name];
  sym[name] = (p: Float64Array, ...rest: unknown[]) => {
    const t0 = performance.now();
    const r = orig(p, ...rest);
    const dt = performance.now() - t0;
    let key: string;
    if (name === 'nt_elementwise') {
      const rank = p[1]!, nops = p[2]!;
      const shape = Array.from(p.subarray(7, 7 + rank));
      const ostr = Array.from(p.subarray(7 + rank, 7 + 2 * rank));
      const ins = [];
      let q = 7 + 2 * rank;
      for (let o = 0; o < nops; o++) { ins.push(`${p[q]}:${Array.from(p.subarray(q + 2, q + 2 + rank))}`); q += 2 + rank; }
      key = `ew op ${p[0]} nops ${nops} shape ${shape} ostr ${ostr} in ${ins.join(' | ')}`;
    } else {
      key = `gemm b${p[0]} m${p[1]} n${p[2]} k${p[3]} a[${Array.from(p.subarray(4, 9))}] b[${Array.from(p.subarray(9, 14))}]`;
    }
    const c = counts.get(key) ?? { n: 0, ms: 0 };
    c.n++; c.ms += dt; counts.set(key, c);
    return r;
  };
}
await trainer.trainStep();
for (const [k, v] of [...counts.entries()].sort((a, b) => b[1].ms - a[1].ms).slice(0, 40)) console.log(v.n, v.ms.toFixed(1), k);
trainer.dispose(); model.dispose();
