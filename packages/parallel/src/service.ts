/** What a worker runs: a service answering method calls on its own device. */
import type { Device } from '@nemotron-ts/kernels';

/** Sends a partial result of the running request to the host (its call's `onPart`). */
export type EmitPart = (value: unknown) => void;

export interface WorkerService {
  handle(method: string, args: unknown, emit: EmitPart): unknown;
  dispose?(): void;
}

export interface ServiceContext {
  readonly device: Device;
  readonly rank: number;
  readonly options: unknown;
}

export type ServiceFactory = (context: ServiceContext) => WorkerService | Promise<WorkerService>;

/** Throws a clear error for a method the service does not have. */
export function unknownMethod(service: string, method: string): never {
  throw new Error(`${service}: no method '${method}'`);
}
