/**
 * A service for testing the runtime itself: echoes tensors, sleeps, and fails on purpose (throws,
 * exits the worker, or blocks its event loop forever).
 */
import { reportProgress } from './progress';
import { unknownMethod, type ServiceContext, type WorkerService } from './service';

export function createDebugService(context: ServiceContext): WorkerService {
  return {
    async handle(method, args) {
      switch (method) {
        case 'echo':
          return { rank: context.rank, device: context.device.kind, args };
        case 'sleep':
          await new Promise((r) => setTimeout(r, args as number));
          return null;
        case 'throw':
          throw new Error(`requested failure on rank ${context.rank}`);
        case 'exit':
          process.exit(args as number);
          break;
        case 'busy': {
          // Synchronous work longer than the heartbeat timeout that reports its progress.
          const end = Date.now() + (args as number);
          while (Date.now() < end) reportProgress();
          return null;
        }
        case 'hang':
          for (;;) {
            // Blocks the worker's event loop: no heartbeat, no answer.
          }
        default:
          return unknownMethod('debug', method);
      }
    },
  };
}
