/**
 * @packageDocumentation
 * @nemotron-ts/parallel: pipeline, data and expert parallelism over Bun Workers, one device each.
 */
export { HostTensor, toHost, fromHost } from './host-tensor';
export { encodeMessage, decodeMessage, tensorBytes, type WireMessage } from './wire';
export { parseDeviceSpec, resolveDevices } from './device-spec';
export { WorkerGroup, WorkerFailure, type WorkerGroupOptions, type CallOptions } from './worker-group';
