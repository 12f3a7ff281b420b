/**
 * Pipeline parallelism on the host: the model's stages in workers (one device each), driven by
 * microbatch schedules. Forward (logits, loss), training (GPipe or 1F1B: loss on the last stage,
 * gradients flowing back stage by stage, accumulated over microbatches), and generation (prefill
 * and decode pipelined over microbatches, each stage holding its layers' share of the cache).
 * Activations travel worker → host → worker as transferred buffers.
 */
import type { NemotronHForCausalLM } from '@nemotron-ts/core';
import { checkBatch, concatRows, rowsTensor, sliceBatch, targetCount, type ParallelBatch } from './batch';
import type { TrainOptimizerOptions } from './gradient-ops';
import { HostTensor } from './host-tensor';
import { scheduleOps, splitRows, type ScheduleName } from './schedules';
import type { AdamParamState, NamedOptimizerState } from './optimizer-state';
import { planStages, stageOwns, type SplitOptions, type StagePlan } from './stage-plan';
import type { ForwardReply } from './stage-service';
import { startWorkers, type StageWorkerOptions, type WorkerRole } from './stage-workers';
import { GradientAllReduce } from './all-reduce';
import { concatExperts, dispatchExperts, expertsBackward, sliceExperts, type ExpertRoute, type ShardCall } from './expert-dispatch';
import { isRoutedExpert } from './expert-shards';
import type { ExchangeStep, ExpertAnswer, ExpertQuestion } from './expert-cut';
import type { WorkerGroup } from './worker-group';

export interface PipelineOptions extends SplitOptions, StageWorkerOptions {
  /** Data-parallel replicas of the whole pipeline (default 1); their gradients are all-reduced. */
  readonly replicas?: number;
  /** Expert-parallel size inside each stage (default 1): the stage's routed experts sharded over this many workers, the stage worker holding shard 0. */
  readonly expertParallel?: number;
  /** Gradient bytes per all-reduce bucket (default 25 MiB, DDP's default). */
  readonly bucketBytes?: number;
}

/** How the workers are laid out: rank = (replica · stages + stage) · expertParallel + shard. */
export interface PipelineLayout {
  readonly stages: number;
  readonly replicas: number;
  readonly expertParallel: number;
  /** Routed experts per shard (n_routed_experts / expertParallel). */
  readonly expertsPerShard: number;
}

export interface PipelineRunOptions {
  /** Microbatches each replica's rows are cut into (default: as many as stages, at most one per row). */
  readonly microbatches?: number;
  /** Training schedule (default 1f1b). */
  readonly schedule?: ScheduleName;
}

export interface PipelineForwardResult {
  /** f32 [B, L, V]. */
  readonly logits: HostTensor;
  /** The batch loss (HF mean; with mtpLabels NeMo's main + MTP loss), or null without labels. */
  readonly loss: number | null;
}

export interface PipelineGenerateOptions {
  readonly inputIds: readonly (readonly number[])[];
  readonly attentionMask?: readonly (readonly number[])[];
  readonly maxNewTokens: number;
  /** Rows stop at these ids (default none); finished rows produce `padTokenId` until all are done. */
  readonly eosTokenIds?: readonly number[];
  readonly padTokenId?: number;
  readonly microbatches?: number;
}

export interface PipelineGenerateResult {
  /** Generated ids per row (greedy). */
  readonly tokens: number[][];
}

/** Bytes of tensors the host sent to and received from the workers. */
export interface TransferStats {
  readonly bytesSent: number;
  readonly bytesReceived: number;
}

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(v: T): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

export class PipelineParallel {
  private nextMb = 0;
  /** Training forwards' expert routes, kept for their backward (by replica, stage, microbatch, layer). */
  private readonly routes = new Map<string, ExpertRoute>();
  /** With expert parallelism: each stage worker's last exchange (the next one starts after it). */
  private readonly turns = new Map<number, Promise<void>>();
  private readonly allReduce: GradientAllReduce;

  private constructor(
    readonly model: NemotronHForCausalLM,
    readonly plans: readonly StagePlan[],
    readonly group: WorkerGroup,
    readonly layout: PipelineLayout,
    bucketBytes: number,
  ) {
    // One all-reduce set per worker role (stage s, shard e): that worker in every replica.
    const perReplica = layout.stages * layout.expertParallel;
    this.allReduce = new GradientAllReduce(
      group,
      Array.from({ length: perReplica }, (_, role) => Array.from({ length: layout.replicas }, (_, r) => r * perReplica + role)),
      bucketBytes,
    );
  }

  /**
   * Splits `model` (NeMo's splitter) and starts a worker per stage with that stage's weights —
   * per replica, and with expert parallelism `expertParallel` workers per stage, each with its
   * shard of the stage's routed experts.
   */
  static async fromModel(model: NemotronHForCausalLM, options: PipelineOptions): Promise<PipelineParallel> {
    const plans = planStages(model.config.numHiddenLayers, options, model.mtp !== null);
    const replicas = options.replicas ?? 1;
    const ep = options.expertParallel ?? 1;
    if (!Number.isInteger(replicas) || replicas < 1) throw new Error(`replicas must be a positive integer, got ${replicas}`);
    if (!Number.isInteger(ep) || ep < 1) throw new Error(`expertParallel must be a positive integer, got ${ep}`);
    const kinds = model.config.layerKinds;
    const E = model.config.nRoutedExperts;
    if (ep > 1) {
      if (!kinds.includes('moe')) throw new Error(`expertParallel: the model has no MoE layer (pattern ${model.config.pattern})`);
      if (E % ep !== 0) throw new Error(`expertParallel: n_routed_experts (${E}) must be divisible by the expert-parallel size (${ep})`);
    }
    const layout: PipelineLayout = { stages: plans.length, replicas, expertParallel: ep, expertsPerShard: ep > 1 ? E / ep : E };
    const S = plans.length;
    const roles: WorkerRole[] = [];
    const names: string[] = [];
    for (let r = 0; r < replicas; r++)
      for (const plan of plans)
        for (let e = 0; e < ep; e++) {
          const layers = plan.layers.filter((i) => kinds[i] === 'moe');
          roles.push({ plan: e === 0 ? plan : null, experts: ep > 1 ? { layers, shard: e, shards: ep } : null });
          const stage = S > 1 ? `pipeline stage ${plan.index} (layers ${plan.layers[0]}–${plan.layers.at(-1)})` : null;
          const replica = replicas > 1 ? `data-parallel replica ${r}` : null;
          const where = [stage, replica].filter((x) => x !== null).join(' of ') || 'the model';
          const per = layout.expertsPerShard;
          names.push(e === 0 ? where : `expert shard ${e} (experts ${e * per}–${(e + 1) * per - 1}) of ${where}`);
        }
    const group = await startWorkers(model, roles, options, (rank) => names[rank]!);
    return new PipelineParallel(model, plans, group, layout, options.bucketBytes ?? 25 * 2 ** 20);
  }

  /** The worker of replica `replica`, stage `stage`, expert shard `shard` (0: the stage itself). */
  rank(replica: number, stage: number, shard = 0): number {
    return (replica * this.layout.stages + stage) * this.layout.expertParallel + shard;
  }

  /** Replica 0's workers (after the all-reduce every replica holds the same gradients and weights). */
  private firstReplica(): number[] {
    return Array.from({ length: this.layout.stages * this.layout.expertParallel }, (_, i) => i);
  }

  /**
   * A call to a stage worker. With expert parallelism the stage answers with questions for its
   * expert group until it is done: the host dispatches each MoE layer's rows to the stage's shards
   * (or their gradients back) and resumes the stage with the combined answer.
   */
  private stageCall<T>(
    replica: number,
    stage: number,
    method: string,
    args: { readonly mb: number; readonly [key: string]: unknown },
    step: string,
    train: boolean,
  ): Promise<T> {
    if (this.layout.expertParallel === 1) return this.group.call<T>(this.rank(replica, stage), method, args, { step });
    // A stage runs one such exchange at a time (generation interleaves microbatches): later calls wait their turn.
    const rank = this.rank(replica, stage);
    const turn = (this.turns.get(rank) ?? Promise.resolve()).then(() => this.exchange<T>(replica, stage, method, args, step, train));
    this.turns.set(
      rank,
      turn.then(
        () => undefined,
        () => undefined,
      ),
    );
    return turn;
  }

  private async exchange<T>(
    replica: number,
    stage: number,
    method: string,
    args: { readonly mb: number; readonly [key: string]: unknown },
    step: string,
    train: boolean,
  ): Promise<T> {
    const rank = this.rank(replica, stage);
    let next = await this.group.call<ExchangeStep<T>>(rank, method, args, { step });
    const mb = args.mb;
    const call: ShardCall = (shard, m, a, s) => this.group.call(this.rank(replica, stage, shard), m, a, { step: `${s} (${step})` });
    while ('ask' in next) {
      const q = next.ask;
      let answer: ExpertAnswer;
      try {
        answer = await this.answer(q, call, replica, stage, mb, step, train);
      } catch (e) {
        // The stage waits for an answer that will not come: let its run fail and free its tensors.
        const reason = `${step}: ${e instanceof Error ? e.message : String(e)}`;
        if (!this.group.failed) await this.group.call(rank, 'abandon', { reason }, { step: `${step} (abandoning)` }).catch(() => undefined);
        throw e;
      }
      next = await this.group.call<ExchangeStep<T>>(rank, 'resume', answer, { step: `${step}, layer ${q.layer}` });
    }
    return next.done;
  }

  /** The host's answer to a stage's question: its expert group's output or backward for one MoE layer. */
  private async answer(q: ExpertQuestion, call: ShardCall, replica: number, stage: number, mb: number, step: string, train: boolean): Promise<ExpertAnswer> {
    const key = `${replica}:${stage}:${mb}:${q.layer}`;
    if (q.kind === 'experts') {
      const indices = q.indices.data as Int32Array;
      const { out, route } = await dispatchExperts(call, this.layout.expertParallel, this.layout.expertsPerShard, {
        mb,
        layer: q.layer,
        indices,
        weights: q.weights.toFloat32(),
        x: q.x,
        train,
      });
      if (train) this.routes.set(key, route);
      return { out: HostTensor.fromF32(out, q.x.shape) };
    } else {
      const route = this.routes.get(key);
      if (!route) throw new Error(`${step}: no expert route of layer ${q.layer} kept from the forward`);
      this.routes.delete(key);
      const grads = await expertsBackward(call, this.layout.expertsPerShard, { mb, layer: q.layer, grad: q.grad, route });
      return { x: HostTensor.fromF32(grads.x, q.grad.shape), weights: HostTensor.fromF32(grads.weights, [q.grad.shape[0]!, route.k]) };
    }
  }

  get stages(): number {
    return this.plans.length;
  }

  get transferStats(): TransferStats {
    return { bytesSent: this.group.bytesSent, bytesReceived: this.group.bytesReceived };
  }

  /** Logits (and the loss with labels) of a batch, with no graph kept. */
  async forward(batch: ParallelBatch, options: PipelineRunOptions = {}): Promise<PipelineForwardResult> {
    const replies = await this.run(batch, false, options);
    return { logits: concatRows(replies.map((r) => r.logits!)), loss: sumLoss(replies) };
  }

  /** The batch loss only, with no graph kept: the logits (most of the bytes a forward moves) stay on the last stage. */
  async loss(batch: ParallelBatch, options: PipelineRunOptions = {}): Promise<number> {
    if (!batch.labels && !batch.mtpLabels) throw new Error('loss: the batch has no labels');
    return sumLoss(await this.run(batch, false, options, false))!;
  }

  /**
   * Forward and backward of a batch through the schedule: gradients accumulate on every stage
   * (call {@link zeroGrad} between steps). Returns the batch loss.
   */
  async forwardBackward(batch: ParallelBatch, options: PipelineRunOptions = {}): Promise<number> {
    if (!batch.labels && !batch.mtpLabels) throw new Error('forwardBackward: the batch has no labels');
    const replies = await this.run(batch, true, options);
    return sumLoss(replies)!;
  }

  /** Each replica runs its share of the rows through its pipeline; the replies come back in row order. */
  private async run(batch: ParallelBatch, train: boolean, options: PipelineRunOptions, returnLogits = !train): Promise<ForwardReply[]> {
    const [rows] = checkBatch(this.model.config, batch);
    const shares = splitRows(rows, Math.min(this.layout.replicas, rows));
    // Microbatch losses are sums over the whole batch's target count, so they add up to the batch mean.
    const lossScale = 1 / Math.max(targetCount(batch), 1);
    const replies = await Promise.all(shares.map(([start, n], r) => this.runReplica(r, sliceBatch(batch, start, n), train, options, returnLogits, lossScale)));
    return replies.flat();
  }

  private async runReplica(
    replica: number,
    batch: ParallelBatch,
    train: boolean,
    options: PipelineRunOptions,
    returnLogits: boolean,
    lossScale: number,
  ): Promise<ForwardReply[]> {
    const rows = batch.inputIds.length;
    const S = this.stages;
    // Microbatches are per replica; a replica's share can be a row short of another's, so there they stop at one per row.
    const asked = options.microbatches ?? S;
    const parts = splitRows(rows, options.microbatches === undefined || this.layout.replicas > 1 ? Math.min(asked, rows) : asked);
    const M = parts.length;
    const base = this.nextMb;
    this.nextMb += M;
    const mbs = parts.map(([start, n]) => sliceBatch(batch, start, n));
    const fwd = Array.from({ length: S }, () => Array.from({ length: M }, () => deferred<ForwardReply>()));
    const bwd = Array.from({ length: S }, () => Array.from({ length: M }, () => deferred<HostTensor[]>()));
    const schedule = options.schedule ?? '1f1b';
    const stageLoop = async (s: number) => {
      const plan = this.plans[s]!;
      const ops = train ? scheduleOps(schedule, S, M, s) : Array.from({ length: M }, (_, mb) => ({ kind: 'F' as const, mb }));
      for (const op of ops) {
        const mb = mbs[op.mb]!;
        const id = base + op.mb;
        if (op.kind === 'F') {
          const prev = s > 0 ? await fwd[s - 1]![op.mb]!.promise : null;
          const reply = await this.stageCall<ForwardReply>(
            replica,
            s,
            'forward',
            {
              mb: id,
              train,
              ids: plan.isFirst ? rowsTensor(mb.inputIds) : undefined,
              hidden: prev?.outputs?.[0],
              embeds: prev?.outputs?.slice(1),
              attentionMask: mb.attentionMask ?? null,
              cuSeqlens: mb.cuSeqlens ? [...mb.cuSeqlens] : null,
              ...(plan.isLast
                ? {
                    labels: mb.labels ? rowsTensor(mb.labels) : null,
                    mtpLabels: mb.mtpLabels ?? null,
                    mtpIds: mb.mtpLabels ? rowsTensor(mb.inputIds) : null,
                    lossScale,
                    returnLogits,
                  }
                : {}),
            },
            `${train ? 'training ' : ''}forward of microbatch ${op.mb}`,
            train,
          );
          fwd[s]![op.mb]!.resolve(reply);
        } else {
          const grads = s < S - 1 ? await bwd[s + 1]![op.mb]!.promise : undefined;
          const reply = await this.stageCall<{ grads: HostTensor[] }>(replica, s, 'backward', { mb: id, grads }, `backward of microbatch ${op.mb}`, true);
          bwd[s]![op.mb]!.resolve(reply.grads);
        }
      }
    };
    await Promise.all(Array.from({ length: S }, (_, s) => stageLoop(s)));
    return Promise.all(fwd[S - 1]!.map((d) => d.promise));
  }

  /** Every stage's accumulated gradients (replica 0's), by full-model name; expert shards stacked like the model's. */
  gradients(): Promise<Map<string, HostTensor>> {
    return this.gather('gradients');
  }

  /** Every stage's weights (replica 0's), by full-model name; expert shards stacked like the model's. */
  weights(): Promise<Map<string, HostTensor>> {
    return this.gather('weights');
  }

  /** The parameters training updates (all, or only LoRA adapters; replica 0's), by full-model name. */
  trainedWeights(): Promise<Map<string, HostTensor>> {
    return this.gather('weights', { trained: true });
  }

  /** The f32 masters of the workers' bf16 trained parameters (none for f32 weights; replica 0's), by full-model name. */
  masterWeights(): Promise<Map<string, HostTensor>> {
    return this.gather('masterWeights');
  }

  /** Replica 0's workers' answers to `method`, by full-model name: a name held by several workers is a routed experts' stack, sharded in shard order. */
  private async gather(method: 'gradients' | 'weights' | 'masterWeights', args: unknown = null): Promise<Map<string, HostTensor>> {
    const parts = await Promise.all(
      this.firstReplica().map((rank) => this.group.call<Record<string, HostTensor>>(rank, method, args, { step: `reading ${method}` })),
    );
    const byName = new Map<string, HostTensor[]>();
    for (const part of parts) for (const [name, t] of Object.entries(part)) byName.set(name, [...(byName.get(name) ?? []), t]);
    return new Map([...byName].map(([name, shards]) => [name, shards.length === 1 ? shards[0]! : concatExperts(shards)]));
  }

  /** Tensors replaced in every worker that holds them (e.g. a resumed run's LoRA adapters). */
  async setWeights(tensors: ReadonlyMap<string, HostTensor>): Promise<void> {
    await this.group.callAll('load', (rank) => ({ tensors: this.partOf(rank, tensors, 'setWeights') }), { step: 'loading weights' });
  }

  /** A resumed run's f32 masters, each to the workers that hold its parameter. */
  async loadMasterWeights(tensors: ReadonlyMap<string, HostTensor>): Promise<void> {
    await this.group.callAll('loadMasterWeights', (rank) => ({ tensors: this.partOf(rank, tensors, 'loadMasterWeights') }), {
      step: 'loading the master weights',
    });
  }

  /** Every stage's AdamW state (replica 0's), by full-model parameter name; expert shards' moments stacked like the model's. */
  async optimizerState(): Promise<NamedOptimizerState> {
    const parts = await Promise.all(
      this.firstReplica().map((rank) => this.group.call<NamedOptimizerState>(rank, 'optimizerState', null, { step: 'reading the optimizer state' })),
    );
    const byName = new Map<string, AdamParamState[]>();
    for (const part of parts) for (const [name, st] of Object.entries(part.params)) byName.set(name, [...(byName.get(name) ?? []), st]);
    const params: Record<string, AdamParamState> = {};
    for (const [name, shards] of byName) {
      if (shards.length === 1) params[name] = shards[0]!;
      else {
        if (shards.some((st) => st.step !== shards[0]!.step)) throw new Error(`optimizerState: the expert shards of '${name}' disagree on the step`);
        params[name] = {
          step: shards[0]!.step,
          expAvg: concatExperts(shards.map((st) => st.expAvg)),
          expAvgSq: concatExperts(shards.map((st) => st.expAvgSq)),
        };
      }
    }
    return { stepCount: parts[0]!.stepCount, params };
  }

  /** Each worker's AdamW state replaced by its parameters' part of `state` (a resumed run's). */
  async loadOptimizerState(state: NamedOptimizerState): Promise<void> {
    const names = Object.keys(state.params);
    const parts = (rank: number) => {
      const expAvg = this.partOf(rank, new Map(names.map((n) => [n, state.params[n]!.expAvg])), 'loadOptimizerState');
      const expAvgSq = this.partOf(rank, new Map(names.map((n) => [n, state.params[n]!.expAvgSq])), 'loadOptimizerState');
      return {
        stepCount: state.stepCount,
        params: Object.fromEntries(Object.keys(expAvg).map((n) => [n, { step: state.params[n]!.step, expAvg: expAvg[n]!, expAvgSq: expAvgSq[n]! }])),
      };
    };
    await this.group.callAll('loadOptimizerState', parts, { step: 'loading the optimizer state' });
  }

  /**
   * The part of full-model `tensors` worker `rank` holds: its stage's tensors (the stage worker),
   * or with expert parallelism its rows of the stage's routed experts. Each part is a copy
   * (sending moves a buffer).
   */
  private partOf(rank: number, tensors: ReadonlyMap<string, HostTensor>, what: string): Record<string, HostTensor> {
    const { expertParallel: ep, expertsPerShard: per, stages } = this.layout;
    const shard = rank % ep;
    const plan = this.plans[Math.floor(rank / ep) % stages]!;
    const out: Record<string, HostTensor> = {};
    for (const [name, t] of tensors) {
      if (!this.plans.some((p) => stageOwns(p, name))) throw new Error(`${what}: no stage owns '${name}'`);
      if (!stageOwns(plan, name)) continue;
      if (ep > 1 && isRoutedExpert(name)) out[name] = sliceExperts(t, shard * per, per);
      else if (shard === 0) out[name] = t.clone();
    }
    return out;
  }

  /** LoRA dropout masks of training step `step` (the one-device trainer's reseeding). */
  async reseedDropout(step: number): Promise<void> {
    await this.group.callAll('reseedDropout', () => ({ step }));
  }

  async zeroGrad(): Promise<void> {
    this.routes.clear();
    await this.group.callAll('zeroGrad');
  }

  /** An AdamW per worker over its parameters (the same update as one AdamW over the model). */
  async setOptimizer(options: TrainOptimizerOptions): Promise<void> {
    await this.group.callAll('optimizer', () => options);
  }

  /** Sums the replicas' gradients (bucketed, per stage and expert shard); nothing to do with one replica. */
  async allReduceGradients(): Promise<void> {
    await this.allReduce.run();
  }

  /** The global gradient norm over every stage's parameters (replica 0's: after {@link allReduceGradients} every replica holds the sum). */
  async gradientNorm(): Promise<number> {
    const parts = await Promise.all(this.firstReplica().map((rank) => this.group.call<number>(rank, 'gradientSumOfSquares', null, { step: 'gradient norm' })));
    return Math.sqrt(parts.reduce((a, b) => a + b, 0));
  }

  /** Every worker's gradients times `factor` (clipping, accumulation's mean). */
  async scaleGradients(factor: number): Promise<void> {
    await this.group.callAll('scaleGradients', () => ({ factor }), { step: 'gradient scaling' });
  }

  async step(lrScale = 1): Promise<void> {
    await this.group.callAll('step', () => ({ lrScale }), { step: 'optimizer step' });
  }

  /** One training step: zero the gradients, forward and backward through the schedule, all-reduce across replicas, update. */
  async trainStep(batch: ParallelBatch, options: PipelineRunOptions = {}): Promise<number> {
    await this.zeroGrad();
    const loss = await this.forwardBackward(batch, options);
    await this.allReduceGradients();
    await this.step();
    return loss;
  }

  /**
   * Greedy generation, pipelined: the rows are cut into microbatches, each prefilled and decoded
   * through the stages in turn, so stage s works on one microbatch while stage s + 1 works on the
   * previous. Each stage caches only its own layers.
   */
  async generate(options: PipelineGenerateOptions): Promise<PipelineGenerateResult> {
    const batch: ParallelBatch = { inputIds: options.inputIds, attentionMask: options.attentionMask };
    const [rows, length] = checkBatch(this.model.config, batch);
    const maxNew = options.maxNewTokens;
    if (!Number.isInteger(maxNew) || maxNew < 1) throw new Error(`generate: maxNewTokens must be a positive integer, got ${maxNew}`);
    const eos = new Set(options.eosTokenIds ?? []);
    const pad = options.padTokenId ?? 0;
    const parts = splitRows(rows, options.microbatches ?? Math.min(this.stages, rows));
    const S = this.stages;
    // Microbatches go round the replicas (each a whole pipeline).
    const runMicrobatch = async ([start, n]: [number, number], index: number): Promise<number[][]> => {
      const replica = index % this.layout.replicas;
      const mb = sliceBatch(batch, start, n);
      const id = this.nextMb++;
      const out: number[][] = Array.from({ length: n }, () => []);
      const finished = new Array<boolean>(n).fill(false);
      try {
        const through = async (method: 'prefill' | 'decode', first: Record<string, unknown>, step: string): Promise<number[]> => {
          let hidden: HostTensor | undefined;
          for (let s = 0; s < S; s++) {
            const args =
              s === 0
                ? { mb: id, ...first }
                : { mb: id, hidden, attentionMask: method === 'prefill' ? (mb.attentionMask ?? null) : undefined, capacity: length + maxNew };
            const reply = await this.stageCall<{ hidden?: HostTensor; tokens?: number[] }>(replica, s, method, args, `${step} of microbatch ${index}`, false);
            if (s === S - 1) return reply.tokens!;
            hidden = reply.hidden;
          }
          throw new Error('unreachable');
        };
        let tokens = await through('prefill', { ids: rowsTensor(mb.inputIds), attentionMask: mb.attentionMask ?? null, capacity: length + maxNew }, 'prefill');
        for (let step = 0; ; step++) {
          tokens = tokens.map((t, b) => (finished[b] ? pad : t));
          tokens.forEach((t, b) => {
            out[b]!.push(t);
            if (eos.has(t)) finished[b] = true;
          });
          if (step + 1 >= maxNew || finished.every(Boolean)) break;
          tokens = await through('decode', { ids: tokens }, `decode step ${step + 1}`);
        }
      } finally {
        if (!this.group.failed) await Promise.all(Array.from({ length: S }, (_, s) => this.group.call(this.rank(replica, s), 'release', { mb: id })));
      }
      return out;
    };
    const results = await Promise.all(parts.map(runMicrobatch));
    const tokens = results.flat();
    // Rows of a microbatch that finished early are padded to the batch's length.
    const longest = Math.max(...tokens.map((r) => r.length));
    for (const row of tokens) while (row.length < longest) row.push(pad);
    return { tokens };
  }

  /** Terminates every worker. */
  /** The end of a run: workers free their tensors, then are terminated one after another. */
  shutdown(): Promise<void> {
    return this.group.shutdown();
  }

  /** Terminates every worker now. */
  close(): void {
    this.group.close();
  }
}

function sumLoss(replies: readonly ForwardReply[]): number | null {
  if (replies.some((r) => r.loss === null || r.loss === undefined)) return null;
  return replies.reduce((s, r) => s + r.loss!, 0);
}
