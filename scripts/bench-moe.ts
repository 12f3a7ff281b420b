// MoE kernel timings on the default device, one JSON line per case (not a test). Sizes are
// bench-moe's MoE layer (/work/shared/bench/moe.config.json): hidden 512, 8 experts × 512, top-2,
// sigmoid routing with a correction bias, 7 MoE layers. Routing and grouped experts (forward) for a
// decode step (T = 1) and a prefill (T = 512), f32 and bf16 expert weights; the experts' forward +
// backward (every operand requiring grad) for the prefill with f32 weights. `ms` is the median wall
// time per call over repetitions of `iters` back-to-back calls, `minMs` the fastest repetition,
// `cpuMs` the process CPU time per call (llvmpipe's threads included; steadier than wall time on a
// shared machine); `layersMs` scales `ms` to the model's 7 MoE layers.
//   bun scripts/bench-moe.ts [--iters N] [--reps N]
import { backward, initDevice, moeExperts, moeRoute, randn, type Tensor } from '@nemotron-ts/kernels';

const HIDDEN = 512;
const EXPERTS = 8;
const INTERMEDIATE = 512;
const TOP_K = 2;
const MOE_LAYERS = 7;
const ROUTE = { topK: TOP_K, nGroup: 1, topkGroup: 1, normTopkProb: true, routedScalingFactor: 2.5 };

const args = process.argv.slice(2);
const flag = (name: string, fallback: number) => {
  const at = args.indexOf(name);
  return at >= 0 ? Number(args[at + 1]) : fallback;
};
const iters = flag('--iters', 3);
const reps = flag('--reps', 7);
const device = await initDevice();

interface Timing {
  ms: number;
  minMs: number;
  cpuMs: number;
}

const round = (v: number) => +v.toFixed(3);

async function time(run: () => Tensor[], callsPerRep: number): Promise<Timing> {
  // The first call compiles the kernels.
  run().forEach((t) => t.dispose());
  await device.sync();
  const samples: number[] = [];
  const cpu0 = process.cpuUsage();
  for (let r = 0; r < reps; r++) {
    const start = performance.now();
    for (let i = 0; i < callsPerRep; i++) run().forEach((t) => t.dispose());
    await device.sync();
    samples.push((performance.now() - start) / callsPerRep);
  }
  const cpu = process.cpuUsage(cpu0);
  samples.sort((a, b) => a - b);
  return {
    ms: round(samples[Math.floor(samples.length / 2)]!),
    minMs: round(samples[0]!),
    cpuMs: round((cpu.user + cpu.system) / 1000 / (reps * callsPerRep)),
  };
}

function report(bench: string, tokens: number, weights: string, t: Timing): void {
  const line = {
    bench,
    tokens,
    hidden: HIDDEN,
    experts: EXPERTS,
    intermediate: INTERMEDIATE,
    topK: TOP_K,
    weights,
    ...t,
    layersMs: round(t.ms * MOE_LAYERS),
    iters,
    reps,
    device: device.describe(),
  };
  console.log(JSON.stringify(line));
}

/** Forward and backward with every differentiable operand requiring grad; returns what it allocated. */
function trainStep(x: Tensor, indices: Tensor, weights: Tensor, up: Tensor, down: Tensor): Tensor[] {
  const operands = [x, weights, up, down].map((t) => t.share().requiresGrad_()) as [Tensor, Tensor, Tensor, Tensor];
  const out = moeExperts(operands[0], indices, operands[1], operands[2], operands[3]);
  const upstream = randn(out.shape, { device });
  backward(out, { grad: upstream });
  const grads = operands.map((t) => t.grad!);
  return [out, upstream, ...grads, ...operands];
}

const gateBias = randn([EXPERTS], { device, std: 0.01 });
for (const dtype of ['f32', 'bf16'] as const) {
  const up = randn([EXPERTS, INTERMEDIATE, HIDDEN], { device, std: 0.02, dtype });
  const down = randn([EXPERTS, HIDDEN, INTERMEDIATE], { device, std: 0.02, dtype });
  for (const tokens of [1, 512]) {
    const x = randn([tokens, HIDDEN], { device });
    const logits = randn([tokens, EXPERTS], { device });
    const { weights, indices } = moeRoute(logits, gateBias, ROUTE);
    // Decode calls are short: more of them per repetition.
    const calls = tokens === 1 ? iters * 30 : iters;
    if (dtype === 'f32') report('moe_route', tokens, 'f32', await time(() => Object.values(moeRoute(logits, gateBias, ROUTE)), calls));
    report('moe_experts', tokens, dtype, await time(() => [moeExperts(x, indices, weights, up, down)], calls));
    if (tokens > 1 && dtype === 'f32') report('moe_experts_fwd_bwd', tokens, dtype, await time(() => trainStep(x, indices, weights, up, down), calls));
    for (const t of [x, logits, weights, indices]) t.dispose();
  }
  up.dispose();
  down.dispose();
}
gateBias.dispose();
