/**
 * A worker's AdamW state as it crosses the worker boundary: by full-model parameter name, so the
 * host can write it in the one-device trainer's checkpoint format (`<name>.expAvg`,
 * `<name>.expAvgSq`, a step count per parameter) and hand a checkpoint's state back to whichever
 * worker owns each parameter.
 */
import { dispose, formatShape, shapesEqual, type AdamW, type AdamWOptions, type Device, type OptimizerStateDict, type Tensor } from '@nemotron-ts/kernels';
import { fromHost, HostTensor, toHost } from './host-tensor';

/** One parameter's AdamW state. */
export interface AdamParamState {
  /** Updates applied to the parameter. */
  readonly step: number;
  readonly expAvg: HostTensor;
  readonly expAvgSq: HostTensor;
}

/** AdamW state by parameter name (parameters not yet stepped are absent). */
export interface NamedOptimizerState {
  /** Calls to `step()` so far. */
  readonly stepCount: number;
  readonly params: Readonly<Record<string, AdamParamState>>;
}

/** The state of `optimizer`, whose parameters are named by `named`. */
export async function exportOptimizerState(optimizer: AdamW, named: readonly (readonly [string, Tensor])[]): Promise<NamedOptimizerState> {
  const params: Record<string, AdamParamState> = {};
  for (const [name, p] of named) {
    const s = optimizer.stateOf(p);
    if (!s) continue;
    const { expAvg, expAvgSq } = s.buffers as { expAvg: Tensor; expAvgSq: Tensor };
    params[name] = { step: s.step, expAvg: await toHost(expAvg), expAvgSq: await toHost(expAvgSq) };
  }
  return { stepCount: optimizer.stepCount, params };
}

/**
 * Replaces the state of `optimizer` (its hyperparameters stay) with `state`, whose every name must
 * be one of the optimizer's parameters (`owner` names this worker in errors). Returns the number
 * of parameters given a state.
 */
export function importOptimizerState(
  optimizer: AdamW,
  named: readonly (readonly [string, Tensor])[],
  state: NamedOptimizerState,
  device: Device,
  owner: string,
): number {
  const byParam = new Map(named.map(([name, p]) => [p, name] as const));
  const mine = new Set(named.map(([name]) => name));
  const stray = Object.keys(state.params).find((name) => !mine.has(name));
  if (stray !== undefined) throw new Error(`${owner}: optimizer state for '${stray}', which this worker does not train`);
  const created: Tensor[] = [];
  try {
    const params = optimizer.params.map((p) => {
      const name = byParam.get(p);
      const s = name === undefined ? undefined : state.params[name];
      if (!s) return null;
      const buffers: Record<string, Tensor> = {};
      for (const [key, host] of [
        ['expAvg', s.expAvg],
        ['expAvgSq', s.expAvgSq],
      ] as const) {
        if (!shapesEqual(host.shape, p.shape))
          throw new Error(`${owner}: optimizer state '${name}.${key}' is ${formatShape(host.shape)}, the parameter ${formatShape(p.shape)}`);
        const t = fromHost(HostTensor.fromF32(host.toFloat32(), host.shape), device);
        created.push(t);
        buffers[key] = t;
      }
      return { step: s.step, buffers };
    });
    const dict: OptimizerStateDict<AdamWOptions> = {
      stepCount: state.stepCount,
      groups: optimizer.groups.map(({ params: _params, ...hyper }) => hyper),
      params,
    };
    optimizer.loadStateDict(dict);
    return params.filter((s) => s !== null).length;
  } finally {
    dispose(created);
  }
}
