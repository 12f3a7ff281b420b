// Prints one JSON line: whether a WebGPU adapter can be opened here (used by the setup script).
import { getWebGpuDevice } from '@nemotron-ts/kernels';

try {
  const device = await getWebGpuDevice();
  console.log(JSON.stringify({ ok: true, description: device.describe(), software: device.isSoftware }));
  process.exit(0);
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: (e as Error).message }));
  process.exit(0);
}
