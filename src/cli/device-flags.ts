/** The device flags every command shares: --device webgpu|native|cpu|auto, --backend, --adapter. */
import { DEVICE_CHOICES, initDevice, type Device, type DeviceChoice, type DeviceOptions, type BackendName } from '@nemotron-ts/kernels';
import { stringFlag, UsageError, type ParsedArgs } from './args';

export const DEVICE_FLAGS = ['device', 'backend', 'adapter'] as const;

export async function openDeviceFromFlags(args: ParsedArgs): Promise<Device> {
  const options: DeviceOptions = {};
  const kind = stringFlag(args, 'device');
  if (kind !== undefined) {
    if (!(DEVICE_CHOICES as readonly string[]).includes(kind)) throw new UsageError(`--device must be ${DEVICE_CHOICES.join(', ')}, got '${kind}'`);
    options.kind = kind as DeviceChoice;
  }
  const backend = stringFlag(args, 'backend');
  if (backend !== undefined) {
    if (!['vulkan', 'metal', 'd3d12', 'opengl', 'opengles'].includes(backend))
      throw new UsageError(`--backend must be vulkan, metal, d3d12, opengl or opengles, got '${backend}'`);
    options.backend = backend as BackendName;
  }
  const adapter = stringFlag(args, 'adapter');
  if (adapter !== undefined) options.adapter = adapter;
  return initDevice(options);
}
