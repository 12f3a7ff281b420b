// MoE kernels at bench-moe sizes (/work/shared/bench/moe.config.json: hidden 512, 8 experts × 512,
// top-2, sigmoid routing with correction bias, 7 MoE layers). Prints one JSON line per measurement:
// routing and grouped experts (forward) for a decode step (T = 1) and a prefill (T = 512), f32 and
// bf16 expert weights. `layers_ms` scales one layer's time to the model's 7 MoE layers.
//   bun scripts/bench-moe.ts [--reps N]
import { initDevice, moeExperts, moeRoute, randn, tidy, type Tensor } from '@nemotron-ts/kernels';

const HIDDEN = 512;
const EXPERTS = 8;
const INTERMEDIATE = 512;
const TOP_K = 2;
const MOE_LAYERS = 7;
const ROUTE = { topK: TOP_K, nGroup: 1, topkGroup: 1, normTopkProb: true, routedScalingFactor: 2.5 };

const repsArg = process.argv.indexOf('--reps');
const reps = repsArg > 0 ? Number(process.argv[repsArg + 1]) : 10;
const device = await initDevice();

async function time(fn: () => Tensor[], repeats: number): Promise<number> {
  const run = async () => {
    const outs = tidy(fn);
    await device.sync();
    for (const t of outs) t.dispose();
  };
  await run(); // compile and warm up
  const t0 = performance.now();
  for (let i = 0; i < repeats; i++) tidy(fn).forEach((t) => t.dispose());
  await device.sync();
  return (performance.now() - t0) / repeats;
}

function report(bench: string, tokens: number, dtype: string, ms: number): void {
  const line = {
    bench,
    device: device.kind,
    tokens,
    hidden: HIDDEN,
    experts: EXPERTS,
    intermediate: INTERMEDIATE,
    top_k: TOP_K,
    weights: dtype,
    ms: +ms.toFixed(3),
    layers_ms: +(ms * MOE_LAYERS).toFixed(2),
    tokens_per_s_layers: +((tokens * 1000) / (ms * MOE_LAYERS)).toFixed(1),
  };
  console.log(JSON.stringify(line));
}

{
  const dev = device;
  const gateBias = randn([EXPERTS], { device: dev, std: 0.01 });
  for (const dtype of ['f32', 'bf16'] as const) {
    const up = randn([EXPERTS, INTERMEDIATE, HIDDEN], { device: dev, std: 0.02, dtype });
    const down = randn([EXPERTS, HIDDEN, INTERMEDIATE], { device: dev, std: 0.02, dtype });
    for (const tokens of [1, 512]) {
      const x = randn([tokens, HIDDEN], { device: dev });
      const logits = randn([tokens, EXPERTS], { device: dev });
      const { weights, indices } = moeRoute(logits, gateBias, ROUTE);
      const repeats = tokens === 1 ? reps * 10 : reps;
      if (dtype === 'f32') {
        report('moe_route', tokens, 'f32', await time(() => Object.values(moeRoute(logits, gateBias, ROUTE)), repeats));
      }
      report('moe_experts', tokens, dtype, await time(() => [moeExperts(x, indices, weights, up, down)], repeats));
      for (const t of [x, logits, weights, indices]) t.dispose();
    }
    up.dispose();
    down.dispose();
  }
  gateBias.dispose();
}
