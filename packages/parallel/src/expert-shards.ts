/**
 * A worker's shard of the routed experts: for each MoE layer it serves, experts
 * [rank·E/ep, (rank+1)·E/ep) under the full model's names (`model.layers.2.mixer.experts.up_proj`,
 * holding only the shard's rows), applied to the token rows the host dispatched here. In training
 * it keeps each (microbatch, layer)'s inputs for the backward and accumulates its experts'
 * gradients.
 */
import { backward, keep, moeExperts, noGrad, tidy, type Device, type Tensor } from '@nemotron-ts/kernels';
import { fromHost, toHost, type HostTensor } from './host-tensor';

export interface ExpertShardRequest {
  /** Microbatch id (several may be in flight in a pipeline schedule); default 0. */
  readonly mb?: number;
  readonly layer: number;
  /** [n, Hx]: the rows routed to at least one of this shard's experts. */
  readonly x: HostTensor;
  /** i32 [n, k]: local expert indices (slots routed elsewhere point at expert 0 with weight 0). */
  readonly indices: HostTensor;
  /** f32 [n, k]. */
  readonly weights: HostTensor;
  /** Keep the graph for `expertsBackward` (training). */
  readonly train?: boolean;
}

export interface ExpertShardBackward {
  readonly mb?: number;
  readonly layer: number;
  /** d(loss)/d(this shard's output rows) [n, Hx]. */
  readonly grad: HostTensor;
}

/** The routed experts' tensor names of layer `layer`. */
export function expertNames(layer: number): [up: string, down: string] {
  return [`model.layers.${layer}.mixer.experts.up_proj`, `model.layers.${layer}.mixer.experts.down_proj`];
}

/** Whether a full-model tensor name is a routed experts' stack. */
export function isRoutedExpert(name: string): boolean {
  return /^model\.layers\.\d+\.mixer\.experts\.(up|down)_proj$/.test(name);
}

interface Saved {
  readonly x: Tensor;
  readonly weights: Tensor;
  readonly y: Tensor;
}

export class ExpertShards {
  private readonly layers = new Map<number, { up: Tensor; down: Tensor }>();
  private readonly saved = new Map<string, Saved>();

  constructor(
    private readonly device: Device,
    private readonly label: string,
    /** Whether the experts train (not with LoRA: it freezes them). */
    private readonly options: { readonly trainable: boolean } = { trainable: true },
  ) {}

  /** This shard of layer `layer`'s experts (up [per, …], down [per, …]). */
  load({ layer, up, down }: { layer: number; up: HostTensor; down: HostTensor }): null {
    const old = this.layers.get(layer);
    if (old) for (const t of [old.up, old.down]) t.dispose();
    const trainable = this.options.trainable;
    this.layers.set(layer, { up: keep(fromHost(up, this.device)).requiresGrad_(trainable), down: keep(fromHost(down, this.device)).requiresGrad_(trainable) });
    return null;
  }

  /** The shard's tensors by full-model name, in layer order. */
  namedParameters(): [string, Tensor][] {
    return [...this.layers].flatMap(([layer, { up, down }]) => {
      const [u, d] = expertNames(layer);
      return [
        [u, up],
        [d, down],
      ] as [string, Tensor][];
    });
  }

  private shard(layer: number): { up: Tensor; down: Tensor } {
    const s = this.layers.get(layer);
    if (!s) throw new Error(`${this.label}: no experts of layer ${layer}`);
    return s;
  }

  /** The rows through this shard's experts, weighted and summed per row: [n, Hx]. */
  async forward(req: ExpertShardRequest): Promise<HostTensor> {
    const { up, down } = this.shard(req.layer);
    const device = this.device;
    if (!req.train) {
      const y = noGrad(() => tidy(() => moeExperts(fromHost(req.x, device), fromHost(req.indices, device), fromHost(req.weights, device), up, down)));
      return toHost(y).finally(() => y.dispose());
    }
    const key = `${req.mb ?? 0}:${req.layer}`;
    const stale = this.saved.get(key);
    if (stale) for (const t of [stale.x, stale.weights, stale.y]) t.dispose();
    const x = keep(fromHost(req.x, device)).requiresGrad_(true);
    const weights = keep(fromHost(req.weights, device)).requiresGrad_(true);
    const y = keep(tidy(() => moeExperts(x, fromHost(req.indices, device), weights, up, down)));
    this.saved.set(key, { x, weights, y });
    return toHost(y);
  }

  /** d/d(rows) and d/d(slot weights) of a training forward; the experts' gradients accumulate here. */
  async backward({ mb, layer, grad }: ExpertShardBackward): Promise<{ x: HostTensor; weights: HostTensor }> {
    const key = `${mb ?? 0}:${layer}`;
    const s = this.saved.get(key);
    if (!s) throw new Error(`${this.label}: no training forward of layer ${layer} (microbatch ${mb ?? 0}) to run backward through`);
    this.saved.delete(key);
    try {
      const g = fromHost(grad, this.device);
      backward(s.y, { grad: g });
      g.dispose();
      return { x: await toHost(s.x.grad!), weights: await toHost(s.weights.grad!) };
    } finally {
      for (const t of [s.x, s.weights, s.y]) t.dispose();
    }
  }

  dispose(): void {
    for (const s of this.saved.values()) for (const t of [s.x, s.weights, s.y]) t.dispose();
    this.saved.clear();
    for (const s of this.layers.values()) for (const t of [s.up, s.down]) t.dispose();
    this.layers.clear();
  }
}
