/**
 * The host's all-to-all for one MoE layer's routed experts: each token row goes to the shards
 * owning one of its top-k experts (slots owned elsewhere carry weight 0, so nothing is dropped and
 * there is no capacity limit), the shards' partial sums come back and are added in shard order.
 * The backward sends each shard the output gradient of its rows and combines the gradients of the
 * routed input rows and routing weights.
 */
import { HostTensor } from './host-tensor';

/** Calls a method on the worker holding shard `shard` (its rank is the caller's business). */
export type ShardCall = <T>(shard: number, method: string, args: unknown, step: string) => Promise<T>;

/** Which rows went to which shard: kept from a training forward for its backward. */
export interface ExpertRoute {
  readonly indices: Int32Array;
  readonly k: number;
  /** Token rows per shard, ascending. */
  readonly rows: readonly (readonly number[])[];
}

/** Rows to the shards owning their experts, partial sums back, combined in shard order: f32 [T, Hx]. */
export async function dispatchExperts(
  call: ShardCall,
  shards: number,
  expertsPerShard: number,
  request: { mb?: number; layer: number; indices: Int32Array; weights: Float32Array; x: HostTensor; train: boolean },
): Promise<{ out: Float32Array; route: ExpertRoute }> {
  const { layer, indices, weights, x, train } = request;
  const [T, Hx] = x.shape as [number, number];
  const k = indices.length / T;
  const xs = x.toFloat32();
  const per = expertsPerShard;
  const rows = Array.from({ length: shards }, (_, r) => {
    const mine: number[] = [];
    for (let t = 0; t < T; t++) {
      for (let j = 0; j < k; j++) {
        if (Math.floor(indices[t * k + j]! / per) === r) {
          mine.push(t);
          break;
        }
      }
    }
    return mine;
  });
  const replies = await Promise.all(
    rows.map((mine, r) => {
      if (mine.length === 0) return Promise.resolve(null);
      const n = mine.length;
      const xr = new Float32Array(n * Hx);
      const ir = new Int32Array(n * k);
      const wr = new Float32Array(n * k);
      mine.forEach((t, m) => {
        xr.set(xs.subarray(t * Hx, (t + 1) * Hx), m * Hx);
        for (let j = 0; j < k; j++) {
          const e = indices[t * k + j]!;
          // Slots routed to another shard point at a local expert with weight 0: they add nothing.
          const owned = Math.floor(e / per) === r;
          ir[m * k + j] = owned ? e - r * per : 0;
          wr[m * k + j] = owned ? weights[t * k + j]! : 0;
        }
      });
      return call<HostTensor>(
        r,
        'experts',
        { mb: request.mb, layer, train, x: HostTensor.fromF32(xr, [n, Hx]), indices: HostTensor.fromI32(ir, [n, k]), weights: HostTensor.fromF32(wr, [n, k]) },
        `experts of layer ${layer}`,
      );
    }),
  );
  const out = new Float32Array(T * Hx);
  replies.forEach((reply, r) => {
    if (!reply) return;
    const y = reply.toFloat32();
    rows[r]!.forEach((t, m) => {
      for (let c = 0; c < Hx; c++) out[t * Hx + c]! += y[m * Hx + c]!;
    });
  });
  return { out, route: { indices, k, rows } };
}

/** The shards' backward of one MoE layer: d/d(routed input rows) [T, Hx] and d/d(routing weights) [T, k], combined. */
export async function expertsBackward(
  call: ShardCall,
  expertsPerShard: number,
  request: { mb?: number; layer: number; grad: HostTensor; route: ExpertRoute },
): Promise<{ x: Float32Array; weights: Float32Array }> {
  const { layer, grad, route } = request;
  const { indices, k, rows } = route;
  const gs = grad.toFloat32();
  const [T, Hx] = grad.shape as [number, number];
  const per = expertsPerShard;
  const replies = await Promise.all(
    rows.map((mine, r) => {
      if (mine.length === 0) return Promise.resolve(null);
      const gr = new Float32Array(mine.length * Hx);
      mine.forEach((t, m) => gr.set(gs.subarray(t * Hx, (t + 1) * Hx), m * Hx));
      return call<{ x: HostTensor; weights: HostTensor }>(
        r,
        'expertsBackward',
        { mb: request.mb, layer, grad: HostTensor.fromF32(gr, [mine.length, Hx]) },
        `experts backward of layer ${layer}`,
      );
    }),
  );
  const gx = new Float32Array(T * Hx);
  const gw = new Float32Array(T * k);
  replies.forEach((reply, r) => {
    if (!reply) return;
    const x = reply.x.toFloat32();
    const w = reply.weights.toFloat32();
    rows[r]!.forEach((t, m) => {
      for (let c = 0; c < Hx; c++) gx[t * Hx + c]! += x[m * Hx + c]!;
      // A slot's weight gradient comes from the shard that owns its expert only.
      for (let j = 0; j < k; j++) if (Math.floor(indices[t * k + j]! / per) === r) gw[t * k + j] = w[m * k + j]!;
    });
  });
  return { x: gx, weights: gw };
}

/** Experts [start, start + count) of a stacked [E, ...] tensor. */
export function sliceExperts(t: HostTensor, start: number, count: number): HostTensor {
  const per = t.data.length / t.shape[0]!;
  return new HostTensor(t.dtype, [count, ...t.shape.slice(1)], t.data.slice(start * per, (start + count) * per));
}

/** Shards of one stacked tensor back into [E, ...], in shard order (f32). */
export function concatExperts(shards: readonly HostTensor[]): HostTensor {
  const data = new Float32Array(shards.reduce((n, t) => n + t.data.length, 0));
  let at = 0;
  for (const t of shards) {
    data.set(t.toFloat32(), at);
    at += t.data.length;
  }
  return HostTensor.fromF32(data, [shards.reduce((n, t) => n + t.shape[0]!, 0), ...shards[0]!.shape.slice(1)]);
}
