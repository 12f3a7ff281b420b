/**
 * The worker side of expert parallelism: this rank's shard of every MoE layer's routed experts
 * (experts [rank·E/ep, (rank+1)·E/ep)), applied to the token rows the host dispatched here.
 */
import { fromHost, toHost, type HostTensor } from './host-tensor';
import { keep, moeExperts, noGrad, tidy, type Device, type Tensor } from '@nemotron-ts/kernels';
import { unknownMethod, type ServiceContext, type WorkerService } from './service';

export interface ExpertShardRequest {
  readonly layer: number;
  /** [n, Hx]: the rows routed to at least one of this shard's experts. */
  readonly x: HostTensor;
  /** i32 [n, k]: local expert indices (slots routed elsewhere point at expert 0 with weight 0). */
  readonly indices: HostTensor;
  /** f32 [n, k]. */
  readonly weights: HostTensor;
}

export function createExpertService(context: ServiceContext): WorkerService {
  const device: Device = context.device;
  const shards = new Map<number, { up: Tensor; down: Tensor }>();
  return {
    handle(method, args) {
      switch (method) {
        case 'load': {
          const { layer, up, down } = args as { layer: number; up: HostTensor; down: HostTensor };
          shards.set(layer, { up: keep(fromHost(up, device)), down: keep(fromHost(down, device)) });
          return null;
        }
        case 'experts': {
          const req = args as ExpertShardRequest;
          const shard = shards.get(req.layer);
          if (!shard) throw new Error(`expert shard ${context.rank}: no experts of layer ${req.layer}`);
          const y = noGrad(() => tidy(() => moeExperts(fromHost(req.x, device), fromHost(req.indices, device), fromHost(req.weights, device), shard.up, shard.down)));
          return toHost(y).finally(() => y.dispose());
        }
        default:
          return unknownMethod('expert shard', method);
      }
    },
    dispose() {
      for (const s of shards.values()) {
        s.up.dispose();
        s.down.dispose();
      }
    },
  };
}
