/** Errors raised by the device layer. Each names what was running so a failure can be traced to a kernel. */

export class DeviceError extends Error {
  override name = 'DeviceError';
}

/** The GPU device was lost (driver reset, destroyed, out of memory in the driver...). */
export class DeviceLostError extends DeviceError {
  override name = 'DeviceLostError';
}

/** A WebGPU validation error, with the kernels that were in flight when it was reported. */
export class KernelValidationError extends DeviceError {
  override name = 'KernelValidationError';
}

export class OutOfMemoryError extends DeviceError {
  override name = 'OutOfMemoryError';
}

/** No usable adapter could be found for the requested device kind. */
export class NoAdapterError extends DeviceError {
  override name = 'NoAdapterError';
}
