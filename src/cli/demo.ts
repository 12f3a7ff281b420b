/**
 * The main job until the model lands: a device report, a kernel self-check against the CPU
 * reference, and a small benchmark.
 */
import { getCpuDevice, randn, tensor, silu, mul, sum, manualSeed, type Device } from '@nemotron-ts/kernels';
import { printInfo } from './info';

export async function runDemo(device: Device): Promise<void> {
  printInfo(device, false);
  manualSeed(1);
  const x = randn([257, 129], { device });
  const host = await x.data();
  const ref = tensor(host as Float32Array, [257, 129], { device: getCpuDevice() });
  const a = await sum(mul(silu(x), x), -1).data();
  const b = await sum(mul(silu(ref), ref), -1).data();
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  console.log(`self-check: silu·x row sums vs CPU reference, max |diff| ${worst.toExponential(2)}`);
  const n = 1 << 22;
  const big = randn([n], { device });
  await big.data();
  const t0 = performance.now();
  const reps = 10;
  let y = mul(big, 1.0001);
  for (let i = 1; i < reps; i++) {
    const next = mul(y, 1.0001);
    y.dispose();
    y = next;
  }
  await device.sync();
  const ms = performance.now() - t0;
  console.log(JSON.stringify({ bench: 'elementwise', elements: n, gbps: +((reps * n * 8) / (ms * 1e6)).toFixed(2) }));
}
