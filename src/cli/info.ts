/**
 * `nemotron info`: the adapter, backend, feature level, key limits, whether it is a software adapter,
 * and why each adapter tried before it was not used.
 */
import { type Device, nativeUnavailableReason } from '@nemotron-ts/kernels';

export function deviceReport(device: Device): Record<string, unknown> {
  if (device.kind === 'cpu' && device.native)
    return { device: device.name, backend: device.native.describe(), description: device.describe(), library: device.native.path };
  // Any other device: say why the native kernels are not in use when they could not be built or loaded.
  const why = nativeUnavailableReason();
  const native = why ? { native: `unavailable: ${why}` } : {};
  if (device.kind === 'cpu') return { device: device.name, backend: 'typescript reference', description: device.describe(), ...native };
  const info = device.handles.adapter.info;
  return {
    device: 'webgpu',
    adapter: info.description || info.device,
    vendor: info.vendor,
    architecture: info.architecture,
    backend: device.handles.backend,
    featureLevel: device.handles.featureLevel,
    software: device.isSoftwareAdapter,
    kernelTuning: device.kernelTuning,
    features: [...device.gpu.features].sort(),
    limits: device.limits,
    skipped: device.handles.skipped,
    ...native,
  };
}

export function printInfo(device: Device, json: boolean): void {
  const report = deviceReport(device);
  if (json) {
    console.log(JSON.stringify(report));
    return;
  }
  for (const [k, v] of Object.entries(report)) {
    if (k === 'limits' && v && typeof v === 'object') {
      console.log('limits:');
      for (const [lk, lv] of Object.entries(v)) console.log(`  ${lk}: ${lv}`);
    } else if (k === 'skipped' && Array.isArray(v)) {
      console.log(`skipped: ${v.length === 0 ? '(none)' : ''}`);
      for (const reason of v) console.log(`  ${reason}`);
    } else console.log(`${k}: ${Array.isArray(v) ? v.join(', ') || '(none)' : v}`);
  }
}
