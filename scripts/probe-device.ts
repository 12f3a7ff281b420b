// Prints one JSON line: whether a WebGPU adapter can be opened here (used by the setup script).
// `--backend vulkan` (or opengl, ...) asks for that backend only.
import { getWebGpuDevice, type BackendName } from '@nemotron-ts/kernels';

const at = process.argv.indexOf('--backend');
const backend = at >= 0 ? (process.argv[at + 1] as BackendName) : undefined;
try {
  const device = await getWebGpuDevice({ backend });
  const features = [...device.gpu.features].sort();
  console.log(
    JSON.stringify({
      ok: true,
      description: device.describe(),
      backend: device.handles.backend,
      featureLevel: device.handles.featureLevel,
      software: device.isSoftwareAdapter,
      features,
    }),
  );
  process.exit(0);
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: (e as Error).message }));
  process.exit(0);
}
