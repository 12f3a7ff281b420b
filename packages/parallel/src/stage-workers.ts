/** Starting stage workers and moving a model's weights into them. */
import type { FloatDType } from '@nemotron-ts/kernels';
import { loraHandle, type NemotronHForCausalLM } from '@nemotron-ts/core';
import { toHost, type HostTensor } from './host-tensor';
import type { StagePlan } from './stage-plan';
import { stageOwns } from './stage-plan';
import type { StageServiceOptions } from './stage-service';
import { WorkerGroup } from './worker-group';
import { sliceExperts } from './expert-dispatch';
import { expertNames, isRoutedExpert } from './expert-shards';

export interface StageWorkerOptions {
  /** Per-worker device specs (device-spec.ts); default: `cpu` for a model on the CPU backend, else `webgpu`. */
  readonly devices?: readonly string[];
  /** A worker silent this long is declared hung (default 60 s). */
  readonly heartbeatTimeoutMs?: number;
  /** Largest message of weights (default 64 MiB). */
  readonly chunkBytes?: number;
}

/** What one worker of a layout holds. */
export interface WorkerRole {
  /** Its pipeline stage (the whole model for a one-stage split); null for a worker holding only experts. */
  readonly plan: StagePlan | null;
  /** With expert parallelism: the MoE layers whose routed experts it holds a shard of, and which shard. */
  readonly experts: { readonly layers: readonly number[]; readonly shard: number; readonly shards: number } | null;
}

/** Starts one stage worker per plan and copies each stage's tensors from `model` into it. */
export function startStageWorkers(
  model: NemotronHForCausalLM,
  plans: readonly StagePlan[],
  options: StageWorkerOptions,
  describe: (rank: number) => string,
): Promise<WorkerGroup> {
  return startWorkers(
    model,
    plans.map((plan) => ({ plan, experts: null })),
    options,
    describe,
  );
}

/** Starts a worker per role (the stage service) and copies its stage's tensors and its expert shard from `model` into it. */
export async function startWorkers(
  model: NemotronHForCausalLM,
  roles: readonly WorkerRole[],
  options: StageWorkerOptions,
  describe: (rank: number) => string,
): Promise<WorkerGroup> {
  const dtype = model.lmHead.weight.dtype as FloatDType;
  const fallback = model.lmHead.weight.device.kind === 'cpu' ? 'cpu' : 'webgpu';
  // The host's LoRA adapters are built again in the workers (same options), then their weights copied like the rest.
  const handle = loraHandle(model);
  const lora = handle?.config ?? null;
  if (handle && [...handle.adapters.values()].some((a) => a.merged))
    throw new Error('the LoRA adapters are merged into the weights; unmergeLora before spreading the model over workers');
  const group = await WorkerGroup.start({
    size: roles.length,
    service: 'stage',
    devices: options.devices && options.devices.length > 0 ? options.devices : [fallback],
    heartbeatTimeoutMs: options.heartbeatTimeoutMs,
    describe,
    options: (rank): StageServiceOptions => ({
      config: model.config.toJSON() as Record<string, unknown>,
      plan: roles[rank]!.plan,
      expertParallel: roles[rank]!.experts !== null,
      label: describe(rank),
      dtype,
      lora,
    }),
  });
  try {
    const limit = options.chunkBytes ?? 64 * 2 ** 20;
    await Promise.all(
      roles.map(async ({ plan, experts }, rank) => {
        let chunk: Record<string, HostTensor> = {};
        let bytes = 0;
        const flush = async () => {
          if (bytes === 0 && Object.keys(chunk).length === 0) return;
          await group.call(rank, 'load', { tensors: chunk }, { step: 'loading weights' });
          chunk = {};
          bytes = 0;
        };
        if (plan) {
          for (const t of model.namedTensors()) {
            // With expert parallelism the stage's routed experts come as its shard (below).
            if (!stageOwns(plan, t.name) || (experts && isRoutedExpert(t.name))) continue;
            const host = await toHost(t.tensor);
            chunk[t.name] = host;
            bytes += host.byteLength;
            if (bytes >= limit) await flush();
          }
          await flush();
        }
        for (const layer of experts?.layers ?? []) {
          const [up, down] = expertNames(layer).map((name) => model.getTensor(name));
          const E = up!.shape[0]!;
          const per = E / experts!.shards;
          const [upHost, downHost] = await Promise.all([toHost(up!), toHost(down!)]);
          await group.call(
            rank,
            'loadExperts',
            { layer, up: sliceExperts(upHost, experts!.shard * per, per), down: sliceExperts(downHost, experts!.shard * per, per) },
            { step: `loading experts of layer ${layer}` },
          );
        }
      }),
    );
  } catch (e) {
    group.close();
    throw e;
  }
  return group;
}
