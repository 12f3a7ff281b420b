/** The services a worker can run, by name. */
import { createDebugService } from './debug-service';
import type { ServiceFactory } from './service';
import { createStageService } from './stage-service';

export const SERVICES: Readonly<Record<string, ServiceFactory>> = {
  debug: createDebugService,
  stage: createStageService,
};
