/**
 * The worker side of expert parallelism: this rank's shard of every MoE layer's routed experts
 * (experts [rank·E/ep, (rank+1)·E/ep)), applied to the token rows the host dispatched here; in
 * training it keeps each layer's inputs for the backward and accumulates its experts' gradients.
 */
import { AdamW, backward, keep, moeExperts, noGrad, tidy, type Device, type Tensor } from '@nemotron-ts/kernels';
import { gradientSumOfSquares, scaleGradients, type TrainOptimizerOptions } from './gradient-ops';
import { fromHost, toHost, type HostTensor } from './host-tensor';
import { exportOptimizerState, importOptimizerState, type NamedOptimizerState } from './optimizer-state';
import { unknownMethod, type ServiceContext, type WorkerService } from './service';

export interface ExpertShardRequest {
  readonly layer: number;
  /** [n, Hx]: the rows routed to at least one of this shard's experts. */
  readonly x: HostTensor;
  /** i32 [n, k]: local expert indices (slots routed elsewhere point at expert 0 with weight 0). */
  readonly indices: HostTensor;
  /** f32 [n, k]. */
  readonly weights: HostTensor;
  /** Keep the graph for `backward` (training). */
  readonly train?: boolean;
}

interface Saved {
  readonly x: Tensor;
  readonly weights: Tensor;
  readonly y: Tensor;
}

export function createExpertService(context: ServiceContext): WorkerService {
  const device: Device = context.device;
  const shards = new Map<number, { up: Tensor; down: Tensor }>();
  const saved = new Map<number, Saved>();
  let optimizer: AdamW | null = null;
  /** The shard's experts under the names its messages use (`<layer>.up_proj`). */
  const named = (): [string, Tensor][] =>
    [...shards].flatMap(([layer, { up, down }]) => [
      [`${layer}.up_proj`, up],
      [`${layer}.down_proj`, down],
    ]);
  const shard = (layer: number) => {
    const s = shards.get(layer);
    if (!s) throw new Error(`expert shard ${context.rank}: no experts of layer ${layer}`);
    return s;
  };
  return {
    async handle(method, args) {
      switch (method) {
        case 'load': {
          const { layer, up, down } = args as { layer: number; up: HostTensor; down: HostTensor };
          shards.set(layer, { up: keep(fromHost(up, device)).requiresGrad_(true), down: keep(fromHost(down, device)).requiresGrad_(true) });
          return null;
        }
        case 'experts': {
          const req = args as ExpertShardRequest;
          const { up, down } = shard(req.layer);
          if (!req.train) {
            const y = noGrad(() => tidy(() => moeExperts(fromHost(req.x, device), fromHost(req.indices, device), fromHost(req.weights, device), up, down)));
            return toHost(y).finally(() => y.dispose());
          }
          saved.get(req.layer)?.y.dispose();
          const x = keep(fromHost(req.x, device)).requiresGrad_(true);
          const weights = keep(fromHost(req.weights, device)).requiresGrad_(true);
          const y = keep(tidy(() => moeExperts(x, fromHost(req.indices, device), weights, up, down)));
          saved.set(req.layer, { x, weights, y });
          return toHost(y);
        }
        case 'backward': {
          // d(loss)/d(this shard's output rows) → d/d(rows), d/d(slot weights); expert gradients accumulate here.
          const { layer, grad } = args as { layer: number; grad: HostTensor };
          const s = saved.get(layer);
          if (!s) throw new Error(`expert shard ${context.rank}: no training forward of layer ${layer} to run backward through`);
          saved.delete(layer);
          try {
            const g = fromHost(grad, device);
            backward(s.y, { grad: g });
            g.dispose();
            return { x: await toHost(s.x.grad!), weights: await toHost(s.weights.grad!) };
          } finally {
            for (const t of [s.x, s.weights, s.y]) t.dispose();
          }
        }
        case 'gradients': {
          const out: Record<string, HostTensor> = {};
          for (const [layer, { up, down }] of shards) {
            if (up.grad) out[`${layer}.up_proj`] = await toHost(up.grad);
            if (down.grad) out[`${layer}.down_proj`] = await toHost(down.grad);
          }
          return out;
        }
        case 'optimizer': {
          // Expert matrices always take weight decay.
          const { noWeightDecay: _skip, ...hyper } = args as TrainOptimizerOptions;
          optimizer = new AdamW(
            [...shards.values()].flatMap((s) => [s.up, s.down]),
            hyper,
          );
          return null;
        }
        case 'gradientSumOfSquares':
          return gradientSumOfSquares([...shards.values()].flatMap((s) => [s.up, s.down]));
        case 'scaleGradients':
          scaleGradients(
            [...shards.values()].flatMap((s) => [s.up, s.down]),
            (args as { factor: number }).factor,
          );
          return null;
        case 'optimizerState': {
          if (!optimizer) throw new Error(`expert shard ${context.rank}: no optimizer (call 'optimizer' first)`);
          return exportOptimizerState(optimizer, named());
        }
        case 'loadOptimizerState': {
          if (!optimizer) throw new Error(`expert shard ${context.rank}: no optimizer (call 'optimizer' first)`);
          return importOptimizerState(optimizer, named(), args as NamedOptimizerState, device, `expert shard ${context.rank}`);
        }
        case 'step':
          if (!optimizer) throw new Error(`expert shard ${context.rank}: no optimizer (call 'optimizer' first)`);
          optimizer.step({ lrScale: (args as { lrScale?: number } | null)?.lrScale });
          return null;
        case 'weights': {
          const out: Record<string, HostTensor> = {};
          for (const [layer, { up, down }] of shards) {
            out[`${layer}.up_proj`] = await toHost(up);
            out[`${layer}.down_proj`] = await toHost(down);
          }
          return out;
        }
        case 'zeroGrad':
          for (const { up, down } of shards.values())
            for (const t of [up, down]) {
              t.grad?.dispose();
              t.grad = null;
            }
          return null;
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
