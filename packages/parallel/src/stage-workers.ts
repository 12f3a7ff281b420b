/** Starting stage workers and moving a model's weights into them. */
import type { FloatDType } from '@nemotron-ts/kernels';
import { loraHandle, type NemotronHForCausalLM } from '@nemotron-ts/core';
import { toHost, type HostTensor } from './host-tensor';
import type { StagePlan } from './stage-plan';
import { stageOwns } from './stage-plan';
import type { StageServiceOptions } from './stage-service';
import { WorkerGroup } from './worker-group';

export interface StageWorkerOptions {
  /** Per-worker device specs (device-spec.ts); default: `cpu` for a model on the CPU backend, else `webgpu`. */
  readonly devices?: readonly string[];
  /** A worker silent this long is declared hung (default 60 s). */
  readonly heartbeatTimeoutMs?: number;
  /** Largest message of weights (default 64 MiB). */
  readonly chunkBytes?: number;
}

/** Starts one stage worker per plan and copies each stage's tensors from `model` into it. */
export async function startStageWorkers(
  model: NemotronHForCausalLM,
  plans: readonly StagePlan[],
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
    size: plans.length,
    service: 'stage',
    devices: options.devices && options.devices.length > 0 ? options.devices : [fallback],
    heartbeatTimeoutMs: options.heartbeatTimeoutMs,
    describe,
    options: (rank): StageServiceOptions => ({ config: model.config.toJSON() as Record<string, unknown>, plan: plans[rank]!, dtype, lora }),
  });
  try {
    const limit = options.chunkBytes ?? 64 * 2 ** 20;
    await Promise.all(
      plans.map(async (plan, rank) => {
        let chunk: Record<string, HostTensor> = {};
        let bytes = 0;
        const flush = async () => {
          if (bytes === 0 && Object.keys(chunk).length === 0) return;
          await group.call(rank, 'load', { tensors: chunk }, { step: 'loading weights' });
          chunk = {};
          bytes = 0;
        };
        for (const t of model.namedTensors()) {
          if (!stageOwns(plan, t.name)) continue;
          const host = await toHost(t.tensor);
          chunk[t.name] = host;
          bytes += host.byteLength;
          if (bytes >= limit) await flush();
        }
        await flush();
      }),
    );
  } catch (e) {
    group.close();
    throw e;
  }
  return group;
}
