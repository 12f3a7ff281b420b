/**
 * Training-step benchmark: a 2-layer MLP (1024 → 1024 → 1024 classes, relu, cross-entropy) on a
 * batch of 512, forward + backward + AdamW per step on the default device. Prints one JSON line:
 *   {"bench":"train_step","model":"mlp-2x1024","batch":512,"ms":X,"device":"…"}
 * `ms` is the median over the timed steps, each ending in a device sync.
 */
import { AdamW, Generator, backward, crossEntropy, initDevice, linear, randint, randn, relu, tidy, zeros } from '@nemotron-ts/kernels';

const HIDDEN = 1024;
const BATCH = 512;
const WARMUP = 2;
const STEPS = Number(process.env.BENCH_STEPS ?? 5);

const device = await initDevice();
const g = new Generator(1);
const layer = (inF: number, outF: number) => ({
  w: randn([outF, inF], { std: Math.sqrt(2 / inF), generator: g }).requiresGrad_(),
  b: zeros([outF]).requiresGrad_(),
});
const l1 = layer(HIDDEN, HIDDEN);
const l2 = layer(HIDDEN, HIDDEN);
const params = [l1.w, l1.b, l2.w, l2.b];
const x = randn([BATCH, HIDDEN], { generator: g });
const labels = randint(0, HIDDEN, [BATCH], { generator: g });
const opt = new AdamW(params, { lr: 1e-3 });

function step(): void {
  tidy(() => {
    const logits = linear(relu(linear(x, l1.w, l1.b)), l2.w, l2.b);
    backward(crossEntropy(logits, labels));
  });
  opt.step();
  opt.zeroGrad();
}

const times: number[] = [];
for (let i = 0; i < WARMUP + STEPS; i++) {
  const t0 = performance.now();
  step();
  await device.sync();
  if (i >= WARMUP) times.push(performance.now() - t0);
}
times.sort((a, b) => a - b);
const ms = times[Math.floor(times.length / 2)]!;
console.log(JSON.stringify({ bench: 'train_step', model: 'mlp-2x1024', batch: BATCH, ms: Number(ms.toFixed(2)), device: device.describe() }));
