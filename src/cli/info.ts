/**
 * `nemotron info`: the adapter, backend, feature level, key limits, whether it is a software adapter,
 * and why each adapter tried before it was not used.
 */
import type { Device } from '@nemotron-ts/kernels';

export function deviceReport(device: Device): Record<string, unknown> {
  if (device.kind === 'cpu') {
    return device.native
      ? { device: device.name, backend: device.native.describe(), description: device.describe(), library: device.native.path }
      : { device: device.name, backend: 'typescript reference', description: device.describe() };
  }
  const info = device.handles.adapter.info;
  return {
    device: 'webgpu',
    adapter: info.description || info.device,
    vendor: info.vendor,
    architecture: info.architecture,
    backend: device.handles.backend,
    featureLevel: device.handles.featureLevel,
    software: device.isSoftware,
    features: [...device.gpu.features].sort(),
    limits: device.limits,
    skipped: device.handles.skipped,
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
