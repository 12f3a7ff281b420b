// What the non-finite weight check costs fromPretrained: bench-small (random weights, the project's
// init) saved to a temporary folder in f32 and bf16, then loaded on each device with checkFinite on
// and off, alternating, BENCH_REPS times each (default 3). One JSON line per case: median load time
// with and without the check. Then the scan alone (host bytes, no device), and for comparison one
// device reduction per tensor (sum + read back), the other way the check could be done.
// Usage: bun scripts/bench-load.ts
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NemotronHConfig } from '@nemotron-ts/core';
import { firstNonFinite, readConfigJson } from '@nemotron-ts/hub';
import { getCpuDevice, initDevice, noGrad, sum, type Device, type FloatDType } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../src';

const reps = Number(process.env.BENCH_REPS ?? 3);
const path = join(import.meta.dir, '..', 'bench', 'small.config.json');
const config = NemotronHConfig.fromJSON(await readConfigJson(path), { source: path });
const devices: Device[] = [getCpuDevice(), await initDevice()];
const scratch = await mkdtemp(join(tmpdir(), 'nemotron-bench-load-'));
const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

try {
  for (const dtype of ['f32', 'bf16'] as FloatDType[]) {
    const folder = join(scratch, dtype);
    const source = NemotronHForCausalLM.fromConfig(config, { seed: 0, device: getCpuDevice(), dtype });
    await source.savePretrained(folder);
    source.dispose();
    let bytes = 0;
    for (const f of await readdir(folder)) if (f.endsWith('.safetensors')) bytes += Bun.file(join(folder, f)).size;

    // The scan alone, over every weight file's bytes (header included; it is small).
    const scans: number[] = [];
    for (let i = 0; i < reps; i++) {
      let ms = 0;
      for (const f of await readdir(folder)) {
        if (!f.endsWith('.safetensors')) continue;
        const data = new Uint8Array(await Bun.file(join(folder, f)).arrayBuffer());
        const t0 = performance.now();
        firstNonFinite(data.subarray(0, data.byteLength - (data.byteLength % 4)), dtype === 'f32' ? 'F32' : 'BF16');
        ms += performance.now() - t0;
      }
      scans.push(ms);
    }
    console.log(
      JSON.stringify({
        bench: 'load-check-scan',
        model: 'small',
        dtype,
        mb: +(bytes / 2 ** 20).toFixed(1),
        scan_ms: +median(scans).toFixed(1),
        gb_per_s: +(bytes / 1e6 / median(scans)).toFixed(2),
      }),
    );

    for (const device of devices) {
      const times: Record<'on' | 'off', number[]> = { on: [], off: [] };
      await (await NemotronHForCausalLM.fromPretrained(folder, { device, checkFinite: false })).dispose(); // warm-up
      for (let i = 0; i < reps; i++) {
        for (const mode of ['on', 'off'] as const) {
          const t0 = performance.now();
          const model = await NemotronHForCausalLM.fromPretrained(folder, { device, checkFinite: mode === 'on' });
          times[mode].push(performance.now() - t0);
          model.dispose();
        }
      }
      // The alternative: one reduction per tensor on the device, read back.
      const model = await NemotronHForCausalLM.fromPretrained(folder, { device, checkFinite: false });
      const reduce: number[] = [];
      for (let i = 0; i < reps; i++) {
        const t0 = performance.now();
        for (const { tensor } of model.namedTensors()) {
          const s = noGrad(() => sum(tensor));
          await s.data();
          s.dispose();
        }
        reduce.push(performance.now() - t0);
      }
      model.dispose();
      const on = median(times.on);
      const off = median(times.off);
      console.log(
        JSON.stringify({
          bench: 'load',
          model: 'small',
          dtype,
          device: device.kind,
          mb: +(bytes / 2 ** 20).toFixed(1),
          load_ms: +off.toFixed(0),
          load_checked_ms: +on.toFixed(0),
          overhead_pct: +((on / off - 1) * 100).toFixed(1),
          device_reduction_ms: +median(reduce).toFixed(0),
        }),
      );
    }
  }
} finally {
  await rm(scratch, { recursive: true, force: true });
}
