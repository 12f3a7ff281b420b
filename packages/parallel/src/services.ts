/** The services a worker can run, by name. */
import { createDebugService } from './debug-service';
import type { ServiceFactory } from './service';

export const SERVICES: Readonly<Record<string, ServiceFactory>> = {
  debug: createDebugService,
};
